"""``python -m hpo.run dashboard``: serves optuna-dashboard on 127.0.0.1 by default; clear errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from hpo.run import main

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(storage: str) -> tuple[subprocess.Popen, int, str]:
    """Start ``python -m hpo.run dashboard`` on a free port and wait until it answers (60 s at most).

    Returns the server process (the caller terminates it), its port and the body of ``/api/studies``.
    """
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hpo.run", "dashboard", "--storage", storage, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                return server, port, response.read().decode()
        except OSError:
            if server.poll() is not None or time.monotonic() >= deadline:
                server.kill()
                raise AssertionError(f"dashboard did not start: {server.stdout.read()}") from None
            time.sleep(0.5)


def test_dashboard_serves_study_on_loopback(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=storage, study_name="demo")
    server, port, body = start_dashboard(storage)
    try:
        assert "demo" in body
        listening = [c for c in _listeners(port)]
        assert listening and all(addr.startswith("127.0.0.1") for addr in listening), listening
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert f"http://127.0.0.1:{port}/" in server.stdout.read()


def _listeners(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp), as 'a.b.c.d:port'."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            octets = [str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.append(f"{'.'.join(octets)}:{port}")
    return found


def test_dashboard_missing_storage_file_is_one_line(tmp_path, capsys):
    assert main(["dashboard", "--storage", f"sqlite:///{tmp_path / 'nope.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.db" in err and "not found" in err


def test_dashboard_without_storage_needs_one_study_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["dashboard"]) == 2
    assert "--storage" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["dashboard"], ["report", "--study-name", "s"]])
def test_an_empty_file_given_as_storage_is_refused_and_left_as_it_is(tmp_path, one_line_error, command):
    """SQLite takes a 0-byte file for an empty database and Optuna writes its tables into it: a typo or a
    wrong file must not be turned into a database."""
    empty = tmp_path / "empty.db"
    empty.touch()
    line = one_line_error([*command, "--storage", str(empty)])
    assert line.endswith(f"file {empty} is empty, not an Optuna database")
    assert empty.stat().st_size == 0
