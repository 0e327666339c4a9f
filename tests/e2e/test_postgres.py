"""A grid study on a real PostgreSQL server: run, SIGKILL, ``--resume``, ``report`` and ``dashboard``.

The server comes from ``$LGESEG_TEST_POSTGRES_URL`` (``.ci/run`` starts one with ``tests/pg_server.sh``;
locally: ``eval "$(bash tests/pg_server.sh start /tmp/pg)"``); without it these tests skip and say so.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid

import optuna
import pytest
import yaml
from conftest import tiny_study
from optuna.trial import TrialState
from study_driver import any_trial_reached, kill_mid_trial, resume, study_command
from test_dashboard_cli import start_dashboard

from hpo.run import main
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow
URL = os.environ.get("LGESEG_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url() -> str:
    if not URL:
        pytest.skip("no PostgreSQL server: set LGESEG_TEST_POSTGRES_URL (tests/pg_server.sh starts one)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install -e '.[postgres]'")
    return URL


def _password(url: str) -> str:
    return url.split("//", 1)[1].split("@", 1)[0].partition(":")[2]


def test_grid_killed_resumed_reported_and_served_from_postgres(postgres_url, tmp_path, capsys):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    data_dir = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    # 30 short epochs: a trial seen at epoch 2 is still far from its end when the driver is killed
    config = tiny_study(data_dir, train={"epochs": 30, "checkpoint_every": 1})
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    command = study_command(config_path, out, "--storage", postgres_url, "--study-name", name)
    first_output = kill_mid_trial(
        command,
        lambda: optuna.load_study(study_name=name, storage=postgres_url).get_trials(),
        any_trial_reached(2),
        what="got two epochs into a trial",
    )
    assert _password(postgres_url) not in first_output and "lgeseg:***@" in first_output
    assert all(
        t.state == TrialState.RUNNING for t in optuna.load_study(study_name=name, storage=postgres_url).get_trials()
    )

    resumed = resume(command)
    assert _password(postgres_url) not in resumed.stdout + resumed.stderr
    after = optuna.load_study(study_name=name, storage=postgres_url).get_trials()
    assert sorted(t.params["l2"] for t in after) == [5e-5, 5e-3]  # one trial per grid point, none duplicated
    assert all(t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == list(range(1, 31)) for t in after)

    assert main(["report", "--storage", postgres_url, "--study-name", name, "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert (tmp_path / "report" / "report.html").is_file() and _password(postgres_url) not in printed

    server, port, body = start_dashboard(postgres_url)
    try:
        (study_id,) = [s["study_id"] for s in json.loads(body)["study_summaries"] if s["study_name"] == name]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10) as response:
            detail = json.loads(response.read())
        assert len(detail["trials"]) == 2
        # The report saved its figures into the PostgreSQL study, and the dashboard serves them from there.
        assert "report-figure1" in {g["id"] for g in detail["plotly_graph_objects"]}
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert _password(postgres_url) not in server.stdout.read()


def test_wrong_password_is_one_line_without_the_password(postgres_url, one_line_error):
    wrong = postgres_url.replace(f":{_password(postgres_url)}@", ":not-the-password@")
    line = one_line_error(["report", "--storage", wrong, "--study-name", "x"])
    assert "password authentication failed" in line and "not-the-password" not in line and "lgeseg:***@" in line
