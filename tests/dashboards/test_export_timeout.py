"""``report --format png`` with a browser that never answers (Kaleido#134, #110): it stops at
``--export-timeout`` with one line and leaves no browser process running; Ctrl-C stops it at once too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_fixture import build_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def silent_browser(tmp_path, monkeypatch) -> Path:
    """A fake Chrome (found by kaleido through $BROWSER_PATH) that starts, writes its pid and never answers;
    it also starts a child of its own, as Chrome does, so the whole tree must be stopped."""
    pids = tmp_path / "browser-pids"
    fake = tmp_path / "fake-chrome"
    fake.write_text(f"#!/bin/sh\nsleep 100000 &\necho $! >> {pids}\necho $$ >> {pids}\nexec sleep 100000\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    return pids


def _browser_pids(pids: Path) -> list[int]:
    deadline = time.monotonic() + 60
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert time.monotonic() < deadline, "the fake browser was never started"
        time.sleep(0.2)
    return [int(p) for p in pids.read_text().split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + 30  # a killed process may take a moment to be reaped
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(_alive(p) for p in pids)


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_an_export_to_a_silent_browser_stops_at_the_timeout_in_one_line(tmp_path, silent_browser, one_line_error, fmt):
    study = build_study(tmp_path / "study")
    command = ["report", "--storage", study.storage, "--out", str(tmp_path / "r"), "--no-dashboard"]
    line = one_line_error([*command, "--format", fmt, "--export-timeout", "5"])
    assert line == (
        f"error: static export to {tmp_path / 'r' / 'figures'} did not finish within 5 s (the browser kaleido "
        f"drives did not answer; it was stopped); raise --export-timeout, or use --format html"
    )
    assert _gone(_browser_pids(silent_browser))  # no browser process left behind
    assert (tmp_path / "r" / "report.html").is_file()  # the HTML report is written all the same


def test_ctrl_c_stops_a_hanging_export_and_its_browser(tmp_path, silent_browser):
    study = build_study(tmp_path / "study")
    report = subprocess.Popen(
        [sys.executable, "-m", "hpo.run", "report", "--storage", study.storage, "--out", str(tmp_path / "r")]
        + ["--no-dashboard", "--format", "png", "--export-timeout", "600"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as in a terminal: a pytest started in the background by a shell ignores SIGINT, and its
        # children inherit that, so Python would install no KeyboardInterrupt handler (the CI hung here).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        browser = _browser_pids(silent_browser)
        report.send_signal(signal.SIGINT)  # the first Ctrl-C
        _, err = report.communicate(timeout=60)
    finally:
        report.kill()
    assert report.returncode == 130 and err.strip() == "interrupted", err
    assert _gone(browser)


@pytest.mark.parametrize("value", ["0", "-3", "nan"])
def test_a_timeout_that_is_no_positive_number_is_one_line(tmp_path, one_line_error, value):
    study = build_study(tmp_path / "study")
    line = one_line_error(["report", "--storage", study.storage, "--format", "png", "--export-timeout", value])
    assert "--export-timeout must be a positive number of seconds" in line
