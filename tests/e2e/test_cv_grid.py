"""A cross-validated grid end to end: the driver killed mid-trial and resumed, then the report's per-patient
out-of-fold verdicts over every patient of the data set."""

from __future__ import annotations

import json

import optuna
import pytest
import yaml
from conftest import sqlite_study_ready, tiny_study
from optuna.trial import TrialState
from study_driver import any_trial_reached, kill_mid_trial, resume, study_command

from dashboards.report import build_report
from dashboards.stats import NOT_RANKED
from lgeseg.data import load_dataset
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow


def test_killed_cv_grid_resumes_and_reports_out_of_fold_verdicts_over_all_patients(tmp_path):
    data = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    config = tiny_study(
        data,
        name="cv",
        split={"folds": 2, "stratify": "pathology"},
        train={"epochs": 3, "checkpoint_every": 1},
        retune={"max_reruns": 0, "adjustments": []},
    )
    config_path = tmp_path / "cv.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    command = study_command(config_path, out)
    storage = f"sqlite:///{out / 'study.db'}"
    kill_mid_trial(
        command,
        lambda: optuna.load_study(study_name="cv", storage=storage).get_trials(),
        any_trial_reached(1),
        what="got an epoch into a CV grid trial",
        timeout=300,
        ready=lambda: sqlite_study_ready(out / "study.db"),
    )
    study = optuna.load_study(study_name="cv", storage=storage)
    assert all(t.state == TrialState.RUNNING for t in study.get_trials())
    assert study.user_attrs["split"]["folds"] == 2 and len(study.user_attrs["split"]["fold_splits"]) == 2

    resumed = resume(command, timeout=600)
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
    # tiny networks may not learn: then the pair is not ranked (no verdict word), its numbers kept
    assert pair["ranked"] == (not verdicts["not_ranked"])
    assert pair["verdict"] in (("equivalent", "different", "undecided") if pair["ranked"] else (NOT_RANKED,))
    assert any(f": {pair['verdict']} (median difference" in line for line in summary["summary"])
    assert {(r["patient"], r["configuration"]) for r in verdicts["patients"]} == {
        (p, c) for p in patients for c in ("L2=5e-05", "L2=0.005")
    }
    assert "6. Verdicts on myocardium:Dice" in report.read_text()
