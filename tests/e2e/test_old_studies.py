"""Studies recorded by d5d5804's ``grid`` and ``search`` (before the one study flow) still open in ``report``,
``dashboard`` and ``--resume``, with their trial folder names.

The old studies are made here by the code of d5d5804 itself (``git archive`` of its hpo/ and src/, run in a
subprocess), on a tiny dataset, so the test needs the repository's history; it skips and says so without.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import write_dataset_dir
from test_dashboard_cli import start_dashboard

from hpo.study import run_study
from hpo.study_config import load_study_config
from lgeseg.errors import UserError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
OLD = "d5d5804"

TRAIN = {"epochs": 2, "batch_size": 8, "learning_rate": 1.0e-3}
RETUNE = {"check_fraction": 0.5, "target_accuracy": 0.0, "max_reruns": 1, "adjustments": [{"learning_rate": 3e-3}]}
GRID = {
    "name": "old-grid",
    "seeds": [0],
    "model": {"width": 4, "depth": 2},
    "train": TRAIN,
    "grid": {"l2": [5.0e-3, 5.0e-5], "loss": ["cross-entropy", "dice"]},
    "retune": RETUNE,
    "resources": {"gpu": 0, "cpu": 1},
}
SEARCH = {
    "name": "old-search",
    "model": {"width": 4, "depth": 2},
    "train": TRAIN,
    "search": {
        "sampler": "random",
        "n_trials": 2,
        "seeds_per_trial": 1,
        "space": {"train.l2": {"low": 1.0e-5, "high": 1.0e-2, "log": True}},
    },
    "retune": RETUNE,
    "resources": {"gpu": 0, "cpu": 1},
}


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Path:
    """A folder with ``grid/`` and ``search/`` studies made by d5d5804's code, their configs and data."""
    probe = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{OLD}^{{commit}}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"commit {OLD} is not in this checkout's history (a shallow clone?)")
    base = tmp_path_factory.mktemp("old")
    code = base / "code"
    code.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", OLD, "hpo", "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive, check=True)
    data = write_dataset_dir(base / "data")
    env = {**os.environ, "PYTHONPATH": f"{code / 'src'}{os.pathsep}{code}", "PYTHONUNBUFFERED": "1"}
    for kind, values in (("grid", GRID), ("search", SEARCH)):
        config = base / f"{kind}.yaml"
        config.write_text(yaml.safe_dump({**values, "data": str(data)}))
        command = [sys.executable, "-m", "hpo.run", kind, "--config", str(config), "--out", str(base / kind)]
        done = subprocess.run(
            [*command, "--no-report", "--num-cpus", "2"], cwd=base, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return base


def _storage(old: Path, kind: str) -> str:
    return f"sqlite:///{old / kind / 'study.db'}"


def test_old_studies_open_in_the_report(old):
    from dashboards.report import build_report

    for kind, name in (("grid", "old-grid"), ("search", "old-search")):
        page = build_report(_storage(old, kind), name, old / f"{kind}-report").read_text()
        names = [
            t.user_attrs["trial_name"] for t in optuna.load_study(study_name=name, storage=_storage(old, kind)).trials
        ]
        assert all(n in page for n in names if "_rerun=" in n), kind


def test_old_grid_over_loss_reports_per_loss(old):
    from dashboards.load import load_study
    from hpo.storage import open_study

    record = load_study(open_study(_storage(old, "grid"), "old-grid"), _storage(old, "grid"))
    groups = record.by_groups()
    assert list(groups) == ["loss=cross-entropy", "loss=dice"]
    assert all({t.loss for t in part.trials} == {label.split("=")[1]} for label, part in groups.items())


def test_old_studies_open_in_the_dashboard(old):
    for kind, name in (("grid", "old-grid"), ("search", "old-search")):
        server, port, body = start_dashboard(_storage(old, kind))
        try:
            studies = json.loads(body)["study_summaries"]
            study = next(s for s in studies if s["study_name"] == name)
            url = f"http://127.0.0.1:{port}/api/studies/{study['study_id']}"
            with urllib.request.urlopen(url, timeout=10) as response:
                trials = json.loads(response.read())["trials"]
            assert len(trials) == len(optuna.load_study(study_name=name, storage=_storage(old, kind)).trials)
        finally:
            server.terminate()
            server.wait(timeout=10)


def _interrupt(db: Path, number: int) -> None:
    """Make trial ``number`` RUNNING again, as a driver killed under it leaves it (its folder stays)."""
    with sqlite3.connect(db) as con:
        (trial_id,) = con.execute("SELECT trial_id FROM trials WHERE number = ?", (number,)).fetchone()
        con.execute("UPDATE trials SET state = 'RUNNING', datetime_complete = NULL WHERE trial_id = ?", (trial_id,))
        con.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial_id,))


def test_old_grid_resumes_under_its_names(old, ray_cluster, tmp_path):
    import shutil

    out = tmp_path / "grid"
    shutil.copytree(old / "grid", out)
    before = optuna.load_study(study_name="old-grid", storage=f"sqlite:///{out / 'study.db'}").trials
    last = before[-1]
    _interrupt(out / "study.db", last.number)
    config = load_study_config(old / "grid.yaml")
    result = run_study(config, out_dir=out, resume=True)
    after = optuna.load_study(study_name="old-grid", storage=f"sqlite:///{out / 'study.db'}").trials
    assert len(after) == len(before)  # continued under its own trial, nothing else redone
    assert after[-1].state == optuna.trial.TrialState.COMPLETE
    assert after[-1].user_attrs["trial_name"] == last.user_attrs["trial_name"] == "l2=5e-05_seed=0_loss=dice_rerun=0"
    assert (out / "trials" / "l2=5e-05_seed=0_loss=dice_rerun=0").is_dir()
    assert [r["status"] for r in result.rows] == ["complete"] * 4 and not result.unfinished
    assert [r["point"] for r in result.rows] == [t.user_attrs["lineage"]["point"] for t in before]


def test_old_search_resumes_with_nothing_redone(old, ray_cluster, tmp_path, capsys):
    import shutil

    out = tmp_path / "search"
    shutil.copytree(old / "search", out)
    storage = f"sqlite:///{out / 'study.db'}"
    before = optuna.load_study(study_name="old-search", storage=storage).trials
    result = run_study(load_study_config(old / "search.yaml"), out_dir=out, resume=True)
    assert "2 finished, 0 in progress, 0 to sample" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="old-search", storage=storage).trials) == len(before)
    assert [r["point"] for r in result.rows] == ["c000,seed=0", "c001,seed=0"]
    assert not result.unfinished and {r["status"] for r in result.rows} == {"complete"}


def test_old_studies_choose_their_networks(old):
    """``predict``'s choice of networks reads d5d5804's records through :mod:`hpo.record` as today's."""
    from hpo.networks import select_networks

    grid = optuna.load_study(study_name="old-grid", storage=_storage(old, "grid")).get_trials()
    by_name = {t.user_attrs["trial_name"]: t.number for t in grid}
    best = select_networks(grid, "old-grid", best=4)  # every grid point is a configuration (one seed each)
    assert sorted(c.number for c in best) == sorted(by_name.values()) and all(c.run_dir.is_dir() for c in best)
    (only,) = select_networks(grid, "old-grid", configuration=by_name["l2=0.005_seed=0_loss=dice_rerun=0"])
    assert only.number == by_name["l2=0.005_seed=0_loss=dice_rerun=0"]
    search = optuna.load_study(study_name="old-search", storage=_storage(old, "search")).get_trials()
    configurations = [t for t in search if t.user_attrs.get("kind") == "configuration"]
    chosen = select_networks(search, "old-search", configuration=configurations[0].number)
    assert [c.trial.user_attrs["lineage"]["configuration"] for c in chosen] == [configurations[0].number]
    with pytest.raises(UserError, match="is a configuration of the search, not a network"):
        select_networks(search, "old-search", trial=configurations[0].number)
