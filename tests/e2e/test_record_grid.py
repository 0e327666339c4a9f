"""Issue 21's done-when for ``record``: three ``train`` folders recorded give the report a grid of the same
three runs gives; checkpoints in the study's artifact store serve ``predict`` and optuna-dashboard once the
trial folders are gone.

The grid: 3 L2 values x seed 0, width 4, 3 epochs, on the 8 x 3 slice test dataset; the ``train`` runs use
one thread, as the grid's trials (``resources.cpu: 1``), so both give the same numbers.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import RECORD_L2S as L2S
from conftest import RECORD_STUDY, tiny_study, write_dataset_dir
from test_dashboard_cli import start_dashboard

from hpo.run import main
from hpo.study import run_study
from hpo.study_config import load_study_config

pytestmark = pytest.mark.slow


def train(config: Path, out: Path, l2: float) -> Path:
    """``python -m hpo.run train`` of one grid point (seed 0); it runs on the study's ``resources.cpu`` (1)
    threads, as the grid's trials do."""
    assert main(["train", "--config", str(config), "--l2", str(l2), "--seed", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory, ray_cluster) -> Path:
    """``grid/`` (the study run by ``grid``) and ``rec/`` (the same runs by ``train`` then ``record``)."""
    base = tmp_path_factory.mktemp("record-grid")
    data = write_dataset_dir(base / "data")
    config = base / "study.yaml"
    config.write_text(yaml.safe_dump(tiny_study(data, RECORD_STUDY, train={"epochs": 3, "learning_rate": 1.0e-2})))
    run_study(load_study_config(config), study_name="rec", out_dir=base / "grid")
    grid = optuna.load_study(study_name="rec", storage=f"sqlite:///{base / 'grid' / 'study.db'}").get_trials()
    in_grid_order = [t.params["l2"] for t in grid]  # the grid sampler's (shuffled) order numbers the trials
    assert sorted(in_grid_order) == sorted(L2S)
    folders = [train(config, base / "runs" / f"l2={l2:g}", l2) for l2 in in_grid_order]
    argv = ["record", *map(str, folders), "--storage", str(base / "rec" / "study.db"), "--study-name", "rec"]
    assert main([*argv, "--config", str(config)]) == 0
    return base


def _report(storage: Path, out: Path) -> dict:
    assert main(["report", "--storage", str(storage), "--study-name", "rec", "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def test_recorded_runs_report_as_the_grid(both):
    grid = _report(both / "grid" / "study.db", both / "grid-report")
    recorded = _report(both / "rec" / "study.db", both / "rec-report")
    assert grid["comparisons"], "the grid report has no comparison table"
    differ = {part for part in grid if recorded[part] != grid[part]}
    assert differ == {"storage"}, {part: (grid[part], recorded[part]) for part in differ - {"storage"}}
    assert {c["l2_a"] for c in grid["comparisons"]} | {c["l2_b"] for c in grid["comparisons"]} == set(L2S)


def test_recorded_trials_have_the_grids_params_values_and_curves(both):
    def trials(folder: str) -> list:  # by name: the grid sampler hands its points out in a shuffled order
        found = optuna.load_study(study_name="rec", storage=f"sqlite:///{both / folder / 'study.db'}").get_trials()
        return sorted(found, key=lambda t: t.user_attrs["trial_name"])

    grid, recorded = trials("grid"), trials("rec")
    assert [t.params for t in recorded] == [t.params for t in grid]
    assert [t.value for t in recorded] == [t.value for t in grid]
    assert [t.intermediate_values for t in recorded] == [t.intermediate_values for t in grid]
    for key in ("trial_name", "lineage", "test_metrics", "val_metrics", "split_hash", "epochs_run", "baseline"):
        assert [t.user_attrs[key] for t in recorded] == [t.user_attrs[key] for t in grid], key
    # the grid's driver registered each COMPLETE trial's checkpoint too
    assert all(set(t.user_attrs["checkpoints"]) == {"config.yaml", "last.pt"} for t in grid)


def test_predict_finds_the_checkpoint_in_the_artifact_store_when_the_trial_folder_is_gone(both, tmp_path):
    study = ["--storage", str(both / "grid" / "study.db"), "--study-name", "rec"]
    images = both / "data" / "images"
    assert main(["predict", *study, "--trial", "1", "--input", str(images), "--out", str(tmp_path / "a")]) == 0
    trials = both / "grid" / "trials"
    moved = shutil.move(trials, both / "elsewhere")
    try:
        assert main(["predict", *study, "--trial", "1", "--input", str(images), "--out", str(tmp_path / "b")]) == 0
        zipped = tmp_path / "model.zip"
        assert main(["export", *study, "--trial", "1", "--out", str(zipped)]) == 0
    finally:
        shutil.move(moved, trials)
    masks = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert masks and masks == sorted(p.name for p in (tmp_path / "b").glob("*.png"))
    for name in masks:  # the same network, so the same masks
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert zipped.is_file()


def test_a_tampered_artifact_is_refused(both, tmp_path, one_line_error, monkeypatch):
    storage = f"sqlite:///{both / 'rec' / 'study.db'}"
    trial = optuna.load_study(study_name="rec", storage=storage).trials[0]
    monkeypatch.setenv("LGESEG_CACHE", str(tmp_path / "cache"))
    store = both / "rec" / "artifacts"
    shutil.copytree(store, tmp_path / "store")
    (tmp_path / "store" / trial.user_attrs["checkpoints"]["last.pt"]["artifact_id"]).write_bytes(b"not it")
    runs = both / "runs"
    moved = shutil.move(runs, both / "runs-away")
    try:
        argv = ["predict", "--storage", storage, "--study-name", "rec", "--trial", "0", "--input", str(both / "data")]
        line = one_line_error([*argv, "--out", str(tmp_path / "p"), "--artifacts", str(tmp_path / "store")])
    finally:
        shutil.move(moved, runs)
    assert "trial 0: artifact last.pt in" in line and "does not match its recorded SHA-256" in line


def test_dashboard_serves_the_study_artifact_store(both):
    storage = f"sqlite:///{both / 'grid' / 'study.db'}"
    trial = optuna.load_study(study_name="rec", storage=storage).trials[0]
    meta = trial.user_attrs["checkpoints"]["config.yaml"]
    server, port, body = start_dashboard(storage)
    try:
        study_id = json.loads(body)["study_summaries"][0]["study_id"]
        url = f"http://127.0.0.1:{port}/artifacts/{study_id}/{trial._trial_id}/{meta['artifact_id']}"
        with urllib.request.urlopen(url, timeout=10) as response:
            served = response.read()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert served == (Path(trial.user_attrs["trial_dir"]) / "config.yaml").read_bytes()


def test_a_trial_folder_trained_again_with_another_config_is_not_taken_for_the_trial(both, tmp_path, capsys):
    """A trial folder deleted and trained again with another config (as the "another config" error of
    ``train`` suggests) holds another network: predict and export use the checkpoint the study registered."""
    study = ["--storage", str(both / "grid" / "study.db"), "--study-name", "rec"]
    images = both / "data" / "images"
    trials = optuna.load_study(study_name="rec", storage=f"sqlite:///{both / 'grid' / 'study.db'}").get_trials()
    folder, other = Path(trials[1].user_attrs["trial_dir"]), Path(trials[0].user_attrs["trial_dir"])
    capsys.readouterr()
    assert main(["predict", *study, "--trial", "1", "--input", str(images), "--out", str(tmp_path / "a")]) == 0
    assert "another run" not in capsys.readouterr().err  # the trial's own folder is taken as it is
    moved = shutil.move(folder, tmp_path / "kept")
    shutil.copytree(other, folder)  # trial 0's run (another L2) where trial 1's was
    try:
        assert main(["predict", *study, "--trial", "1", "--input", str(images), "--out", str(tmp_path / "b")]) == 0
        said = capsys.readouterr().err
        assert main(["export", *study, "--trial", "1", "--out", str(tmp_path / "model.zip")]) == 0
    finally:
        shutil.rmtree(folder)
        shutil.move(moved, folder)
    assert f"trial 1: its run folder {folder} now holds another run" in said
    masks = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert masks and all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in masks)


def test_a_checkpoint_the_study_did_not_register_is_named_when_the_folder_is_gone(both, tmp_path, one_line_error):
    study = ["--storage", str(both / "grid" / "study.db"), "--study-name", "rec", "--trial", "1"]
    trials = both / "grid" / "trials"
    moved = shutil.move(trials, both / "elsewhere")
    try:
        line = one_line_error(
            ["predict", *study, "--checkpoint", "best", "--input", str(both / "data"), "--out", str(tmp_path / "p")]
        )
    finally:
        shutil.move(moved, trials)
    assert line.endswith(
        "trial 1: --checkpoint best: its run folder cannot serve it and the study registered only the checkpoint "
        "its run evaluated (last.pt); give --checkpoint selected"
    )
