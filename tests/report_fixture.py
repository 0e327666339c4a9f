"""A small finished grid study built without training, for the report tests.

Six 16x16 test images with three nested-square regions; each (L2, seed) "network" is the manual mask
with pixels flipped at a rate that grows with L2, so L2=5e-05 wins. Metrics come from
:func:`lgeseg.metrics.evaluate` on those masks, so the storage, the trial folders and the PNGs agree.
One grid point (L2=0.005, seed 1) is retuned: a PRUNED attempt replaced by a COMPLETE rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from PIL import Image

from lgeseg.png import write_mask
from lgeseg.metrics import evaluate, write_json

LABELS: dict[str, int] = {"region1": 255, "region2": 128, "region3": 0}
L2_VALUES: tuple[float, ...] = (5e-05, 5e-04, 5e-03)
SEEDS: tuple[int, ...] = (0, 1)
FLIP_RATE: dict[float, float] = {5e-05: 0.04, 5e-04: 0.10, 5e-03: 0.22}
EPOCHS = 6
CHECK_FRACTION = 0.5
TARGET_ACCURACY = 0.8
SIZE = 16
N_IMAGES = 6

DISTRIBUTIONS = {
    "l2": FloatDistribution(1e-6, 1e-1, log=True),
    "learning_rate": FloatDistribution(1e-5, 1e-1, log=True),
    "batch_size": IntDistribution(1, 64),
    "epochs": IntDistribution(1, 1000),
    "seed": IntDistribution(0, 1000),
    "rerun": IntDistribution(0, 10),
}


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
    mask[o:o + 10, o:o + 9] = 1
    mask[o + 3:o + 7, o + 2:o + 6 + index % 2] = 0
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
    return {e: round(final * (1 - 0.5 ** e), 6) for e in range(1, epochs + 1)}


def _history(path: Path, curve: dict[int, float]) -> None:
    lines = ["epoch,train_loss,train_accuracy,val_loss,val_accuracy"]
    lines += [f"{e},{1 - a:.6f},{a:.6f},{1 - a:.6f},{a:.6f}" for e, a in curve.items()]
    path.write_text("\n".join(lines) + "\n")


def _trial_folder(fx: StudyFixture, name: str, preds: dict[str, np.ndarray] | None,
                  curve: dict[int, float]) -> tuple[Path, dict[str, Any] | None]:
    """Write a trial folder; with ``preds`` also predictions and metrics.json (returned as read back)."""
    folder = fx.out_dir / "trials" / name
    folder.mkdir(parents=True, exist_ok=True)
    _history(folder / "history.csv", curve)
    if preds is None:
        return folder, None
    for file, mask in preds.items():
        write_mask(folder / "predictions" / file, mask, LABELS)
    result = evaluate(np.stack([preds[f] for f in fx.files]), np.stack([fx.truth[f] for f in fx.files]),
                      list(LABELS), fx.files)
    write_json(result, folder / "metrics.json")
    return folder, json.loads((folder / "metrics.json").read_text())


def _params(l2: float, seed: int, rerun: int) -> dict[str, Any]:
    return {"l2": l2, "learning_rate": 1e-3, "batch_size": 4, "epochs": EPOCHS, "seed": seed, "rerun": rerun}


def _add(study: optuna.Study, state: optuna.trial.TrialState, params: dict[str, Any], attrs: dict[str, Any],
         curve: dict[int, float], value: float | None = None) -> int:
    trial = optuna.trial.create_trial(state=state, value=value, params=params, distributions=DISTRIBUTIONS,
                                      user_attrs=attrs, intermediate_values=curve)
    study.add_trial(trial)
    return study.trials[-1].number


def build_study(tmp_path: Path, *, running: bool = False, finished: bool = True,
                synthetic: bool = True, name: str = "l2demo") -> StudyFixture:
    """Create the study in ``tmp_path/runs/<name>/study.db`` and its folders; see the module docstring.

    ``running`` adds a RUNNING trial with two epochs and only ``history.csv``; ``finished=False`` leaves
    out every finished trial (a study that has just started).
    """
    root = tmp_path / "runs" / name
    root.mkdir(parents=True)
    data_dir = tmp_path / "data"
    files, truth = make_dataset(data_dir)
    fx = StudyFixture(f"sqlite:///{root / 'study.db'}", name, root, data_dir, root, files, truth)
    study = optuna.create_study(study_name=name, storage=fx.storage, direction="maximize")
    config = {"name": name, "seeds": list(SEEDS), "train": {"epochs": EPOCHS}, "grid": {"l2": list(L2_VALUES)},
              "retune": {"check_fraction": CHECK_FRACTION, "target_accuracy": TARGET_ACCURACY,
                         "max_reruns": 2, "adjustments": [{"learning_rate": 0.5}]}}
    for key, value in {"config": config, "out_dir": str(root), "data_dir": str(data_dir), "labels": LABELS,
                       "synthetic": synthetic}.items():
        study.set_user_attr(key, value)
    complete = optuna.trial.TrialState.COMPLETE
    for l2 in L2_VALUES if finished else ():
        for seed in SEEDS:
            point = f"l2={l2:g},seed={seed}"
            rerun_of = None
            if (l2, seed) == (5e-03, 1):
                name_p = f"l2={l2:g}_seed={seed}_rerun=0"
                curve = _curve(0.5, 3)
                folder, _ = _trial_folder(fx, name_p, None, curve)
                rerun_of = fx.pruned_number = _add(study, optuna.trial.TrialState.PRUNED, _params(l2, seed, 0), {
                    "trial_dir": str(folder), "trial_name": name_p, "epochs_run": 3, "best_val_accuracy": 0.5,
                    "lineage": {"point": point, "rerun": 0, "rerun_of": None, "adjustment": None},
                    "retune": {"reason": "val accuracy 0.5 < 0.8 at epoch 3", "check_epoch": 3,
                               "best_val_accuracy": 0.5, "replaced_by": len(study.trials) + 1}}, curve)
            rerun = 0 if rerun_of is None else 1
            trial_name = f"l2={l2:g}_seed={seed}_rerun={rerun}"
            preds = _predict(truth, l2, seed)
            curve = _curve(1 - FLIP_RATE[l2] / 2, EPOCHS)
            folder, metrics = _trial_folder(fx, trial_name, preds, curve)
            assert metrics is not None
            number = _add(study, complete, _params(l2, seed, rerun), {
                "trial_dir": str(folder), "trial_name": trial_name, "test_metrics": metrics,
                "val_metrics": metrics["dataset"], "epochs_run": EPOCHS, "best_val_accuracy": max(curve.values()),
                "lineage": {"point": point, "rerun": rerun, "rerun_of": rerun_of,
                            "adjustment": None if rerun_of is None else {"learning_rate": 5e-4}}},
                curve, value=metrics["dataset"]["MeanIoU"])
            fx.preds[(l2, seed)], fx.metrics[(l2, seed)] = preds, metrics
            if rerun_of is not None:
                fx.replacement_number = number
    if running:
        study.enqueue_trial(_params(5e-05, 2, 0))
        trial = study.ask(DISTRIBUTIONS)
        trial_name = "l2=5e-05_seed=2_rerun=0"
        curve = _curve(0.9, 2)
        folder, _ = _trial_folder(fx, trial_name, None, curve)
        trial.set_user_attr("trial_dir", str(folder))
        trial.set_user_attr("trial_name", trial_name)
        for step, value in curve.items():
            trial.report(value, step)
    return fx
