"""Shared test fixtures: tiny synthetic datasets (on disk and in memory), tiny run configs, real-data path.

Everything here is generic and cheap, so any test module may use it:

* ``LGESEG_CACHE`` points at a session temp folder (autouse), so the built-in synthetic phantom is never
  written to ``~/.cache``;
* :func:`make_dataset_dir` (fixture returning a factory) writes a dataset folder in the export format
  (``images/*.png``, ``masks/*.png``, ``manifest.csv`` with patients, optional ``dataset.json``);
  :func:`tiny_data_dir` is one such folder shared by the session (8 patients x 3 slices of 16x16);
* :func:`make_dataset` (factory) builds a :class:`lgeseg.data.Dataset` straight from arrays;
* :func:`tiny_run_config` (factory) is a valid run config for a width-4, depth-2 U-Net on the CPU that
  trains in well under a second per epoch; keyword overrides use dotted keys (``train__epochs=3`` or
  ``{"train.epochs": 3}``);
* :data:`REAL_DATA` / :func:`real_data_dir`: the EMIDEC export at ``../shared/data/emidec-lge-128`` (or
  ``$LGESEG_REAL_DATA``); the fixture skips with the path in the reason when it is absent.
* :func:`tiny_train_args` / :func:`tiny_config_args`: the ``train`` command line of a tiny run; :data:`RUN_OUTPUTS`:
  what a finished run writes; :func:`copy_test_split`: a split's test slices in folders of their own;
* :func:`tiny_study` (layers merged by :func:`merge_sections`, e.g. :data:`RECORD_STUDY`): a tiny grid study config;
* stand-ins for Ray Tune (:func:`tune_trial_stub`, :func:`epoch_result`, :func:`finished_result`,
  :func:`report_results`, :func:`drive_recorder`), to drive the Optuna recorder without a cluster.

Tiny models: images must have sides divisible by ``2**depth`` (4 for depth 2).

Torch runs single-threaded in tests (``OMP_NUM_THREADS=1`` unless already set): tiny models gain nothing
from threads, and on a small, busy machine intra-op threads make them 10-100x slower.
"""

from __future__ import annotations

import copy
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported by any test module

#: The real EMIDEC export (708 128x128 slices of 100 patients), if present.
REAL_DATA = Path(
    os.environ.get("LGESEG_REAL_DATA") or Path(__file__).resolve().parents[1].parent / "shared/data/emidec-lge-128"
)

#: The study's default label map (the same as :data:`lgeseg.data.DEFAULT_LABELS`).
TEST_LABELS = {"region1": 255, "region2": 128, "region3": 0}


@pytest.fixture(scope="session", autouse=True)
def _lgeseg_cache(tmp_path_factory):
    """Keep the phantom cache out of the home folder for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LGESEG_CACHE", str(tmp_path_factory.mktemp("lgeseg-cache")))
        yield


def synthetic_arrays(n: int, size: int | tuple[int, int] = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` learnable image/mask pairs: a bright disk (class 0) in a dark ring (class 2) on grey (class 1).

    ``size`` is the side of square images or ``(height, width)``. Returns float32 images (n, H, W) in
    [0, 1] and uint8 class indices (n, H, W) in :data:`TEST_LABELS` order. Centres and radii vary per
    image; images carry mild noise.
    """
    rng = np.random.default_rng(seed)
    height, width = (size, size) if isinstance(size, int) else size
    side = min(height, width)
    yy, xx = np.mgrid[:height, :width]
    images = np.empty((n, height, width), np.float32)
    masks = np.empty((n, height, width), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * (height, width)
        r_in = rng.uniform(side * 0.12, side * 0.2)
        r_out = r_in + rng.uniform(side * 0.08, side * 0.15)
        d = np.hypot(yy - cy, xx - cx)
        mask = np.full((height, width), 1, np.uint8)
        mask[d < r_out] = 2
        mask[d < r_in] = 0
        level = np.array([0.85, 0.45, 0.1], np.float32)[mask]
        images[i] = np.clip(level + rng.normal(0, 0.05, (height, width)), 0, 1)
        masks[i] = mask
    return images, masks


def write_dataset_dir(
    root: Path,
    n_patients: int = 8,
    slices: int = 3,
    size: int | tuple[int, int] = 16,
    seed: int = 0,
    labels: dict[str, int] | None = None,
    manifest: bool = True,
) -> Path:
    """Write a dataset folder with ``n_patients * slices`` PNG pairs named ``p<PP>_s<S>.png``.

    ``labels`` (name -> pixel value, class order) is written to ``dataset.json`` when given; otherwise
    the masks use :data:`TEST_LABELS`, which is the loader's default. Returns ``root``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    label_map = labels or TEST_LABELS
    values = np.array(list(label_map.values()), np.uint8)
    n = n_patients * slices
    images, masks = synthetic_arrays(n, size, seed)
    rows = []
    for i in range(n):
        name = f"p{i // slices:02d}_s{i % slices}.png"
        Image.fromarray(np.round(images[i] * 255).astype(np.uint8), mode="L").save(root / "images" / name)
        Image.fromarray(values[masks[i] % len(values)], mode="L").save(root / "masks" / name)
        rows.append((name, f"patient{i // slices:02d}"))
    if manifest:
        with (root / "manifest.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(("file", "patient"))
            writer.writerows(rows)
    if labels is not None:
        (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


@pytest.fixture
def make_dataset_dir(tmp_path):
    """Factory: ``make_dataset_dir(name="data", **write_dataset_dir kwargs)`` -> a fresh dataset folder."""

    def make(name: str = "data", **kwargs) -> Path:
        return write_dataset_dir(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A read-only dataset folder for the session: 8 patients x 3 slices, 16x16, default labels, manifest.

    Do not write into it; use :func:`make_dataset_dir` for a folder of your own.
    """
    return write_dataset_dir(tmp_path_factory.mktemp("tiny") / "data")


def build_dataset(
    n: int = 24,
    size: int = 16,
    seed: int = 0,
    slices_per_patient: int | None = 3,
    images: np.ndarray | None = None,
    masks: np.ndarray | None = None,
):
    """An in-memory :class:`lgeseg.data.Dataset` (``slices_per_patient=None``: no patients, split by image)."""
    from lgeseg.data import Dataset

    if images is None or masks is None:
        images, masks = synthetic_arrays(n, size, seed)
    n = len(images)
    files = [f"img{i:03d}.png" for i in range(n)]
    patients = None if slices_per_patient is None else [f"patient{i // slices_per_patient:02d}" for i in range(n)]
    return Dataset(
        root=Path("/nonexistent/in-memory"),
        files=files,
        images=np.ascontiguousarray(images, np.float32),
        masks=np.ascontiguousarray(masks, np.uint8),
        labels=dict(TEST_LABELS),
        patients=patients,
        synthetic=False,
    )


@pytest.fixture
def make_dataset():
    """Factory: ``make_dataset(n=24, size=16, seed=0, slices_per_patient=3, images=None, masks=None)``."""
    return build_dataset


def tiny_config(values: dict | None = None, **dotted) -> dict:
    """A validated run config for a tiny CPU run (width 4, depth 2, 2 epochs, batch 4, fp32).

    ``values`` is merged section-wise; ``dotted`` keyword overrides use ``__`` for dots
    (``train__epochs=3``, ``train__augment__translate=0``).
    """
    from lgeseg.config import run_config

    base = {
        "seed": 0,
        "model": {"width": 4, "depth": 2},
        "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "precision": "fp32", "channels_last": False},
    }
    config = copy.deepcopy(base)
    for key, value in {**(values or {}), **{k.replace("__", "."): v for k, v in dotted.items()}}.items():
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = value
    return run_config(config)


@pytest.fixture
def tiny_run_config():
    """Factory: see :func:`tiny_config`."""
    return tiny_config


#: The files every finished run writes into its folder (lgeseg.run.run, a grid trial), besides ``predictions/``: the
#: tests' own list, checkpoints included (lgeseg.run.RUN_FILES is the part its reader needs).
RUN_OUTPUTS = (
    "metrics.json",
    "val_metrics.json",
    "history.csv",
    "split.json",
    "config.yaml",
    "best.pt",
    "last.pt",
    "run.json",
)


def copy_test_split(data: Path, names, images: Path, truth: Path, meta: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Copy the slices ``names`` (a run's ``split.json`` test list) of the dataset folder ``data``: their images into
    the new folder ``images``, their masks into the new folder ``truth``, with the files ``meta`` of ``data``
    (``manifest.csv`` for the patients, ``dataset.json`` for the label map) beside the masks.
    Returns ``(images, truth)``."""
    import shutil

    for folder, sub in ((images, "images"), (truth, "masks")):
        folder.mkdir()
        for name in names:
            shutil.copy(Path(data) / sub / name, folder / name)
    for name in meta:
        shutil.copy(Path(data) / name, truth / name)
    return images, truth


def tiny_train_args(epochs: int = 1) -> list[str]:
    """``python -m hpo.run train`` options for a tiny CPU run: width 4, depth 2, batch 4, ``epochs`` epochs.

    Later options on the same command line override these (``--set`` of the same key).
    """
    return [
        "--width",
        "4",
        "--epochs",
        str(epochs),
        "--set",
        "model.depth=2",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.device=cpu",
    ]


def tiny_config_args(epochs: int = 1) -> list[str]:
    """:func:`tiny_train_args` plus fp32 and channels_last off: the command-line spelling of
    ``tiny_config(train__epochs=epochs)``, for tests that run ``train`` on a run folder :func:`tiny_config` made
    (a resumed or checked run must be the same run)."""
    return [*tiny_train_args(epochs), "--set", "train.precision=fp32", "--set", "train.channels_last=false"]


def merge_sections(values: dict, *layers: dict) -> dict:
    """``values`` with each layer merged in turn, section by section: a dict value updates that section (a new
    section is added), any other value replaces it. Returns a new dict; ``values`` is not changed."""
    merged = copy.deepcopy(values)
    for layer in layers:
        for key, value in layer.items():
            value = copy.deepcopy(value)
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


#: The three L2 values of the record tests' grid.
RECORD_L2S = (5e-3, 5e-4, 5e-5)
#: The study of the record tests (tests/hpo/test_record_cli.py, tests/e2e/test_record_grid.py), a layer for
#: :func:`tiny_study`: study ``rec`` over :data:`RECORD_L2S`, without reruns.
RECORD_STUDY = {"name": "rec", "grid": {"l2": list(RECORD_L2S)}, "retune": {"max_reruns": 0, "adjustments": []}}


def tiny_study(data_dir: Path | str, *layers: dict, **sections) -> dict:
    """A validated grid study config named ``tiny`` for tiny U-Nets on ``data_dir`` (one CPU per trial).

    Width 4, depth 2, 2 epochs of batch 8 at learning rate 1e-3, seed 0, L2 grid ``[5e-3, 5e-5]``; the retune
    rule checks at half the epochs with target 0 (it never fires unless a test raises the target) and allows
    2 reruns with two adjustments. ``layers`` (dicts), then ``sections`` (keyword per section) are merged in
    with :func:`merge_sections`, e.g. ``tiny_study(data, train={"epochs": 6}, grid={"l2": [5e-4]})``.
    """
    from hpo.study_config import study_config

    base = {
        "name": "tiny",
        "data": str(data_dir),
        "seeds": [0],
        "model": {"width": 4, "depth": 2},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3},
        "grid": {"l2": [5e-3, 5e-5]},
        "retune": {
            "check_fraction": 0.5,
            "target_accuracy": 0.0,
            "max_reruns": 2,
            "adjustments": [{"learning_rate": 3e-3}, {"batch_size": 4, "learning_rate": 1e-4}],
        },
        "resources": {"gpu": 0, "cpu": 1},
    }
    return study_config(merge_sections(base, *layers, sections))


@pytest.fixture
def real_data_dir() -> Path:
    """The real EMIDEC export; skips (with the path it looked at) when absent."""
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set LGESEG_REAL_DATA)")
    return REAL_DATA


@pytest.fixture
def one_line_error(capsys):
    """Run ``python -m hpo.run`` in-process expecting a user error; returns its one ``error:`` line.

    Asserts what every bad input must give: exit status 2, exactly one ``error:`` line on stderr, no
    traceback. ``warning:`` lines said before it (e.g. that a busy database is being waited for) are
    allowed; nothing else is.
    """
    import hpo.run

    def run(argv: list[str]) -> str:
        code = hpo.run.main(argv)
        err = capsys.readouterr().err
        assert code == 2, err
        lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
        assert len(lines) == 1, err
        assert lines[0].startswith("error: ") and "Traceback" not in err
        assert err.strip().splitlines()[-1] == lines[0], err  # the error comes last
        return lines[0]

    return run


@pytest.fixture(scope="module")
def ray_cluster():
    """A small local Ray for a test module's grid and search runs: 2 CPUs, no dashboard, a capped object store."""
    import ray

    if ray.is_initialized():  # a test that touched Ray's API without a cluster started one: not this one
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        configure_logging=False,
    )
    yield
    ray.shutdown()


def sqlite_study_ready(db: Path, studies: int = 1) -> bool:
    """Whether a driver has finished creating the Optuna schema and ``studies`` studies in the SQLite file ``db``.

    Tests that watch a running driver read its storage only then: opening an Optuna RDB storage creates
    the tables it misses, so a reader racing the driver's own creation breaks it ("table ... already exists").
    Reads the file read-only, with sqlite3 alone.
    """
    import contextlib
    import sqlite3

    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as connection:
            versions = connection.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
            created = connection.execute("SELECT count(*) FROM studies").fetchone()[0]
    except sqlite3.Error:
        return False
    return versions > 0 and created >= studies


def grid_attempt(l2: float, seed: int, rerun: int = 0, optuna_number: int | None = None, **axes):
    """The :class:`hpo.record.Attempt` of a grid point: ``train.l2`` = ``l2``, then ``axes`` as dotted keys
    (``model.architecture``, ``train.loss``), replicate ``seed``."""
    from hpo.record import Attempt, Configuration, Replicate

    configuration = Configuration((("train.l2", l2), *axes.items()))
    return Attempt(configuration, Replicate(seed), rerun, optuna_number)


def grid_plan(config: dict, trials) -> dict:
    """A grid study's resume plan by point (:attr:`hpo.record.Attempt.point`) -> :class:`hpo.record.ReplicatePlan`."""
    from hpo.record import plan_study
    from hpo.study_config import grid_configurations, replicates

    plans = plan_study(grid_configurations(config), replicates(config), trials, config["retune"]["max_reruns"])
    return {step.first.point: step for p in plans for step in p.replicates.values()}


def tune_trial_stub(trial_id: str, config: dict, error: str | None = None):
    """A stand-in for a Ray Tune trial as :class:`hpo.recorder.OptunaRecorder` and the progress printer see one:
    ``trial_id``, ``config`` (a trainable's config, e.g. :func:`hpo.study.trial_config`'s), ``last_result``
    (``{}`` until results come) and ``get_error()``: a ``RuntimeError`` whose text is ``error``, or None."""
    from types import SimpleNamespace

    return SimpleNamespace(
        trial_id=trial_id,
        config=config,
        last_result={},
        get_error=lambda: None if error is None else RuntimeError(error),
    )


def epoch_result(epoch: int, epochs: int, accuracy: float) -> dict:
    """The result a trainable reports after ``epoch`` of ``epochs``: validation accuracy ``accuracy``, which is also
    the best so far."""
    return {"epoch": epoch, "epochs": epochs, "val_accuracy": accuracy, "best_val_accuracy": accuracy}


def finished_result(epochs: int, val_miou: float | None, test_miou: float, wall_time_s: float = 1.0) -> dict:
    """A finished run's last result after ``epochs`` epochs (validation accuracy 0.95, the best, at the last
    epoch): validation MeanIoU ``val_miou`` (the study's value), test MeanIoU ``test_miou`` and a run_info."""
    info = {
        "epochs_run": epochs,
        "best_val_accuracy": 0.95,
        "selected_epoch": epochs,
        "device": "cpu",
        "wall_time_s": wall_time_s,
        "split_hash": "abc",
        "versions": {"torch": "x"},
    }
    return {
        "epoch": epochs,
        "epochs": epochs,
        "finished": True,
        "val_accuracy": 0.95,
        "best_val_accuracy": 0.95,
        "val_MeanIoU": val_miou,
        "val_metrics": {"MeanIoU": val_miou},
        "test_metrics": {"dataset": {"MeanIoU": test_miou}},
        "run_info": info,
    }


def report_results(recorder, trial, results) -> None:
    """Give ``recorder`` each result of ``trial`` as Tune does: ``on_trial_result``, then it is the trial's
    ``last_result``."""
    for result in results:
        recorder.on_trial_result(0, [], trial, result)
        trial.last_result = result


def drive_recorder(recorder, trial, results) -> None:
    """One whole trial through ``recorder`` as Tune calls it: start, :func:`report_results`, complete."""
    recorder.on_trial_start(0, [], trial)
    report_results(recorder, trial, results)
    recorder.on_trial_complete(0, [], trial)


def trial_record(number: int, **fields):
    """A finished :class:`dashboards.load.TrialRecord` for report tests: ``fields`` override the defaults
    (one seed-0 trial at L2 1e-3, batch 4, one epoch, validation value 0.5, no folder)."""
    from dashboards.load import TrialRecord

    values = {
        "state": "COMPLETE",
        "name": f"t{number}",
        "l2": 1e-3,
        "seed": 0,
        "learning_rate": 1e-3,
        "batch_size": 4,
        "epochs": 1,
        "rerun": 0,
        "value": 0.5,
        "curve": {1: 0.5},
        "test_metrics": None,
        "val_metrics": None,
        "trial_dir": None,
        "epochs_run": 1,
        "best_val_accuracy": 0.5,
    }
    return TrialRecord(number=number, **{**values, **fields})
