"""A study driver (``python -m hpo.run grid`` or ``search``) as the end-to-end tests start, kill and resume it.

The kill-and-resume tests (grid on SQLite, cross-validated grid, search, PostgreSQL) and the cluster test
share one way to do it: the driver runs in its own process group with unbuffered output; the test polls the
study until the trials it waits for have got far enough, then SIGKILLs the whole group (driver, Ray and its
workers), as a killed terminal or a lost machine would; ``--resume`` must then finish the study.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[2]


def driver_env() -> dict[str, str]:
    """The environment a driver runs in: this one, with unbuffered output (its lines arrive as they are said)."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def project_env() -> dict[str, str]:
    """:func:`driver_env` with the project on ``PYTHONPATH``, for a ``python -c`` child that imports it."""
    return {**driver_env(), "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def start_holder(storage: str, name: str, seconds: float = 120, marker: Path | None = None) -> subprocess.Popen:
    """A second process that holds ``name`` in ``storage`` (:func:`hpo.driver_lock.hold_study`) for ``seconds``
    (prints 'held' once it does), then writes ``marker`` (if given) just before it lets go."""
    code = textwrap.dedent(
        f"""
        import time
        from hpo.driver_lock import hold_study
        with hold_study({storage!r}, {name!r}):
            print("held", flush=True)
            time.sleep({seconds})
            if {str(marker) if marker else None!r}:
                open({str(marker)!r}, "w").close()
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=project_env(), stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def study_command(config_path: Path, out: Path, *extra: str, kind: str = "grid") -> list[str]:
    """``python -m hpo.run grid`` (or ``kind``: ``search``) of the YAML config at ``config_path`` into ``out``,
    no report, on a local Ray of 2 CPUs, then ``extra``."""
    return [
        sys.executable,
        "-m",
        "hpo.run",
        kind,
        "--config",
        str(config_path),
        "--out",
        str(out),
        "--no-report",
        "--num-cpus",
        "2",
        *extra,
    ]


def grid_on_data(data: Path, out: Path, *extra: str) -> list[str]:
    """``hpo.run`` arguments (after ``python -m hpo.run``) of a ``grid`` on the data folder ``data`` into ``out``
    with the default study on one CPU and no GPU per trial, in batches of 4 (a tiny data set's training split
    is smaller than the default 16), then ``extra``."""
    return [
        "grid",
        "--data",
        str(data),
        "--out",
        str(out),
        "--set",
        "resources.gpu=0",
        "--set",
        "resources.cpu=1",
        "--set",
        "train.batch_size=4",
        *extra,
    ]


def sqlite_study(out: Path, name: str = "tiny") -> optuna.Study:
    """The study ``name`` in the study folder's ``study.db``."""
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


def start_driver(command: Sequence[str]) -> subprocess.Popen:
    """Start ``command`` from the repository root in a process group of its own, stdout and stderr together."""
    return subprocess.Popen(
        list(command),
        cwd=ROOT,
        env=driver_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_mid_trial(
    command: Sequence[str],
    trials: Callable[[], list[optuna.trial.FrozenTrial]],
    until: Callable[[list[optuna.trial.FrozenTrial]], bool],
    *,
    what: str,
    timeout: float = 240,
    ready: Callable[[], bool] | None = None,
    poll: float = 0.5,
) -> str:
    """Run the driver ``command`` until ``until(trials())`` holds, then SIGKILL its whole process group.

    Every ``poll`` seconds: the driver must still run (the test fails with its output otherwise), then, once
    ``ready()`` (if given: e.g. :func:`conftest.sqlite_study_ready`, so that no reader races the driver's
    creation of the schema), ``trials()`` is read; an exception there means the study is not there yet. Fails
    with "... never ``what``" after ``timeout`` seconds. Returns what the driver printed.
    """
    driver = start_driver(command)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(poll)
            if driver.poll() is not None:
                pytest.fail(f"the driver ended before it was killed:\n{driver.stdout.read()}")
            if ready is not None and not ready():
                continue
            try:
                seen = trials()
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            if until(seen):
                break
        else:
            pytest.fail(f"the driver never {what}")
        assert driver.poll() is None, driver.stdout.read()
    finally:
        with contextlib.suppress(ProcessLookupError):  # already gone when the test failed above
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    return driver.stdout.read()


def any_trial_reached(epochs: int) -> Callable[[list[optuna.trial.FrozenTrial]], bool]:
    """``until`` for :func:`kill_mid_trial`: some trial has reported ``epochs`` epochs."""
    return lambda trials: any(len(t.intermediate_values) >= epochs for t in trials)


def resume(command: Sequence[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``command --resume`` to its end; it must succeed and say that it continues an interrupted trial."""
    resumed = subprocess.run(
        [*command, "--resume"], cwd=ROOT, env=driver_env(), capture_output=True, text=True, timeout=timeout
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "continuing an interrupted trial" in resumed.stdout
    return resumed
