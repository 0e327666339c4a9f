"""``grid --address`` on a real two-node Ray cluster bound to 127.0.0.1 (tests/e2e/two_node_cluster.py).

Trials run on both nodes (each trial records its Ray node id), every result lands in a journal-file
study, and the node killed mid-trial leaves a FAIL with its reason, not a lost or duplicated grid point.
A join that cannot complete ends within the join timeout with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest
import yaml
from conftest import tiny_study
from optuna.trial import TrialState
from study_driver import ROOT, grid_on_data, start_driver, study_command

from hpo.storage import open_storage
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes():
    """A head and a worker node of one CPU each on 127.0.0.1, in their own RAY_TMPDIR (short: socket paths)."""
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    cluster = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "e2e" / "two_node_cluster.py")],
        cwd=ROOT,
        env={**os.environ, "RAY_TMPDIR": ray_tmp},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = cluster.stdout.readline()
        assert line, f"the cluster did not start (exit {cluster.poll()})"
        yield {**json.loads(line), "pid": cluster.pid}
    finally:
        cluster.stdin.close()
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_grid_joins_a_loopback_cluster_and_survives_a_node_killed_mid_trial(two_nodes, tmp_path):
    data = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_study(data, train={"epochs": 30})))
    log = tmp_path / "study.log"
    driver = start_driver(
        study_command(
            config_path, tmp_path / "study", "--address", two_nodes["address"], "--storage", f"journal:///{log}"
        )
    )
    try:
        deadline = time.monotonic() + 180
        nodes: dict[float, str] = {}
        trials: list[optuna.trial.FrozenTrial] = []
        while len(nodes) < 2 or not all(len(t.intermediate_values) >= 2 for t in trials):
            assert driver.poll() is None, driver.stdout.read()
            assert time.monotonic() < deadline, "two trials never ran at once"
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="tiny", storage=open_storage(str(log))).get_trials()
            except (KeyError, FileNotFoundError):  # not created yet
                trials = []
            nodes = {t.params["l2"]: t.user_attrs["node_id"] for t in trials if "node_id" in t.user_attrs}
        # One trial on each node: the loopback cluster was joined and both of its nodes work.
        assert sorted(nodes.values()) == sorted([two_nodes["head_node_id"], two_nodes["worker_node_id"]])
        os.kill(two_nodes["pid"], signal.SIGUSR1)  # the worker node dies mid-trial
        output, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 1, output  # a failed grid point: unfinished, and said so
    trials = optuna.load_study(study_name="tiny", storage=open_storage(str(log))).get_trials()
    assert sorted(t.params["l2"] for t in trials) == [5e-5, 5e-3]  # every grid point once: none lost or doubled
    by_node = {t.user_attrs["node_id"]: t for t in trials}
    survivor, killed = by_node[two_nodes["head_node_id"]], by_node[two_nodes["worker_node_id"]]
    assert survivor.state == TrialState.COMPLETE and sorted(survivor.intermediate_values) == list(range(1, 31))
    assert killed.state == TrialState.FAIL and killed.user_attrs["error"], killed.user_attrs
    assert "failed" in output and killed.user_attrs["error"].splitlines()[0] in output


def test_join_that_cannot_complete_ends_with_one_line(tiny_data_dir, tmp_path):
    with socket.socket() as server:  # answers TCP on loopback but is no Ray cluster
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "hpo.run", *grid_on_data(tiny_data_dir, tmp_path / "study", "--address", address)],
            cwd=ROOT,
            env={**os.environ, "LGESEG_RAY_JOIN_TIMEOUT_S": "3"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    expected = (
        f"error: --address {address}: could not join the Ray cluster within 3 s (Ray's client got no "
        "answer from the cluster there)"
    )
    assert errors == [expected], result.stderr
    assert time.monotonic() - started < 100
    assert not (tmp_path / "study").exists()  # nothing stored
