"""One driver per study, with real second processes: a holder refuses (naming host and pid) or makes a
``--wait`` driver wait; a SIGKILLed holder leaves nothing to unlock; on SQLite, journal and PostgreSQL;
and never two trainings in one run folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import tiny_study
from study_driver import project_env, start_holder
from test_search_ray import tiny as tiny_search

from hpo.driver_lock import hold_study
from hpo.run import main
from lgeseg.filelock import HeldFile, LockHeldError
from lgeseg.phantom import generate_phantom

ROOT = Path(__file__).resolve().parents[2]
PG_URL = os.environ.get("LGESEG_TEST_POSTGRES_URL")


def storages(tmp_path: Path) -> list[str]:
    found = [f"sqlite:///{tmp_path / 'study.db'}", f"journal:{tmp_path / 'study.log'}", str(tmp_path / "bare.db")]
    if PG_URL:
        found.append(PG_URL)
    return found


@pytest.mark.parametrize("kind", ["sqlite", "journal", "bare path", "postgresql"])
def test_a_second_driver_is_refused_naming_the_holder_then_gets_in_once_it_is_killed(tmp_path, kind):
    if kind == "postgresql" and not PG_URL:
        pytest.skip("no PostgreSQL server: set LGESEG_TEST_POSTGRES_URL (tests/pg_server.sh starts one)")
    storage = dict(zip(["sqlite", "journal", "bare path", "postgresql"], storages(tmp_path)))[kind]
    name = f"s-{os.getpid()}-{kind.replace(' ', '')}"
    holder = start_holder(storage, name)
    try:
        with pytest.raises(LockHeldError) as refused, hold_study(storage, name):
            pytest.fail("entered a study another process holds")
        message = str(refused.value)
        assert f"process {holder.pid} on host {socket.gethostname()}" in message and "--wait" in message
        assert "\n" not in message
        with hold_study(storage, name + "-other"):  # another study of the same storage is free
            pass
    finally:
        holder.send_signal(signal.SIGKILL)  # dies without releasing anything
        holder.wait()
    with hold_study(storage, name):  # no manual unlock needed
        pass
    with hold_study(storage, name):  # and released on leaving the block
        pass


@pytest.mark.parametrize(
    "url",
    [
        "mysql+nosuchdriver://user:secret@127.0.0.1/db",  # a driver SQLAlchemy does not know
        "mssql+pyodbc://user:secret@127.0.0.1/db",  # a driver that is not installed
    ],
)
def test_a_storage_without_a_lock_that_cannot_be_opened_is_one_error_and_no_warning(url):
    from io import StringIO

    from hpo.storage import StorageError

    said = StringIO()
    with pytest.raises(StorageError) as refused, hold_study(url, "s", stream=said):
        pass
    assert said.getvalue() == ""  # before: "warning: ... no driver lock ..." and then the error
    assert "\n" not in str(refused.value) and "secret" not in str(refused.value)


def test_a_storage_without_a_lock_says_so_once_it_opens():
    from io import StringIO

    said = StringIO()
    with hold_study("sqlite://", "s", stream=said):  # in-memory SQLite: no file to lock
        pass
    assert said.getvalue().startswith("warning: study 's' in sqlite://: no driver lock on this kind of storage")


def test_wait_blocks_until_the_holder_ends_and_says_whom_it_waits_for(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    holder = start_holder(storage, "s", seconds=2, marker=tmp_path / "letting-go")
    try:
        with hold_study(storage, "s", wait=True):
            assert (tmp_path / "letting-go").exists()  # entered only once the holder let go
    finally:
        holder.kill()
        holder.wait()
    assert f"process {holder.pid} on host" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("command", ["grid", "search"])
def test_grid_and_search_refuse_a_study_another_driver_holds(ray_cluster, tmp_path, one_line_error, command):
    data_dir = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    if command == "grid":
        config = tiny_study(data_dir)
    else:
        config = tiny_search(data_dir, {"sampler": "random", "n_trials": 1})
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    out.mkdir()
    holder = start_holder(f"sqlite:///{out / 'study.db'}", config["name"])
    argv = [command, "--config", str(config_path), "--out", str(out), "--no-report"]
    try:
        line = one_line_error(argv)
        assert f"process {holder.pid} on host {socket.gethostname()}" in line
        assert not (out / "study.db").exists()  # nothing was written by the refused driver
        elsewhere = [*argv[:-3], "--out", str(tmp_path / "new"), "--storage", str(out / "study.db"), "--no-report"]
        assert f"process {holder.pid}" in one_line_error(elsewhere)
        assert not (tmp_path / "new").exists()  # nor an empty study folder left by it
        # --resume of the study the holder runs (it has created it by now, as a driver does first thing)
        optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=config["name"])
        line = one_line_error([*argv, "--resume"])
        assert f"process {holder.pid} on host {socket.gethostname()}" in line
        (stored,) = optuna.get_all_study_summaries(f"sqlite:///{out / 'study.db'}")
        assert stored.n_trials == 0 and not stored.user_attrs  # nothing written into it either
    finally:
        holder.kill()
        holder.wait()
    # the holder died: the same command finishes the study without any unlock
    assert main([*argv, "--resume"]) == 0


def test_two_trainings_never_share_a_run_folder(tmp_path, tiny_data_dir, tiny_run_config):
    from lgeseg.run import RUN_LOCK, run

    config = tiny_run_config(data=str(tiny_data_dir), train__epochs=400)
    out = tmp_path / "run"
    code = f"from lgeseg.run import run; run({config!r}, {str(out)!r})"
    first = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=project_env())
    try:
        lock = HeldFile(out / RUN_LOCK, "probe")
        deadline = time.monotonic() + 120
        while not (lock.read_holder() or {}).get("pid") == first.pid:
            assert time.monotonic() < deadline and first.poll() is None, "the first training never started"
            time.sleep(0.2)
        with pytest.raises(LockHeldError, match=f"run folder {out} is held by process {first.pid} on host"):
            run(config, out)
    finally:
        first.kill()
        first.wait()
    assert not (out / "run.json").exists()


@pytest.mark.parametrize("command", ["grid", "search"])
def test_wait_is_an_option_of_grid_and_search(command):
    from hpo.run import build_parser

    assert build_parser().parse_args([command, "--wait"]).wait is True
    assert build_parser().parse_args([command]).wait is False
