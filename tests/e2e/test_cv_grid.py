"""A cross-validated grid end to end: the driver killed mid-trial and resumed, then the report's per-patient
out-of-fold verdicts over every patient of the data set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import sqlite_study_ready
from optuna.trial import TrialState

from dashboards.report import build_report
from hpo.study_config import study_config
from lgeseg.data import load_dataset
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _command(config_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "hpo.run", "grid", "--config", str(config_path), "--out", str(out)]


def test_killed_cv_grid_resumes_and_reports_out_of_fold_verdicts_over_all_patients(tmp_path):
    data = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    config = study_config(
        {
            "name": "cv",
            "data": str(data),
            "seeds": [0],
            "split": {"folds": 2, "stratify": "pathology"},
            "model": {"width": 4, "depth": 2},
            "train": {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "checkpoint_every": 1},
            "grid": {"l2": [5e-3, 5e-5]},
            "retune": {"check_fraction": 0.5, "target_accuracy": 0.0, "max_reruns": 0, "adjustments": []},
            "resources": {"gpu": 0, "cpu": 1},
        }
    )
    config_path = tmp_path / "cv.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [*_command(config_path, out), "--no-report", "--num-cpus", "2"]
    driver = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    storage = f"sqlite:///{out / 'study.db'}"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if sqlite_study_ready(out / "study.db") and driver.poll() is None:
                try:
                    trials = optuna.load_study(study_name="cv", storage=storage).get_trials()
                except Exception:  # noqa: BLE001 - the study may not exist yet
                    continue
                if any(len(t.intermediate_values) >= 1 for t in trials):
                    break
        else:
            pytest.fail("the CV grid never got an epoch into a trial")
        assert driver.poll() is None, driver.stdout.read()
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    study = optuna.load_study(study_name="cv", storage=storage)
    assert all(t.state == TrialState.RUNNING for t in study.get_trials())
    assert study.user_attrs["split"]["folds"] == 2 and len(study.user_attrs["split"]["fold_splits"]) == 2

    resumed = subprocess.run([*command, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "continuing an interrupted trial" in resumed.stdout
    header = next(line for line in resumed.stdout.splitlines() if line.startswith("L2 "))
    assert header.split()[:3] == ["L2", "seed", "fold"]  # the closing table shows the fold
    after = optuna.load_study(study_name="cv", storage=storage).get_trials()
    points = sorted(t.user_attrs["lineage"]["point"] for t in after)
    assert points == [
        "l2=0.005,seed=0,fold=0",
        "l2=0.005,seed=0,fold=1",
        "l2=5e-05,seed=0,fold=0",
        "l2=5e-05,seed=0,fold=1",
    ]  # one attempt per (configuration, fold, seed): none doubled by the resume
    assert all(t.state == TrialState.COMPLETE for t in after)
    assert sorted(t.params["fold"] for t in after) == [0, 0, 1, 1]
    # Each fold's test patients are its own; together the folds test every patient exactly once per L2.
    dataset = load_dataset(data)
    patients = set(dataset.patients)
    for l2 in (5e-3, 5e-5):
        tested = [
            row["patient"]
            for t in after
            if t.params["l2"] == l2
            for row in t.user_attrs["test_metrics"]["field_metrics"]["patients"]
        ]
        assert sorted(tested) == sorted(patients)

    report = build_report(storage, "cv", out, save_to_dashboard=False)
    summary = json.loads(report.with_name("report.json").read_text())
    verdicts = summary["verdicts"]
    assert verdicts["metric"] == "myocardium:Dice" and verdicts["folds"] == [0, 1]
    assert verdicts["n_patients"] == len(patients) == 5
    (pair,) = verdicts["verdicts"]
    assert (pair["a"], pair["b"], pair["n"]) == ("L2=5e-05", "L2=0.005", 5)
    assert pair["verdict"] in ("equivalent", "different", "undecided")
    assert any(f": {pair['verdict']} (median difference" in line for line in summary["summary"])
    assert {(r["patient"], r["configuration"]) for r in verdicts["patients"]} == {
        (p, c) for p in patients for c in ("L2=5e-05", "L2=0.005")
    }
    assert "6. Verdicts on myocardium:Dice" in report.read_text()
