"""A small finished grid study built without training, for the report tests.

Six 16x16 test images with three nested-square regions; each (L2, seed) "network" is the manual mask
with pixels flipped at a rate that grows with L2, so L2=5e-05 wins. Metrics come from
:func:`lgeseg.metrics.evaluate` on those masks, so the storage, the trial folders and the PNGs agree.
One grid point (L2=0.005, seed 1) is retuned: a PRUNED attempt replaced by a COMPLETE rerun. The Optuna
record is written by the grid's real recorder, driven with the results Tune trials would report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from conftest import grid_attempt as Attempt
from conftest import tune_trial_stub
from PIL import Image

from hpo.recorder import OptunaRecorder
from hpo.rule import RetuneRule
from hpo.storage import start_study
from hpo.study import trial_config
from hpo.study_config import study_config
from lgeseg.metrics import evaluate, write_json
from lgeseg.png import write_mask

LABELS: dict[str, int] = {"region1": 255, "region2": 128, "region3": 0}
L2_VALUES: tuple[float, ...] = (5e-05, 5e-04, 5e-03)
SEEDS: tuple[int, ...] = (0, 1)
FLIP_RATE: dict[float, float] = {5e-05: 0.04, 5e-04: 0.10, 5e-03: 0.22}
EPOCHS = 6
CHECK_FRACTION = 0.5
TARGET_ACCURACY = 0.8
SIZE = 16
N_IMAGES = 6


@dataclass
class StudyFixture:
    """Where the fake study lives and what went into it, for the tests to compare against."""

    storage: str
    name: str
    root: Path
    data_dir: Path
    out_dir: Path
    files: list[str]
    truth: dict[str, np.ndarray]
    #: (l2, seed) -> predicted class-index masks by file, of the COMPLETE trial of that point
    preds: dict[tuple[float, int], dict[str, np.ndarray]] = field(default_factory=dict)
    #: (l2, seed) -> test metrics dict of the COMPLETE trial of that point
    metrics: dict[tuple[float, int], dict[str, Any]] = field(default_factory=dict)
    pruned_number: int = -1
    replacement_number: int = -1


def _truth_mask(index: int) -> np.ndarray:
    """Nested squares (region3 background, region2 outer, region1 inner) shifted per image."""
    mask = np.full((SIZE, SIZE), 2, dtype=np.uint8)
    o = 2 + index % 3
    mask[o : o + 10, o : o + 9] = 1
    mask[o + 3 : o + 7, o + 2 : o + 6 + index % 2] = 0
    return mask


def make_dataset(root: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Write ``images/``, ``masks/`` and ``dataset.json`` under ``root``; return files and class masks."""
    rng = np.random.default_rng(123)
    files, truth = [], {}
    for i in range(N_IMAGES):
        file = f"case{i:02d}.png"
        mask = _truth_mask(i)
        image = np.asarray([230, 140, 30], dtype=float)[mask] + rng.normal(0, 12, mask.shape)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(root / "images" / file)
        write_mask(root / "masks" / file, mask, LABELS)
        files.append(file)
        truth[file] = mask
    (root / "dataset.json").write_text(json.dumps({"labels": LABELS}))
    return files, truth


def _predict(truth: dict[str, np.ndarray], l2: float, seed: int) -> dict[str, np.ndarray]:
    """Manual masks with pixels flipped to another class at the L2's rate (per-image varying)."""
    rng = np.random.default_rng([int(round(l2 * 1e6)), seed])
    preds = {}
    for i, (file, mask) in enumerate(sorted(truth.items())):
        rate = FLIP_RATE[l2] * (0.5 + i / N_IMAGES)
        flip = rng.random(mask.shape) < rate
        preds[file] = np.where(flip, (mask + rng.integers(1, 3, mask.shape)) % 3, mask).astype(np.uint8)
    return preds


def _curve(final: float, epochs: int) -> dict[int, float]:
    """Validation accuracy rising to ``final``; a curve of a finished trial passes the check epoch."""
    return {e: round(final * (1 - 0.5 ** (e + 1)), 6) for e in range(1, epochs + 1)}


def _history(path: Path, curve: dict[int, float]) -> None:
    lines = ["epoch,train_loss,train_accuracy,val_loss,val_accuracy"]
    lines += [f"{e},{1 - a:.6f},{a:.6f},{1 - a:.6f},{a:.6f}" for e, a in curve.items()]
    path.write_text("\n".join(lines) + "\n")


def _trial_folder(
    fx: StudyFixture, name: str, preds: dict[str, np.ndarray] | None, curve: dict[int, float]
) -> tuple[Path, dict[str, Any] | None]:
    """Write a trial folder; with ``preds`` also predictions and metrics.json (returned as read back)."""
    folder = fx.out_dir / "trials" / name
    folder.mkdir(parents=True, exist_ok=True)
    _history(folder / "history.csv", curve)
    if preds is None:
        return folder, None
    for file, mask in preds.items():
        write_mask(folder / "predictions" / file, mask, LABELS)
    result = evaluate(
        np.stack([preds[f] for f in fx.files]), np.stack([fx.truth[f] for f in fx.files]), list(LABELS), fx.files
    )
    write_json(result, folder / "metrics.json")
    return folder, json.loads((folder / "metrics.json").read_text())


def _tune_trial(config: dict[str, Any], attempt: Attempt, out_dir: Path, trial_id: str) -> SimpleNamespace:
    """A stand-in for a Ray Tune trial of ``attempt``, as :class:`~hpo.recorder.OptunaRecorder` sees one."""
    return tune_trial_stub(trial_id, trial_config(config, attempt, out_dir))


def _run(
    recorder: OptunaRecorder, trial: SimpleNamespace, curve: dict[int, float], final: dict[str, Any] | None
) -> None:
    """Drive ``trial`` through the recorder as the trainable reports it: one result per epoch, then the
    finished run's result (``final``), then Tune's completion; without ``final`` the trial stays RUNNING."""
    recorder.on_trial_start(0, [], trial)
    best = 0.0
    for epoch, accuracy in curve.items():
        best = max(best, accuracy)
        result = {"epoch": epoch, "epochs": EPOCHS, "val_accuracy": accuracy, "best_val_accuracy": best}
        recorder.on_trial_result(0, [], trial, result)
        trial.last_result = result
    if final is None and not recorder.rule.fails(trial.last_result):
        return  # still running
    if final is not None:
        trial.last_result = {
            "epoch": EPOCHS,
            "epochs": EPOCHS,
            "finished": True,
            "val_accuracy": accuracy,
            "best_val_accuracy": best,
            **final,
        }
    recorder.on_trial_complete(0, [], trial)


def _finished(metrics: dict[str, Any], best: float) -> dict[str, Any]:
    """What the trainable's last report adds for a finished run (test metrics stand in for validation)."""
    info = {
        "epochs_run": EPOCHS,
        "best_val_accuracy": best,
        "selected_epoch": EPOCHS,
        "device": "cpu",
        "wall_time_s": 1.0,
        "split_hash": "fixture",
        "versions": {"lgeseg": "fixture"},
    }
    return {
        "val_MeanIoU": metrics["dataset"]["MeanIoU"],
        "val_metrics": metrics["dataset"],
        "test_metrics": metrics,
        "run_info": info,
    }


def _number(study: Any, trial_name: str) -> int:
    """The Optuna number of the trial the recorder named ``trial_name``."""
    return next(t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("trial_name") == trial_name)


def build_study(
    tmp_path: Path, *, running: bool = False, finished: bool = True, synthetic: bool = True, name: str = "l2demo"
) -> StudyFixture:
    """Create the study in ``tmp_path/runs/<name>/study.db`` and its folders; see the module docstring.

    Every trial is written by the grid's own :class:`~hpo.recorder.OptunaRecorder` from the results a
    Tune trial would report, so the user attrs (``replaced_by``, ``lineage``, ...) are what real studies
    hold. ``running`` adds a RUNNING trial with two epochs and only ``history.csv``; ``finished=False``
    leaves out every finished trial (a study that has just started).
    """
    root = tmp_path / "runs" / name
    root.mkdir(parents=True)
    data_dir = tmp_path / "data"
    files, truth = make_dataset(data_dir)
    fx = StudyFixture(f"sqlite:///{root / 'study.db'}", name, root, data_dir, root, files, truth)
    config = study_config(
        {
            "name": name,
            "seeds": list(SEEDS),
            "train": {"epochs": EPOCHS, "learning_rate": 1e-3, "batch_size": 4},
            "grid": {"l2": list(L2_VALUES)},
            "retune": {
                "check_fraction": CHECK_FRACTION,
                "target_accuracy": TARGET_ACCURACY,
                "max_reruns": 2,
                "adjustments": [{"learning_rate": 5e-4}, {"learning_rate": 1e-4}],
            },
        }
    )
    study = start_study(fx.storage, name, resume=False)
    for key, value in {
        "config": config,
        "out_dir": str(root),
        "data_dir": str(data_dir),
        "labels": LABELS,
        "synthetic": synthetic,
    }.items():
        study.set_user_attr(key, value)
    rule = RetuneRule.from_config(config["retune"])
    recorder = OptunaRecorder(study, rule, config["retune"]["max_reruns"])
    for l2 in L2_VALUES if finished else ():
        for seed in SEEDS:
            attempt = Attempt(l2, seed)
            if (l2, seed) == (5e-03, 1):  # retuned: its first attempt stays below target at the check epoch
                curve = _curve(0.5, 3)
                _trial_folder(fx, attempt.name, None, curve)
                _run(recorder, _tune_trial(config, attempt, root, attempt.name), curve, None)
                fx.pruned_number = _number(study, attempt.name)
                attempt = attempt.next()
            preds = _predict(truth, l2, seed)
            curve = _curve(1 - FLIP_RATE[l2] / 2, EPOCHS)
            _, metrics = _trial_folder(fx, attempt.name, preds, curve)
            assert metrics is not None
            _run(
                recorder,
                _tune_trial(config, attempt, root, attempt.name),
                curve,
                _finished(metrics, max(curve.values())),
            )
            fx.preds[(l2, seed)], fx.metrics[(l2, seed)] = preds, metrics
            if attempt.rerun:
                fx.replacement_number = _number(study, attempt.name)
    if running:
        attempt = Attempt(5e-05, 2)
        curve = _curve(0.9, 2)
        _trial_folder(fx, attempt.name, None, curve)
        _run(recorder, _tune_trial(config, attempt, root, attempt.name), curve, None)
    recorder.close()
    return fx
