"""Training one U-Net with the study's protocol, and the whole run around it.

:func:`fit` is the training loop: Adam with MATLAB's coupled L2, the study's augmentation, per-epoch
validation, resumable checkpoints. :func:`run` is one complete run: load data, split, fit, pick the
network, evaluate it on the test split and write every output next to the config, split and versions
that produced it. Both report each finished epoch through an ``on_epoch`` callback, which is how the HPO
layer follows a run without this package knowing about it.

The hot loop keeps the whole data set on the device and augments a batch at a time there, so no Python
runs per sample; host synchronisation happens once per epoch.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from . import __version__
from .config import config_hash, run_config, safe_load
from .data import IGNORE_INDEX, Dataset, Split, load_dataset, split_dataset, write_mask
from .errors import TrainingError
from .fingerprint import check_same, data_fingerprint, recorded_fingerprints
from .losses import build_loss
from .metrics import evaluate, json_safe, majority_class, trivial_baseline, write_json
from .models import build_model, halvings, l2_parameters, model_from_spec, model_spec
from .padding import check_size, crop, pad_dataset

#: Target value of pixels shifted in from outside the image: ignored by the loss and the accuracy.
IGNORE = IGNORE_INDEX
HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class EpochStats:
    """What one finished epoch reports; ``val_accuracy`` is the study's 'validation accuracy'."""

    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    best_val_accuracy: float
    seconds: float
    replayed: bool = False  # an epoch done before a resume, reported again so observers see every epoch


@dataclass
class FitResult:
    model: torch.nn.Module
    history: list[dict]
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_val_accuracy: float
    device: str
    resumed_from_epoch: int = 0


@dataclass
class RunResult:
    out_dir: Path
    test_metrics: dict
    val_metrics: dict
    history: list[dict]
    info: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainingError(f"train.device {name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"train.device is {name!r} but no CUDA device is available")
    return device


def versions() -> dict[str, str]:
    """Versions that decide the numbers of a run."""
    from importlib.metadata import version

    import scipy

    return {"lgeseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "monai": version("monai"),
            "platform": platform.platform(), "cuda": torch.version.cuda or "none"}


def augment_batch(images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator,
                  reflect: bool, translate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The study's augmentation for a batch at once, on the batch's device.

    Left-right reflection with p=0.5 and an integer x, y shift uniform in [-translate, translate],
    identical for image and mask. Pixels shifted in from outside are 0 in the image and IGNORE in the mask.
    """
    batch, _, height, width = images.shape
    device = images.device
    if reflect:
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        masks = torch.where(flip[:, None, None], masks.flip(-1), masks)
    if translate > 0:
        shift = torch.randint(-translate, translate + 1, (2, batch), generator=generator, device=device)
        rows = torch.arange(height, device=device)[None, :] - shift[0][:, None]
        cols = torch.arange(width, device=device)[None, :] - shift[1][:, None]
        inside = (((rows >= 0) & (rows < height))[:, :, None]) & (((cols >= 0) & (cols < width))[:, None, :])
        r = rows.clamp(0, height - 1)[:, :, None]
        c = cols.clamp(0, width - 1)[:, None, :]
        b = torch.arange(batch, device=device)[:, None, None]
        images = (images[b, 0, r, c] * inside).unsqueeze(1)
        masks = torch.where(inside, masks[b, r, c], torch.full_like(masks[:, :1, :1], IGNORE))
    return images, masks


def _predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(1)`` of (N, C, H, W) logits, faster on the CPU (accuracy and predictions).

    On the CPU, argmax over the strided class axis is several times slower than a running max over the
    C class planes; both return the first maximal class. They differ only where a logit is NaN, which
    only a network with NaN weights gives, and :func:`fit` stops with an error at the NaN loss that
    makes them. On other devices this is ``argmax(1)``.
    """
    if logits.device.type != "cpu":
        return logits.argmax(1)
    best = logits[:, 0]
    index = torch.zeros(best.shape, dtype=torch.long, device=logits.device)
    for k in range(1, logits.shape[1]):
        plane = logits[:, k]
        index.masked_fill_(plane > best, k)
        best = torch.maximum(best, plane)
    return index


def build_optimizer(model: torch.nn.Module, learning_rate: float, l2: float, mode: str) -> torch.optim.Optimizer:
    """Adam with L2 on convolution weights only (see :func:`lgeseg.models.l2_parameters`), as MATLAB
    applies L2Regularization.

    ``coupled`` adds ``l2 * w`` to the gradient before the Adam step (MATLAB); ``decoupled`` is AdamW.
    """
    weights, others = l2_parameters(model)
    groups = [{"params": weights, "weight_decay": l2}, {"params": others, "weight_decay": 0.0}]
    optimizer_class = torch.optim.Adam if mode == "coupled" else torch.optim.AdamW
    return optimizer_class(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8)


def _autocast(device: torch.device, precision: str):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _eval_batch(device: torch.device) -> int:
    """Inference batch: small on the CPU (thin U-Nets run fastest at 8-16 images there), large on GPUs."""
    return 16 if device.type == "cpu" else 128


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, precision: str = "auto",
            batch_size: int | None = None) -> torch.Tensor:
    """Class indices (N, H, W) uint8 for images (N, 1, H, W) on the model's device."""
    model.eval()
    batch_size = batch_size or _eval_batch(images.device)
    out = []
    for start in range(0, len(images), batch_size):
        with _autocast(images.device, precision):
            out.append(_predicted_classes(model(images[start:start + batch_size])).to(torch.uint8))
    return torch.cat(out) if out else torch.empty(0, *images.shape[2:], dtype=torch.uint8)


@torch.no_grad()
def _validate(model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, precision: str) -> tuple[float, float]:
    """Mean pixel cross-entropy and global pixel accuracy on unaugmented images."""
    model.eval()
    batch_size = _eval_batch(images.device)
    loss_sum = torch.zeros((), device=images.device, dtype=torch.float64)
    correct = torch.zeros((), device=images.device, dtype=torch.int64)
    for start in range(0, len(images), batch_size):
        y = masks[start:start + batch_size].long()
        with _autocast(images.device, precision):
            logits = model(images[start:start + batch_size])
        loss_sum += F.cross_entropy(logits.float(), y, ignore_index=IGNORE, reduction="sum")
        correct += (_predicted_classes(logits) == y).sum()  # predictions are never IGNORE
    # The loss is divided by all pixels (as in training), the accuracy counts labelled pixels only.
    return loss_sum.item() / masks.numel(), correct.item() / max(1, int((masks != IGNORE).sum()))


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_history(history: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A network saved in ``best.pt`` or ``last.pt`` (any architecture), with the checkpoint's metadata."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = model_from_spec(ckpt["model_spec"]).to(device)
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def fit(config: dict, dataset: Dataset, split: Split, out_dir: str | Path,
        on_epoch: Callable[[EpochStats], None] | None = None, progress: bool = False,
        record: dict | None = None) -> FitResult:
    """Train one network; resumes from ``out_dir/last.pt`` when it exists.

    ``record`` is stored in both checkpoints as is (:func:`run` puts the data and split fingerprints
    there, so a run continued on changed data is refused).

    A resumed run ends with the same weights as an uninterrupted one: the checkpoint carries the model,
    the optimizer, the epoch, the history and every RNG state the loop draws from. On resume the epochs
    already done are first passed to ``on_epoch`` again (``replayed=True``), so an observer that missed
    them (a driver that died) sees the whole run in order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg = config["train"]
    epochs, batch_size = tcfg["epochs"], tcfg["batch_size"]
    device = resolve_device(tcfg["device"])
    precision = tcfg["precision"]
    channels_last = tcfg["channels_last"] is True or (tcfg["channels_last"] == "auto" and device.type == "cuda")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    torch.manual_seed(config["seed"])
    generator = torch.Generator(device=device)
    generator.manual_seed(config["seed"])

    images = torch.from_numpy(dataset.images).unsqueeze(1).to(device)
    masks = torch.from_numpy(dataset.masks).to(device)
    x_train, y_train = images[split.train], masks[split.train]
    x_val, y_val = images[split.val].contiguous(memory_format=memory_format), masks[split.val]
    steps = len(split.train) // batch_size  # MATLAB drops the last partial mini-batch
    if steps == 0:
        raise TrainingError(f"train.batch_size {batch_size} is larger than the training split "
                            f"({len(split.train)} images)")

    spec = model_spec(config, 1, len(dataset.labels), dataset.images.shape[1:])
    model = build_model(config, 1, len(dataset.labels), dataset.images.shape[1:]).to(device)
    model.normalization.set_statistics(x_train)
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, tcfg["learning_rate"], tcfg["l2"], tcfg["l2_mode"])
    loss_fn = build_loss(tcfg["loss"], IGNORE)

    chash = config_hash(config)
    history: list[dict] = []
    best_epoch, best_acc = 0, -1.0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    start_epoch = 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    if last_path.exists():
        ckpt = torch.load(last_path, map_location=device, weights_only=True)
        if ckpt.get("config_hash") != chash:
            raise TrainingError(f"{last_path}: checkpoint was made with another config; "
                                f"use a new output folder or delete it")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"], device)
        generator.set_state(ckpt["rng_generator"].to(generator.get_state().device))
        history = list(ckpt["history"])
        start_epoch, best_epoch, best_acc = ckpt["epoch"], ckpt["best_epoch"], ckpt["best_val_accuracy"]
        if best_path.exists():
            best_state = torch.load(best_path, map_location=device, weights_only=True)["model"]

    def save_checkpoints(epoch: int) -> None:
        meta = {"model_spec": spec, "labels": dataset.labels, "config_hash": chash, **(record or {})}
        _save_atomic({**meta, "model": best_state, "epoch": best_epoch, "val_accuracy": best_acc}, best_path)
        _save_atomic({
            **meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "history": history, "best_epoch": best_epoch, "best_val_accuracy": best_acc,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "rng_generator": generator.get_state(),
        }, last_path)

    if on_epoch is not None:
        best_so_far = -1.0
        for row in history:
            best_so_far = max(best_so_far, row["val_accuracy"])
            on_epoch(EpochStats(epoch=row["epoch"], epochs=epochs, train_loss=row["train_loss"],
                                train_accuracy=row["train_accuracy"], val_loss=row["val_loss"],
                                val_accuracy=row["val_accuracy"], best_val_accuracy=best_so_far, seconds=0.0,
                                replayed=True))

    bar = None
    if progress:
        from .progress import progress_bar  # a live bar on a terminal, one plain line per epoch in a log

        bar = progress_bar(total=epochs, initial=start_epoch, desc="train", unit="epoch")
    augment = tcfg["augment"]
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            started = time.perf_counter()
            model.train()
            order = torch.randperm(len(split.train), generator=generator, device=device)
            losses = torch.zeros(steps, device=device)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            counted = torch.zeros((), device=device, dtype=torch.int64)
            for step in range(steps):
                batch = order[step * batch_size:(step + 1) * batch_size]
                x, y = augment_batch(x_train[batch], y_train[batch], generator,
                                     augment["reflect"], augment["translate"])
                y = y.long()
                with _autocast(device, precision):
                    logits = model(x.contiguous(memory_format=memory_format))
                loss = loss_fn(logits.float(), y)  # train.loss; IGNORE pixels stay out (lgeseg.losses)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses[step] = loss.detach()
                # Predictions are class indices < num_classes, never IGNORE, so no mask is needed here.
                correct += (_predicted_classes(logits.detach()) == y).sum()
                counted += (y != IGNORE).sum()
            finite = torch.isfinite(losses)
            if not bool(finite.all()):
                bad = int((~finite).nonzero()[0])
                raise TrainingError(f"loss became {losses[bad].item()} at epoch {epoch}, batch {bad + 1}/{steps}; "
                                    f"try a smaller train.learning_rate")
            val_loss, val_acc = _validate(model, x_val, y_val, precision)
            if val_acc > best_acc:
                best_epoch, best_acc = epoch, val_acc
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            row = {"epoch": epoch, "train_loss": losses.mean().item(),
                   "train_accuracy": correct.item() / max(1, counted.item()),
                   "val_loss": val_loss, "val_accuracy": val_acc}
            history.append(row)
            if epoch % tcfg["checkpoint_every"] == 0 or epoch == epochs:
                save_checkpoints(epoch)
            _write_history(history, out / "history.csv")
            stats = EpochStats(epoch=epoch, epochs=epochs, train_loss=row["train_loss"],
                               train_accuracy=row["train_accuracy"], val_loss=val_loss, val_accuracy=val_acc,
                               best_val_accuracy=best_acc, seconds=time.perf_counter() - started)
            if bar is not None:
                bar.set_postfix(loss=f"{stats.train_loss:.4f}", val_acc=f"{val_acc:.4f}")
                bar.update(1)
            if on_epoch is not None:
                on_epoch(stats)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(model=model, history=history, best_state=best_state, best_epoch=best_epoch,
                     best_val_accuracy=best_acc, device=str(device), resumed_from_epoch=start_epoch)


def _write_predictions(folder: Path, pred: np.ndarray, files: list[str], labels: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for mask, name in zip(pred, files):
        write_mask(folder / name, mask, labels)


def run(config: dict, out_dir: str | Path, on_epoch: Callable[[EpochStats], None] | None = None,
        progress: bool = False, dataset: Dataset | None = None) -> RunResult:
    """One complete run: split, train (or resume), select, evaluate, and write all outputs to ``out_dir``.

    Outputs: ``config.yaml``, ``split.json``, ``history.csv``, ``best.pt``, ``last.pt``, ``metrics.json``
    (test split), ``val_metrics.json``, ``predictions/<file>.png`` (test split, dataset pixel values) and
    ``run.json`` (seed, hashes, data fingerprint, device, wall time, versions). A run whose ``run.json``
    says it finished is read back, not redone.

    Before anything is written, images the network cannot take (``model.depth``, ``model.pad``; see
    :mod:`lgeseg.padding`) raise :class:`~lgeseg.errors.ConfigError`, and a folder whose ``run.json`` or
    ``last.pt`` was made from other data or another split raises :class:`~lgeseg.errors.DataError` naming
    the first differing file (:mod:`lgeseg.fingerprint`). With ``model.pad`` the network trains on padded
    images and predictions are cropped back, so metrics and predictions cover the original pixels only.
    """
    config = run_config(config)
    out = Path(out_dir)
    started = time.time()
    # Data and config meet here: every check comes before anything is written.
    dataset = dataset if dataset is not None else load_dataset(config["data"])
    height, width = dataset.images.shape[1:]
    depth = halvings(config["model"])  # model.depth for the MATLAB U-Net, the MONAI network's own otherwise
    check_size(height, width, depth, config["model"]["pad"])
    s = config["split"]
    split = split_dataset(dataset, s["train"], s["val"], s["test"], seed=s["seed"])
    split_info = split.to_json(dataset)
    written = out / "config.yaml"
    if written.exists() and config_hash(safe_load(written.read_text())) != config_hash(config):
        raise TrainingError(f"{out}: holds a run with another config; use a new output folder or delete it")
    fingerprint = data_fingerprint(dataset)
    what, stored_data, stored_split = recorded_fingerprints(out)
    check_same(what, stored_data, stored_split, fingerprint, split_info, "use a new --out")

    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "run.json"
    if info_path.exists() and (out / "metrics.json").exists():
        info = json.loads(info_path.read_text())
        if info.get("finished") and info.get("config_hash") == config_hash(config):
            return _read_back(out, info)

    (out / "split.json").write_text(json.dumps(split_info, indent=1))
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    trained_on = pad_dataset(dataset, depth) if config["model"]["pad"] else dataset
    result = fit(config, trained_on, split, out, on_epoch=on_epoch, progress=progress,
                 record={"data_fingerprint": fingerprint, "split": split_info})
    model = result.model
    selected_epoch = len(result.history)
    if config["train"]["select"] == "best_val":
        model.load_state_dict(result.best_state)
        selected_epoch = result.best_epoch

    device = next(model.parameters()).device
    classes = list(dataset.labels)
    outputs = {}
    for name in ("test", "val"):
        idx = getattr(split, name)
        x = torch.from_numpy(trained_on.images[idx]).unsqueeze(1).to(device)
        pred = crop(predict(model, x, config["train"]["precision"]).cpu().numpy(), height, width)
        outputs[name] = (pred, evaluate(pred, dataset.masks[idx], classes, [dataset.files[i] for i in idx]))
    test_pred, test_metrics = outputs["test"]
    # The floor a network must clearly beat: the training split's majority class predicted everywhere.
    majority = majority_class(dataset.masks[split.train], len(classes))
    baseline = {name: trivial_baseline(dataset.masks[getattr(split, name)], classes, majority)
                for name in ("val", "test")}
    val_metrics = outputs["val"][1]
    _write_predictions(out / "predictions", test_pred, [dataset.files[i] for i in split.test], dataset.labels)
    write_json(val_metrics, out / "val_metrics.json")
    write_json(test_metrics, out / "metrics.json")

    info = {
        "finished": True, "seed": config["seed"], "l2": config["train"]["l2"],
        "architecture": config["model"]["architecture"], "loss": config["train"]["loss"],
        "config_hash": config_hash(config), "split_hash": split_info["hash"], "data_fingerprint": fingerprint,
        "data_dir": str(dataset.root), "synthetic": dataset.synthetic, "labels": dataset.labels,
        "device": result.device, "epochs_run": len(result.history), "selected_epoch": selected_epoch,
        "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy, "baseline": baseline,
        "resumed_from_epoch": result.resumed_from_epoch, "wall_time_s": round(time.time() - started, 3),
        "versions": versions(), "command": sys.argv,
    }
    info_path.write_text(json.dumps(json_safe(info), indent=1, allow_nan=False))
    return _read_back(out, info)


def _read_back(out: Path, info: dict) -> RunResult:
    """A finished run's outputs as written (metrics with NaN as None, as in the JSON files)."""
    with (out / "history.csv").open() as f:
        history = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]
    return RunResult(out, json.loads((out / "metrics.json").read_text()),
                     json.loads((out / "val_metrics.json").read_text()), history, info)


__all__ = ["EpochStats", "FitResult", "RunResult", "augment_batch", "build_optimizer", "fit", "load_model",
           "predict", "resolve_device", "run", "versions"]
