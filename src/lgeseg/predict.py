"""Apply trained networks to new images: PNG slices or NIfTI volumes in, masks or label volumes out.

A study leaves its networks in run folders (``best.pt``, ``last.pt``, ``config.yaml``; :mod:`lgeseg.run`);
this module loads one or more of them (or an exported ``model.zip``, :func:`export_model`) and segments new
images exactly as the run segmented its test split: the same input layer (the normalisation statistics
stored in the network), the same zero padding at the bottom and right when the run used ``model.pad``
(:mod:`lgeseg.padding`), the same precision, inference batch and memory format, and the predictions cropped
back to the image. So a network applied to its own test images gives the test masks the run scored.

Several networks form an **ensemble**: the mean of their softmax probabilities, argmax per pixel, as
nnU-Net ensembles its folds (Isensee et al., Nat Methods 18:203, 2021). ``tta="flip"`` also averages over
the left-right reflection, the only reflection the networks were trained with
(:func:`lgeseg.train.augment_batch`). One network without TTA takes the argmax of its class scores, which is
the argmax of its softmax without the rounding of ``exp`` (and is what :func:`lgeseg.run.run` does).

Inputs (:func:`find_inputs`): a folder of PNG slices (or a dataset folder holding ``images/``), a NIfTI file,
or a folder or glob of NIfTI volumes. A volume's slices go through the steps of ``import-nifti``
(:mod:`lgeseg.nifti`): :func:`lgeseg.nifti.read_volume`, percentile scaling of the whole volume to 8 bits
(:func:`lgeseg.nifti.scale_intensities`), one slice at a time along ``axis`` in PNG orientation, read as
:func:`lgeseg.png.read_image` reads the PNG; the predicted slices are put back on the volume's voxel grid.
No resampling or cropping is done, so the label volume has the input's shape, affine and header.

Outputs (:func:`predict_path`): one mask PNG per input slice in the label map's pixel values, or one NIfTI
label volume per input volume (uint8, the same pixel values), and ``predictions.csv``: per output file, the
networks used and per class the pixel count, and the volume in ml where the voxel size is known (NIfTI).

Every bad input is a one-line :class:`~lgeseg.errors.UserError` naming the file: a missing or unreadable
checkpoint or model zip, ensemble members with different label maps, an image size a network cannot take
without ``model.pad``, a NIfTI that is not 3-D, an output folder that already holds files.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .checkpoint import read_checkpoint
from .config import config_hash, safe_load
from .errors import ConfigError, DataError
from .models import downsampling, model_from_spec
from .nifti import DEFAULT_PERCENTILES, finite_voxels, read_volume, scale_intensities, slice_to_png
from .png import read_image, write_mask
from .train import autocast, inference_batch_size, memory_format_for, predicted_classes, resolve_device

logger = logging.getLogger(__name__)

#: What ``checkpoint`` may be: the network the run evaluated (``train.select``), or one file.
CHECKPOINTS: tuple[str, ...] = ("selected", "best", "last")
#: TTA choices: none, or the mean over the image and its left-right reflection.
TTAS: tuple[str | None, ...] = (None, "flip")
#: Output formats.
FORMATS: tuple[str, ...] = ("png", "nifti")
#: Format tag and version of an exported model zip (``manifest.json``).
MODEL_FORMAT, MODEL_FORMAT_VERSION = "lgeseg-model", 1
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")


@dataclass
class Network:
    """One trained network ready to predict.

    Attributes:
        model: the module, (N, 1, H, W) images in [0, 1] -> (N, K, H, W) class scores, in eval mode.
        spec: its :func:`lgeseg.models.model_spec` (``image_size`` is the size it was trained on).
        labels: ordered class name -> mask pixel value (class index = position).
        config: the run config it was trained with (``model.pad``, ``train.precision`` are read here).
        name: how ``predictions.csv`` names it: ``<number>:<trial name>`` of a study's trial, a run folder's
            name, or for a model zip the study and trial it was exported from (``<study>:<number>:<trial name>``),
            else the zip's name.
        source: the checkpoint file or model zip it was read from.
        meta: what else the checkpoint held (epoch, data fingerprint, config hash; not the weights).
    """

    model: torch.nn.Module
    spec: dict
    labels: dict[str, int]
    config: dict
    name: str
    source: Path
    meta: dict = field(default_factory=dict)


def _is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def _nifti_stem(path: Path) -> str:
    return path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.name[: -len(".nii")]


def _torch_load(path: Path, data: io.BytesIO | None = None) -> dict:
    """A network checkpoint (:func:`lgeseg.checkpoint.read_checkpoint`: ``path``, or ``data`` shown as it)."""
    loaded = read_checkpoint(path, data=data)
    if not {"model", "model_spec", "labels"} <= set(loaded):
        raise DataError(f"{path}: not a checkpoint of lgeseg (needs model, model_spec and labels)")
    return loaded


def checkpoint_path(run_dir: str | Path, checkpoint: str = "selected") -> Path:
    """The checkpoint file of a run folder.

    Args:
        run_dir: a run folder written by :func:`lgeseg.run.run` (``config.yaml``, ``best.pt``, ``last.pt``).
        checkpoint: ``selected`` (the network the run evaluated: ``best.pt`` for ``train.select: best_val``,
            ``last.pt`` for ``final``), ``best`` or ``last``.

    Raises:
        ConfigError: an unknown ``checkpoint``.
        DataError: the folder, its ``config.yaml`` (for ``selected``) or the checkpoint file is missing.
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"--checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run folder not found")
    if checkpoint == "selected":
        config = _read_config(run_dir / "config.yaml")
        checkpoint = "best" if config["train"]["select"] == "best_val" else "last"
    path = run_dir / f"{checkpoint}.pt"
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found (the run has not saved one yet)")
    return path


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path}: run config not found")
    try:
        config = safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: unreadable YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict) or "train" not in config or "model" not in config:
        raise DataError(f"{path}: not a run config (needs model and train sections)")
    return config


def _network(ckpt: dict, config: dict, name: str, source: Path) -> Network:
    try:
        model = model_from_spec(ckpt["model_spec"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as exc:
        raise DataError(f"{source}: weights do not fit the stored model spec ({str(exc).splitlines()[0]})") from None
    model.eval()
    meta = {k: v for k, v in ckpt.items() if k in ("epoch", "data_fingerprint", "config_hash", "val_accuracy")}
    return Network(model, dict(ckpt["model_spec"]), dict(ckpt["labels"]), config, name, source, meta)


def load_network(path: str | Path, checkpoint: str = "selected", name: str | None = None) -> Network:
    """A network from a run folder, a checkpoint file inside one, or an exported model zip, on the CPU.

    Args:
        path: a run folder (its ``checkpoint`` is read), a ``best.pt`` / ``last.pt`` next to the run's
            ``config.yaml``, or a ``.zip`` written by :func:`export_model`.
        checkpoint: see :func:`checkpoint_path` (ignored for a file or zip).
        name: the name ``predictions.csv`` gives it (default: the run folder's or the zip's name).

    Returns:
        The :class:`Network`, loaded with ``torch.load(..., weights_only=True)``.

    Raises:
        DataError: a missing or unreadable checkpoint, config or zip, or a zip whose weights do not match
            its manifest's fingerprint.
    """
    path = Path(path)
    if path.suffix == ".zip":
        return load_model_zip(path, name)
    if path.is_dir():
        path = checkpoint_path(path, checkpoint)
    elif not path.is_file():
        what = "checkpoint" if path.suffix == ".pt" else "run folder"
        raise DataError(f"{path}: {what} not found")
    config = _read_config(path.parent / "config.yaml")
    return _network(_torch_load(path), config, name or path.parent.name, path)


def check_ensemble(networks: list[Network]) -> dict[str, int]:
    """The label map every member shares.

    Raises:
        ConfigError: no network, or two members whose label maps (names, values or order) differ.
    """
    if not networks:
        raise ConfigError("no network to predict with")
    first = networks[0]
    for other in networks[1:]:
        if list(other.labels.items()) != list(first.labels.items()):
            raise ConfigError(
                f"label maps differ between ensemble members: {first.name} has {first.labels}, "
                f"{other.name} has {other.labels}"
            )
    return first.labels


def _input_size(network: Network, height: int, width: int) -> tuple[int, int]:
    """The size ``network`` takes ``height`` x ``width`` images at (padded when its run padded)."""
    factor = downsampling(network.spec)
    padded = (-(-height // factor) * factor, -(-width // factor) * factor)
    if padded != (height, width) and not network.config["model"].get("pad", False):
        raise ConfigError(
            f"network {network.name} ({network.spec['architecture']}) needs image sides divisible by {factor}, "
            f"the images are {height}x{width} (HxW), and it was trained without model.pad; resize the images "
            f"or use a network trained with model.pad: true"
        )
    if network.spec.get("normalization_dimension") == "element" and list(padded) != list(network.spec["image_size"]):
        trained = "x".join(str(s) for s in network.spec["image_size"])
        raise ConfigError(
            f"network {network.name} normalises each pixel by a mean image of {trained} "
            f"(model.normalization_dimension: element) and cannot take {height}x{width} images"
        )
    return padded


@torch.no_grad()
def _class_scores(network: Network, x: torch.Tensor, flip: bool) -> torch.Tensor:
    """(N, K, H, W) float32 logits of one batch, reflected back when ``flip``."""
    if flip:
        x = x.flip(-1)
    with autocast(x.device, network.config["train"].get("precision", "fp32")):
        logits = network.model(x).float()
    return logits.flip(-1) if flip else logits


def _prepare(networks: list[Network], device: torch.device) -> None:
    """Put each network on ``device`` in the memory format its run predicted in (``train.channels_last``)."""
    for network in networks:
        network.model.to(device)
        network.model.to(memory_format=memory_format_for(network.config["train"].get("channels_last", False), device))
        network.model.eval()


@torch.no_grad()
def predict_probabilities(
    networks: list[Network],
    images: np.ndarray,
    tta: str | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    bar: Any = None,
) -> np.ndarray:
    """The ensemble's mean softmax probabilities of images of one size.

    Args:
        networks: the members (:func:`check_ensemble` is applied).
        images: (N, H, W) float32 intensities in [0, 1] (as :func:`lgeseg.png.read_image` returns them).
        tta: None, or ``"flip"`` to average each network over the image and its left-right reflection.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a torch device.
        batch_size: images per forward pass (default: 16 on a CPU, 128 on a GPU, as the run evaluates).
        bar: a progress bar to ``update(n)`` per batch (:func:`lgeseg.progress.progress_bar`), or None.

    Returns:
        (N, K, H, W) float32 probabilities, K = the classes of the label map, summing to 1 over K: the mean
        over networks (and reflections) of ``softmax(scores, dim=1)``, cropped back to H x W.

    Raises:
        ConfigError: see :func:`check_ensemble` and a size a network cannot take (``model.pad``).
    """
    return _predict(networks, images, tta, device, batch_size, bar, probabilities=True)


@torch.no_grad()
def predict_classes(
    networks: list[Network],
    images: np.ndarray,
    tta: str | None = None,
    device: str | torch.device = "auto",
    batch_size: int | None = None,
    bar: Any = None,
) -> np.ndarray:
    """Class indices (N, H, W) uint8 of images of one size: the argmax of :func:`predict_probabilities`
    (of the class scores for one network without TTA, see the module docstring). Arguments and errors as
    :func:`predict_probabilities`."""
    return _predict(networks, images, tta, device, batch_size, bar, probabilities=False)


def _predict(
    networks: list[Network],
    images: np.ndarray,
    tta: str | None,
    device: str | torch.device,
    batch_size: int | None,
    bar: Any,
    probabilities: bool,
) -> np.ndarray:
    if tta not in TTAS:
        raise ConfigError(f"--tta must be flip or left out, got {tta!r}")
    labels = check_ensemble(networks)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise DataError(f"expected (N, H, W) images, got shape {images.shape}")
    n, height, width = images.shape
    sizes = {_input_size(network, height, width) for network in networks}
    device = resolve_device(device, "--device") if isinstance(device, str) else device
    _prepare(networks, device)
    batch_size = batch_size or inference_batch_size(device)
    flips = (False, True) if tta == "flip" else (False,)
    members = len(networks) * len(flips)
    k = len(labels)
    out = np.empty(
        (n, k, height, width) if probabilities else (n, height, width), np.float32 if probabilities else np.uint8
    )
    padded = {size: None for size in sizes}
    for start in range(0, n, batch_size):
        chunk = torch.from_numpy(images[start : start + batch_size]).unsqueeze(1).to(device)
        for ph, pw in padded:
            padded[(ph, pw)] = torch.nn.functional.pad(chunk, (0, pw - width, 0, ph - height))
        if members == 1 and not probabilities:
            x = padded[_input_size(networks[0], height, width)]
            scores = _class_scores(networks[0], x, False)[:, :, :height, :width]
            out[start : start + len(chunk)] = predicted_classes(scores).to(torch.uint8).cpu().numpy()
        else:
            total = torch.zeros(len(chunk), k, height, width, device=device, dtype=torch.float32)
            for network in networks:
                x = padded[_input_size(network, height, width)]
                for flip in flips:
                    total += torch.softmax(_class_scores(network, x, flip)[:, :, :height, :width], dim=1)
            mean = total / members
            out[start : start + len(chunk)] = (
                mean.cpu().numpy() if probabilities else mean.argmax(1).to(torch.uint8).cpu().numpy()
            )
        if bar is not None:
            bar.update(len(chunk))
    return out


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class Input:
    """One thing to segment: a PNG slice or a NIfTI volume."""

    path: Path
    kind: str  #: ``png`` or ``nifti``


def find_inputs(path: str | Path) -> list[Input]:
    """What ``--input`` names, sorted by path.

    Args:
        path: a PNG file, a folder of PNG slices (or a dataset folder with ``images/``), a NIfTI file
            (``.nii``, ``.nii.gz``), a folder of NIfTI volumes, or a glob pattern of NIfTI or PNG files.

    Raises:
        DataError: nothing found, a file of another type, or a folder mixing PNG and NIfTI files.
    """
    text = str(path)
    path = Path(path)
    if any(c in text for c in "*?[") and not path.exists():
        files = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        if not files:
            raise DataError(f"--input {text!r}: no file matches")
    elif path.is_dir():
        folder = path / "images" if (path / "images").is_dir() else path
        files = sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix.lower() == ".png" or _is_nifti(p)))
        hidden = [p for p in files if p.name.startswith(".")]  # a Mac's ._x.png copies: not images
        if hidden:
            logger.warning("%s: skipped %d dot-file(s) (%s)", folder, len(hidden), ", ".join(p.name for p in hidden))
            files = [p for p in files if p not in hidden]
        if not files:
            raise DataError(f"{folder}: no PNG or NIfTI (.nii, .nii.gz) file")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: input not found")
    inputs = []
    for file in files:
        if _is_nifti(file):
            inputs.append(Input(file, "nifti"))
        elif file.suffix.lower() == ".png":
            inputs.append(Input(file, "png"))
        else:
            raise DataError(f"{file}: neither a PNG slice nor a NIfTI volume (.nii, .nii.gz)")
    if len({i.kind for i in inputs}) > 1:
        raise DataError(f"--input {text}: holds both PNG slices and NIfTI volumes; predict them separately")
    return inputs


def volume_slices(
    path: str | Path, axis: int = 2, percentiles: tuple[float, float] | None = None
) -> tuple[np.ndarray, Any]:
    """A NIfTI volume as the slices ``import-nifti`` would write, read back as :func:`read_image` reads them.

    Args:
        path: a 3-D NIfTI file (trailing axes of length 1 are dropped, as :func:`lgeseg.nifti.read_volume`).
        axis: the voxel axis the slices are taken along.
        percentiles: lower and upper percentile mapped to 0 and 255 (default
            :data:`lgeseg.nifti.DEFAULT_PERCENTILES`, import-nifti's default).

    Returns:
        ``(slices, image)``: float32 (S, H, W) in [0, 1], slice k in PNG orientation (rows = the second
        in-plane axis reversed, columns = the first), and the nibabel image (affine, header).

    Raises:
        DataError: the file is missing, unreadable or not 3-D, or no voxel is finite (one line naming it).
    """
    import nibabel as nib

    path = Path(path)
    volume, note = finite_voxels(read_volume(path)[0], path)  # as import-nifti: NaN and inf left out, said once
    if note is not None:
        logger.warning(note)
    pixels = scale_intensities(volume, percentiles or DEFAULT_PERCENTILES, 8)
    planes = [slice_to_png(np.take(pixels, k, axis=axis)) for k in range(pixels.shape[axis])]
    # read_image's 8-bit path: value / 255 as float64, then float32.
    slices = (np.stack(planes).astype(np.float64) / 255.0).astype(np.float32)
    return slices, nib.load(path)


def slices_to_volume(slices: np.ndarray, axis: int = 2) -> np.ndarray:
    """The inverse of the slicing of :func:`volume_slices`: (S, H, W) PNG-oriented slices -> the volume,
    slice k at index k of ``axis`` (``import-nifti``'s ``imshow(plane.T, origin='lower')`` undone)."""
    planes = [np.flipud(s).T for s in slices]
    return np.stack(planes, axis=axis)


def write_label_volume(path: str | Path, labels: np.ndarray, like: Any) -> None:
    """Write a uint8 label volume with the affine, header (qform, sform, units) and class of ``like``.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file to write.
        labels: uint8 array of ``like``'s 3-D shape (mask pixel values).
        like: the nibabel image of the input volume.
    """
    header = like.header.copy()
    image = type(like)(np.asarray(labels, np.uint8), like.affine, header)
    image.set_data_dtype(np.uint8)
    image.header.set_slope_inter(1.0, 0.0)
    image.set_qform(like.get_qform(), code=int(like.header["qform_code"]))
    image.set_sform(like.get_sform(), code=int(like.header["sform_code"]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.to_filename(str(path))


# ----------------------------------------------------------------------------------------------- outputs


@dataclass
class PredictionSummary:
    """What :func:`predict_path` wrote."""

    out: Path  #: the output folder
    files: list[Path]  #: the masks or label volumes written, one per input
    table: Path  #: ``predictions.csv``
    slices: int  #: 2-D slices segmented
    rows: list[dict] = field(default_factory=list)  #: the rows of ``predictions.csv``


def check_out_dir(out: str | Path) -> Path:
    """An output folder that is new or empty.

    Raises:
        DataError: ``out`` is a file, or a folder that already holds files (so nothing is overwritten).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; --out must be a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out}: already holds files; predict into a new or empty folder")
    return out


def _counts(classes: np.ndarray, labels: dict[str, int]) -> dict[str, int]:
    counts = np.bincount(classes.ravel(), minlength=len(labels))
    return {f"{name}_pixels": int(counts[i]) for i, name in enumerate(labels)}


def predict_path(
    networks: list[Network],
    inputs: str | Path,
    out: str | Path,
    fmt: str | None = None,
    tta: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = False,
    axis: int = 2,
    percentiles: tuple[float, float] | None = None,
) -> PredictionSummary:
    """Segment everything ``inputs`` names and write one output per input, plus ``predictions.csv``.

    Args:
        networks: the ensemble (one or more :class:`Network`, same label map).
        inputs: see :func:`find_inputs`.
        out: a new or empty folder.
        fmt: ``png`` (one mask per slice; a volume's slices are named ``<case>_slice<k:03d>.png`` as
            ``import-nifti`` names them) or ``nifti`` (one label volume per input volume, same name); default
            the input's format. PNG inputs cannot give NIfTI (they carry no geometry).
        tta, device, batch_size: see :func:`predict_probabilities`.
        progress: a progress bar over slices (:func:`lgeseg.progress.progress_bar`).
        axis: the slice axis of NIfTI volumes (as ``import-nifti --axis``).
        percentiles: of a volume's voxels, mapped to 0 and 255 (as ``import-nifti --percentiles``; default
            :data:`lgeseg.nifti.DEFAULT_PERCENTILES`).

    Returns:
        A :class:`PredictionSummary`. ``predictions.csv`` columns: ``file`` (relative to ``out``),
        ``input``, ``networks`` (names joined by ``+``), ``tta``, ``<class>_pixels`` per class (pixels or
        voxels), and for NIfTI outputs ``<class>_ml`` per class (voxels times the voxel volume from the
        header's zooms, mm^3 / 1000).

    Raises:
        ConfigError: see :func:`predict_probabilities`; an unknown ``fmt``; NIfTI asked for PNG inputs.
        DataError: see :func:`find_inputs`, :func:`check_out_dir`, :func:`volume_slices`; PNG images that
            cannot be read (:func:`lgeseg.png.read_image`).
    """
    from .progress import progress_bar

    if fmt is not None and fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if axis not in (0, 1, 2):
        raise ConfigError(f"--axis must be 0, 1 or 2, got {axis}")
    if percentiles is not None and not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise ConfigError(f"--percentiles must be two values 0 <= low < high <= 100, got {percentiles}")
    labels = check_ensemble(networks)
    unreflected = [n.name for n in networks if not n.config.get("train", {}).get("augment", {}).get("reflect", True)]
    if tta == "flip" and unreflected:  # it averages with a view these networks never saw in training
        logger.warning(
            "--tta flip: %s trained without reflection (train.augment.reflect: false): the reflected view is "
            "one it never saw",
            ", ".join(unreflected),
        )
    found = find_inputs(inputs)
    kind = found[0].kind
    fmt = fmt or kind
    if kind == "png" and fmt == "nifti":
        raise ConfigError("--format nifti needs NIfTI inputs (PNG slices carry no voxel geometry); use --format png")
    out = check_out_dir(out)
    names = "+".join(network.name for network in networks)
    common = {"networks": names, "tta": tta or "none"}
    rows: list[dict] = []
    written: list[Path] = []

    if kind == "png":
        images = [read_image(i.path) for i in found]  # every file is read (and checked) before any is written
        total = len(images)
    else:
        volumes = [(i.path, *volume_slices(i.path, axis, percentiles)) for i in found]
        total = sum(len(slices) for _, slices, _ in volumes)
    shapes = {image.shape for image in images} if kind == "png" else {s.shape[1:] for _, s, _ in volumes}
    for network in networks:  # every size is checked before anything is written
        for height, width in sorted(shapes):
            _input_size(network, height, width)
    bar = progress_bar(total=total, desc="predict", unit="slice") if progress else None
    try:
        if kind == "png":
            by_size: dict[tuple[int, int], list[int]] = {}
            for index, image in enumerate(images):
                by_size.setdefault(image.shape, []).append(index)
            results: dict[int, np.ndarray] = {}
            for indices in by_size.values():
                stack = np.stack([images[i] for i in indices])
                for i, pred in zip(indices, predict_classes(networks, stack, tta, device, batch_size, bar)):
                    results[i] = pred
            out.mkdir(parents=True, exist_ok=True)
            for index, item in enumerate(found):
                target = out / item.path.name
                write_mask(target, results[index], labels)
                written.append(target)
                rows.append({"file": target.name, "input": str(item.path), **common, **_counts(results[index], labels)})
        else:
            values = np.asarray(list(labels.values()), np.uint8)
            out.mkdir(parents=True, exist_ok=True)
            for path, slices, image in volumes:
                pred = predict_classes(networks, slices, tta, device, batch_size, bar)
                if fmt == "png":
                    for k, plane in enumerate(pred):
                        target = out / f"{_nifti_stem(path)}_slice{k:03d}.png"
                        write_mask(target, plane, labels)
                        written.append(target)
                        rows.append({"file": target.name, "input": f"{path}:{k}", **common, **_counts(plane, labels)})
                    continue
                target = out / path.name
                volume = slices_to_volume(pred, axis)
                write_label_volume(target, values[volume], image)
                written.append(target)
                voxel_ml = float(np.prod(image.header.get_zooms()[:3])) / 1000.0
                counts = _counts(volume, labels)
                ml = {f"{name}_ml": round(counts[f"{name}_pixels"] * voxel_ml, 6) for name in labels}
                rows.append({"file": target.name, "input": str(path), **common, **counts, **ml})
    finally:
        if bar is not None:
            bar.close()
    table = out / "predictions.csv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return PredictionSummary(out, written, table, total, rows)


# ------------------------------------------------------------------------------------------------ export


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_model(
    run_dir: str | Path, out: str | Path, checkpoint: str = "selected", source: dict | None = None
) -> Path:
    """Write one network of a run folder as a self-contained model zip.

    The zip holds ``model.pt`` (a plain dict loadable with ``torch.load(..., weights_only=True)``: ``model``
    = the state dict with the input layer's normalisation statistics, ``model_spec``, ``labels``,
    ``config``, ``epoch``, ``data_fingerprint``, ``config_hash``), ``config.yaml`` (the run config) and
    ``manifest.json`` (format and version, the package versions that wrote it, the SHA-256 of
    ``model.pt``, the checkpoint, the data fingerprint, the config hash, the labels and model spec, and
    ``source``, e.g. the study and trial).

    Args:
        run_dir: the run folder (see :func:`checkpoint_path`).
        out: the ``.zip`` to write; an existing file is refused.
        checkpoint: ``selected``, ``best`` or ``last``.
        source: what to say about where it came from (study name, trial number, trial name).

    Returns:
        ``out``.

    Raises:
        DataError: see :func:`load_network`; ``out`` exists or does not end in ``.zip``.
    """
    from .run import versions

    out = Path(out)
    if out.suffix != ".zip":
        raise DataError(f"{out}: a model export must end in .zip")
    if out.exists():
        raise DataError(f"{out}: already exists; export to a new file")
    path = checkpoint_path(run_dir, checkpoint)
    config = _read_config(path.parent / "config.yaml")
    ckpt = _torch_load(path)
    payload = {
        "model": ckpt["model"],
        "model_spec": ckpt["model_spec"],
        "labels": ckpt["labels"],
        "config": config,
        "epoch": ckpt.get("epoch"),
        "data_fingerprint": ckpt.get("data_fingerprint"),
        "config_hash": ckpt.get("config_hash", config_hash(config)),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    weights = buffer.getvalue()
    manifest = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "name": Path(run_dir).name,
        "checkpoint": path.name,
        "epoch": payload["epoch"],
        "sha256": {"model.pt": _sha256(weights)},
        "data_fingerprint": payload["data_fingerprint"],
        "config_hash": payload["config_hash"],
        "labels": payload["labels"],
        "model_spec": payload["model_spec"],
        "versions": versions(),
        "source": source or {"run_dir": Path(run_dir).name},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest, indent=1, default=str))
        archive.writestr("config.yaml", yaml.safe_dump(config, sort_keys=False))
        archive.writestr("model.pt", weights)
    tmp.replace(out)
    return out


def read_manifest(path: str | Path) -> dict:
    """The ``manifest.json`` of a model zip.

    Raises:
        DataError: the file is missing, not a zip, or not a model zip of this format.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model zip not found")
    try:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a model zip of lgeseg ({str(exc).splitlines()[0]})") from None
    if manifest.get("format") != MODEL_FORMAT or manifest.get("format_version") != MODEL_FORMAT_VERSION:
        raise DataError(
            f"{path}: model format {manifest.get('format')!r} version {manifest.get('format_version')!r}; "
            f"this lgeseg reads {MODEL_FORMAT!r} version {MODEL_FORMAT_VERSION}"
        )
    return manifest


def load_model_zip(path: str | Path, name: str | None = None) -> Network:
    """The network of a model zip written by :func:`export_model`, on the CPU, without any study.

    Raises:
        DataError: see :func:`read_manifest`; ``model.pt`` missing, unreadable, or not the one the manifest
            fingerprints (SHA-256).
    """
    path = Path(path)
    manifest = read_manifest(path)
    try:
        with zipfile.ZipFile(path) as archive:
            weights = archive.read("model.pt")
    except KeyError:
        raise DataError(f"{path}: model zip holds no model.pt") from None
    if _sha256(weights) != manifest["sha256"]["model.pt"]:
        raise DataError(f"{path}: model.pt does not match the SHA-256 in manifest.json (a damaged or altered zip)")
    ckpt = _torch_load(path, io.BytesIO(weights))
    source = manifest.get("source") or {}  # the study trial it was exported from, when export said so
    if name is None and {"study_name", "trial"} <= set(source):
        name = f"{source['study_name']}:{source['trial']}:{source.get('trial_name') or path.name[: -len('.zip')]}"
    return _network(ckpt, ckpt["config"], name or path.name[: -len(".zip")], path)


__all__ = [
    "CHECKPOINTS",
    "FORMATS",
    "Input",
    "Network",
    "PredictionSummary",
    "check_ensemble",
    "check_out_dir",
    "checkpoint_path",
    "export_model",
    "find_inputs",
    "load_model_zip",
    "load_network",
    "predict_classes",
    "predict_path",
    "predict_probabilities",
    "read_manifest",
    "resolve_device",
    "slices_to_volume",
    "volume_slices",
    "write_label_volume",
]
