"""A trial folder that holds a finished run (same config, same data and split fingerprints) while the
study still shows its trial RUNNING (the driver died between the run's end and its record) is recorded on
``--resume`` from the folder, not trained again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import tiny_study
from optuna.trial import TrialState
from study_driver import sqlite_study as load

from hpo.study import run_study
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow


def test_a_finished_folder_of_a_running_trial_is_recorded_not_retrained(ray_cluster, tmp_path, capsys):
    data_dir = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    config = tiny_study(data_dir, grid={"l2": [5e-4]})
    out = tmp_path / "study"
    run_study(config, out_dir=out)
    (trial,) = load(out).get_trials()
    folder = Path(trial.user_attrs["trial_dir"])
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file() and p.suffix != ".lock"}
    run_info = json.loads((folder / "run.json").read_text())
    # the state a driver killed right after the run finished leaves: the trial RUNNING, without its value
    with sqlite3.connect(out / "study.db") as db:
        db.execute("UPDATE trials SET state = 'RUNNING', datetime_complete = NULL WHERE number = 0")
        db.execute("DELETE FROM trial_values")
    assert load(out).get_trials()[0].state == TrialState.RUNNING
    capsys.readouterr()

    result = run_study(config, out_dir=out, resume=True)
    assert "0 finished, 1 in progress, 0 to sample" in capsys.readouterr().out
    (again,) = load(out).get_trials()
    assert again.state == TrialState.COMPLETE and result.rows[0]["status"] == "complete"
    assert again.value == trial.value  # the finished run's own result, read back
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file() and p.suffix != ".lock"}
    assert after == before  # read back: no file of the finished run was written again
    assert json.loads((folder / "run.json").read_text()) == run_info
