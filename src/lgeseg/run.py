"""One complete training run and everything it writes.

:func:`run` is the run around the training loop of :mod:`lgeseg.train`: load the data, split it, fit (or
resume), pick the network, evaluate it on the validation and test splits and write every output next to the
config, split and package versions that produced it. A finished run is read back, not redone.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import __version__
from .config import config_hash, first_difference, run_config, safe_load, without_neutral
from .data import Dataset, Split, load_dataset, split_from_config, write_mask
from .diagnostics import learning_warnings
from .errors import DataError, TrainingError
from .field_metrics import FieldUnits, field_section, field_units
from .filelock import HeldFile
from .fingerprint import check_same, data_fingerprint, recorded_fingerprints
from .metrics import evaluate, json_safe, majority_class, trivial_baseline, write_json
from .models import halvings
from .padding import check_size, crop, pad_dataset
from .png import IMAGE_SCALING
from .train import HISTORY_FIELDS, EpochStats, fit, predict

logger = logging.getLogger(__name__)

#: The lock file a run holds in its folder while it runs (:class:`lgeseg.filelock.HeldFile`).
RUN_LOCK = "run.lock"
#: The files every finished run folder holds (checkpoints and predictions aside): what :func:`read_run_folder` reads.
RUN_FILES = ("run.json", "config.yaml", "metrics.json", "val_metrics.json", "history.csv", "split.json")


@dataclass
class RunResult:
    """A finished run's outputs, as written to its folder.

    Attributes:
        out_dir: the run folder.
        test_metrics: the metrics JSON (see :func:`lgeseg.metrics.evaluate`) of the selected network on the
            test split, NaN as ``None``.
        val_metrics: the same on the validation split.
        history: one dict per epoch with the keys of :data:`lgeseg.train.HISTORY_FIELDS`.
        info: the content of ``run.json`` (seed, hashes, device, epochs, wall time in s, versions, baseline).
        config: the run config (``config.yaml``).
        split: the split's file lists and hash (``split.json``).
    """

    out_dir: Path
    test_metrics: dict
    val_metrics: dict
    history: list[dict]
    info: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)


def versions() -> dict[str, str]:
    """Versions that decide the numbers of a run."""
    from importlib.metadata import version

    import scipy

    return {
        "lgeseg": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "monai": version("monai"),
        "platform": platform.platform(),
        "cuda": torch.version.cuda or "none",
    }


def _write_predictions(folder: Path, pred: np.ndarray, files: list[str], labels: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for mask, name in zip(pred, files):
        write_mask(folder / name, mask, labels)


def run(
    config: dict,
    out_dir: str | Path,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: bool = False,
    dataset: Dataset | None = None,
) -> RunResult:
    """One complete run: split, train (or resume), select, evaluate, and write all outputs to ``out_dir``.

    Outputs: ``config.yaml``, ``split.json``, ``history.csv``, ``best.pt``, ``last.pt``, ``metrics.json``
    (test split; MATLAB's metrics and, under ``field_metrics``, :func:`lgeseg.field_metrics.field_metrics`),
    ``val_metrics.json``, ``predictions/<file>.png`` (test split, dataset pixel values) and
    ``run.json`` (seed, hashes, data fingerprint, device, wall time, versions, the majority-class
    ``baseline`` and the not-learning ``warnings`` of :mod:`lgeseg.diagnostics`, each also logged as a
    warning). A run whose ``run.json`` says it finished with the same config is read back, not redone.

    Before anything is written, images the network cannot take (``model.depth``, ``model.pad``; see
    :mod:`lgeseg.padding`) raise :class:`~lgeseg.errors.ConfigError`, and a folder whose ``run.json`` or
    ``last.pt`` was made from other data or another split raises :class:`~lgeseg.errors.DataError` naming
    the first differing file (:mod:`lgeseg.fingerprint`). While it runs, the run holds ``run.lock`` in its
    folder (released when the process ends in any way), so a second run of the same folder refuses with
    :class:`~lgeseg.filelock.LockHeldError` naming the holder's host and pid. With ``model.pad`` the network
    trains on padded images and predictions are cropped back, so metrics and predictions cover the original pixels only.

    Args:
        config: a run config (validated here with :func:`lgeseg.config.run_config`).
        out_dir: the run folder; created if missing. A folder holding ``last.pt`` of the same config resumes; a
            non-empty folder that is not a run folder is refused (:func:`stored_run_config`), never written into.
        on_epoch: called after every epoch with its :class:`~lgeseg.train.EpochStats` (see :func:`fit`).
        progress: show a tqdm progress bar.
        dataset: the data set, if already loaded; else ``config["data"]`` is loaded (None = the phantom).

    Returns:
        The :class:`RunResult` as read back from the folder.

    Raises:
        ConfigError: ``config`` has an unknown key or a bad value, or the images do not fit the network.
        DataError: the data set cannot be read or split, or ``out_dir`` holds a run of other data.
        TrainingError: ``out_dir`` is a file, is not a run folder, holds a run of another config, or training
            fails (see :func:`fit`).
    """
    config = run_config(config)
    out = Path(out_dir)
    started = time.time()
    dataset = dataset if dataset is not None else load_dataset(config["data"])
    checked = _check_inputs(config, dataset, out)  # every check comes before anything is written
    done = _finished_run(out, config)  # read back without the lock: run.json is written last, in one piece
    if done is not None:
        logger.info("%s holds this config's finished run: its results are read back, not retrained", out)
        return done
    try:
        out.mkdir(parents=True, exist_ok=True)
        # Never two trainings in one folder: the second would take the first's checkpoints for its own.
        with HeldFile(out / RUN_LOCK, f"run folder {out}"):
            return _run_in(config, out, dataset, checked, started, on_epoch, progress)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = exc.filename or out
        raise TrainingError(
            f"{where}: no space left on device (errno {exc.errno}); free space there, then run again (a grid or "
            f"search: with --resume; the run continues from its last checkpoint)"
        ) from None


def _run_in(
    config: dict,
    out: Path,
    dataset: Dataset,
    checked: _Checked,
    started: float,
    on_epoch: Callable[[EpochStats], None] | None,
    progress: bool,
) -> RunResult:
    """The part of :func:`run` done while holding the run folder's lock: read back, or train and write."""
    done = _finished_run(out, config)  # checked again under the lock
    if done is not None:
        return done
    (out / "split.json").write_text(json.dumps(checked.split_info, indent=1))
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    trained_on = pad_dataset(dataset, checked.depth) if config["model"]["pad"] else dataset
    split = checked.split
    result = fit(
        config,
        trained_on,
        split,
        out,
        on_epoch=on_epoch,
        progress=progress,
        record={"data_fingerprint": checked.fingerprint, "split": checked.split_info},
    )
    model, selected_epoch = _selected_network(config, result)
    outputs = _evaluate_splits(config, model, trained_on, dataset, split, checked.units)
    test_pred, test_metrics = outputs["test"]
    val_metrics = outputs["val"][1]
    baseline = _baseline(dataset, split)
    warnings = learning_warnings(result.history, val_metrics["dataset"]["MeanIoU"], baseline["val"]["MeanIoU"], config)
    _write_predictions(out / "predictions", test_pred, [dataset.files[i] for i in split.test], dataset.labels)
    write_json(val_metrics, out / "val_metrics.json")
    write_json(test_metrics, out / "metrics.json")

    info = {
        "finished": True,
        "seed": config["seed"],
        "l2": config["train"]["l2"],
        "architecture": config["model"]["architecture"],
        "loss": config["train"]["loss"],
        "config_hash": config_hash(config),
        "split_hash": checked.split_info["hash"],
        "data_fingerprint": checked.fingerprint,
        "data_dir": str(dataset.root),
        "synthetic": dataset.synthetic,
        "labels": dataset.labels,
        "image_scaling": IMAGE_SCALING,
        "device": result.device,
        # intra-op threads: a CPU run's numbers depend on them through floating-point summation order
        "torch_threads": torch.get_num_threads(),
        "epochs_run": len(result.history),
        "selected_epoch": selected_epoch,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": result.best_val_accuracy,
        "baseline": baseline,
        "warnings": warnings,
        "resumed_from_epoch": result.resumed_from_epoch,
        "wall_time_s": round(time.time() - started, 3),
        "versions": versions(),
        "command": sys.argv,
    }
    info_path = out / "run.json"
    tmp = info_path.with_suffix(".json.tmp")  # written last and atomically: a reader never sees half of it
    tmp.write_text(json.dumps(json_safe(info), indent=1, allow_nan=False))
    os.replace(tmp, info_path)
    return read_run_folder(out)


@dataclass(frozen=True)
class _Checked:
    """What :func:`_check_inputs` established about a run's data before anything is written."""

    split: Split
    split_info: dict  #: the split's file lists and hash (``split.json``)
    fingerprint: dict  #: the data fingerprint (:func:`lgeseg.fingerprint.data_fingerprint`)
    depth: int  #: how often the network halves the image (:func:`lgeseg.models.halvings`)
    units: FieldUnits  #: spacing and slice numbers for the field metrics (:func:`lgeseg.field_metrics.field_units`)


def _check_inputs(config: dict, dataset: Dataset, out: Path) -> _Checked:
    """Data and config meet here: images the network cannot take, a folder holding another config's run,
    or a run of other data or another split are refused (see :func:`run`)."""
    height, width = dataset.images.shape[1:]
    depth = halvings(config["model"])  # model.depth for the MATLAB U-Net, a MONAI network's own otherwise
    check_size(height, width, depth, config["model"]["pad"])
    split = split_from_config(dataset, config["split"])
    units = field_units(dataset.root, dataset.files)
    split_info = split.to_json(dataset)
    stored = stored_run_config(out)
    if stored is not None and config_hash(stored) != config_hash(config):
        key, now, was = first_difference(without_neutral(config), without_neutral(stored)) or ("config", None, None)
        raise TrainingError(
            f"{out}: holds a run with another config ({key}: {was!r} there, {now!r} now); use a new output folder "
            f"or delete it"
        )
    fingerprint = data_fingerprint(dataset)
    what, stored_data, stored_split = recorded_fingerprints(out)
    check_same(what, stored_data, stored_split, fingerprint, split_info, "use a new --out")
    return _Checked(split, split_info, fingerprint, depth, units)


#: What :func:`run` writes into its folder before ``config.yaml``: a folder holding nothing else is a run that
#: stopped before its config was written (or a new one).
BEFORE_CONFIG = (RUN_LOCK, "split.json")
#: The sections every run config has (:data:`lgeseg.config.RUN_DEFAULTS`): what tells a run's ``config.yaml``.
_RUN_SECTIONS = ("seed", "split", "model", "train")


def stored_run_config(out: Path) -> dict | None:
    """The run config a run folder holds in ``config.yaml``; None for a new or empty folder (or one a run left
    before it wrote its config, :data:`BEFORE_CONFIG`). Nothing in a folder that is not a run folder is ever
    overwritten: such a folder is refused.

    Raises:
        TrainingError: ``out`` is a file or lies below one; ``out`` holds files but no ``config.yaml``; or its
            ``config.yaml`` is not a run config (unreadable YAML, or not a mapping with the sections of a run
            config). One line naming the folder or file.
    """
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out}: is a file; the output folder must be new, empty or a run folder of this tool")
    above = next((parent for parent in out.parents if parent.exists()), None)
    if above is not None and not above.is_dir():
        raise TrainingError(f"{out}: cannot be a folder: {above} is a file")
    written = out / "config.yaml"
    if not written.is_file():
        others = sorted(p.name for p in out.iterdir() if p.name not in BEFORE_CONFIG) if out.is_dir() else []
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise TrainingError(
                f"{out}: not a run folder (no config.yaml; it holds {shown}); nothing there is overwritten: use a "
                f"new or empty output folder"
            )
        return None
    try:
        stored = safe_load(written.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"{written}: is not a run config (unreadable: {reason}), so {out} is not a run folder; use a new or "
            f"empty output folder"
        ) from None
    if not (isinstance(stored, dict) and all(key in stored for key in _RUN_SECTIONS)):
        what = (
            f"a mapping without {', '.join(k for k in _RUN_SECTIONS if k not in stored)}"
            if isinstance(stored, dict)
            else f"a {type(stored).__name__}, not a mapping"
        )
        raise TrainingError(
            f"{written}: is not a run config ({what}), so {out} is not a run folder; use a new or empty output folder"
        )
    return stored


def _finished_run(out: Path, config: dict) -> RunResult | None:
    """The run already finished in ``out`` with the same config, read back; None when there is none."""
    info_path = out / "run.json"
    if info_path.exists() and (out / "metrics.json").exists():
        info = json.loads(info_path.read_text())
        if info.get("finished") and info.get("config_hash") == config_hash(config):
            return read_run_folder(out)
    return None


def _selected_network(config: dict, result) -> tuple[torch.nn.Module, int]:
    """The network ``train.select`` picks from a finished fit (the final one, or the best on validation
    accuracy) and its epoch (1-based)."""
    model = result.model
    if config["train"]["select"] == "best_val":
        model.load_state_dict(result.best_state)
        return model, result.best_epoch
    return model, len(result.history)


def _evaluate_splits(
    config: dict, model: torch.nn.Module, trained_on: Dataset, dataset: Dataset, split: Split, units: FieldUnits
) -> dict[str, tuple[np.ndarray, dict]]:
    """Predictions (N, H, W label indices, cropped back to the original size) and metrics
    (:func:`lgeseg.metrics.evaluate` beside :func:`lgeseg.field_metrics.field_section`) of the test and
    validation splits: ``{"test": (pred, metrics), "val": ...}``."""
    height, width = dataset.images.shape[1:]
    device = next(model.parameters()).device
    classes = list(dataset.labels)
    outputs = {}
    for name in ("test", "val"):
        idx = getattr(split, name)
        x = torch.from_numpy(trained_on.images[idx]).unsqueeze(1).to(device)
        pred = crop(predict(model, x, config["train"]["precision"]).cpu().numpy(), height, width)
        metrics = evaluate(pred, dataset.masks[idx], classes, [dataset.files[i] for i in idx])
        extra = field_section(
            config["metrics"], dataset.files, dataset.patients, units, idx, pred, dataset.masks[idx], classes
        )
        outputs[name] = (pred, {**metrics, **extra})
    return outputs


def _baseline(dataset: Dataset, split: Split) -> dict[str, dict]:
    """The floor a network must clearly beat: the training split's majority class predicted everywhere,
    scored on the validation and test splits (:func:`lgeseg.metrics.trivial_baseline`)."""
    classes = list(dataset.labels)
    majority = majority_class(dataset.masks[split.train], len(classes))
    return {name: trivial_baseline(dataset.masks[getattr(split, name)], classes, majority) for name in ("val", "test")}


def _read_history(path: Path, text: str, epochs_run: Any) -> list[dict]:
    """``history.csv`` (``path``, read as ``text``) of a finished run: one row per epoch run (epochs 1 to
    ``epochs_run`` of ``run.json``, in order), each with every :data:`lgeseg.train.HISTORY_FIELDS` column
    and a finite ``val_accuracy``.

    Raises:
        DataError: a missing column, a cell that is not a number, a missing, repeated or extra epoch, or a
            ``val_accuracy`` that is not finite; one line naming the file and the first fault.
    """
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    columns = reader.fieldnames or []
    lacking = [name for name in HISTORY_FIELDS if name not in columns]
    if lacking:
        raise DataError(f"{path}: no {', '.join(lacking)} column (header {','.join(columns) or 'empty'})")
    history = []
    for line, row in enumerate(rows, start=2):
        try:
            history.append({k: (int(row[k]) if k == "epoch" else float(row[k])) for k in columns})
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {line} is not a row of {len(columns)} numbers") from None
    if not isinstance(epochs_run, int) or isinstance(epochs_run, bool) or epochs_run < 1:
        raise DataError(f"{path.parent / 'run.json'}: epochs_run is {epochs_run!r}, not a number of epochs")
    epochs = [row["epoch"] for row in history]
    if epochs != list(range(1, epochs_run + 1)):
        raise DataError(
            f"{path}: holds epochs {_spans(epochs) or 'none'}, not one row for each epoch run (1-{epochs_run}, "
            "run.json's epochs_run): damaged or cut short"
        )
    bad = next((row for row in history if not math.isfinite(row["val_accuracy"])), None)
    if bad is not None:
        raise DataError(f"{path}: val_accuracy of epoch {bad['epoch']} is {bad['val_accuracy']}, not an accuracy")
    return history


def _spans(numbers: list[int]) -> str:
    """``1-3,5`` for ``[1, 2, 3, 5]``: the epochs a history holds, in file order."""
    parts: list[list[int]] = []
    for n in numbers:
        if parts and n == parts[-1][-1] + 1:
            parts[-1].append(n)
        else:
            parts.append([n])
    return ",".join(f"{p[0]}-{p[-1]}" if len(p) > 1 else f"{p[0]}" for p in parts)


def read_run_folder(out_dir: str | Path) -> RunResult:
    """A finished run folder as :func:`run` wrote it (:data:`RUN_FILES`; metrics with NaN as None, as in
    the JSON files). The one reader of that format: ``run`` reads a finished run back with it, ``record``
    (:mod:`hpo.recording`) brings run folders into a study with it.

    The run's not-learning warnings (:mod:`lgeseg.diagnostics`) go to this module's logger each time.

    Raises:
        DataError: the folder or one of :data:`RUN_FILES` is missing or unreadable, ``run.json`` does not say
            the run finished, ``config.yaml`` is not the config ``run.json`` was written for, or ``history.csv``
            does not hold one row per epoch run with a finite ``val_accuracy``; one line naming the folder or
            file.
    """
    out = Path(out_dir).expanduser()
    if not out.is_dir():
        raise DataError(f"{out_dir}: run folder not found")
    missing = [name for name in RUN_FILES if not (out / name).is_file()]
    if missing:
        raise DataError(f"{out_dir}: not a finished train run ({', '.join(missing)} missing)")
    try:
        info = json.loads((out / "run.json").read_text())
        config = safe_load((out / "config.yaml").read_text())
        history_text = (out / "history.csv").read_text()
        metrics = [json.loads((out / name).read_text()) for name in ("metrics.json", "val_metrics.json", "split.json")]
    except (OSError, ValueError) as exc:
        raise DataError(f"{out_dir}: unreadable run file ({str(exc).splitlines()[0]})") from None
    if not info.get("finished"):
        raise DataError(f"{out_dir}: not a finished train run (run.json does not say finished)")
    if info.get("config_hash") != config_hash(config):
        raise DataError(f"{out_dir}: config.yaml is not the config run.json was written for")
    history = _read_history(out / "history.csv", history_text, info.get("epochs_run"))
    result = RunResult(out, metrics[0], metrics[1], history, info, config, metrics[2])
    for line in info.get("warnings", []):
        logger.warning("%s: %s", out, line)
    return result


__all__ = ["BEFORE_CONFIG", "RUN_FILES", "RunResult", "read_run_folder", "run", "stored_run_config", "versions"]
