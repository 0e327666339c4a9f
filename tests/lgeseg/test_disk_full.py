"""A full disk is one line, "no space left on device" with the path, never torch's "enforce fail at
inline_container.cc ... unexpected pos": a run on a real, tiny tmpfs (root only; skips otherwise), and the
grid's recorder when the storage's disk is full."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import optuna
import pytest
from conftest import tiny_train_args

from hpo.recorder import OptunaRecorder
from hpo.rule import RetuneRule
from hpo.storage import disk_full, open_storage
from lgeseg.errors import UserError


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs mounted at ``tmp_path / 'disk'`` (needs root; skips and says why otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until about ``leave`` bytes are left."""
    with (disk / "filler").open("wb") as f:
        try:
            while os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize > leave:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass


@pytest.mark.parametrize("leave", [0, 24 * 1024], ids=["full at once", "full during training"])
def test_a_run_on_a_full_disk_is_one_line_with_the_path(tiny_disk, tiny_data_dir, one_line_error, leave):
    _fill(tiny_disk, leave)
    out = tiny_disk / "run"
    line = one_line_error(["train", "--data", str(tiny_data_dir), "--out", str(out), *tiny_train_args(epochs=3)])
    assert line.startswith(f"error: {out}") and "no space left on device" in line, line
    assert line.count("no space left on device") == 1 and "inline_container" not in line


def test_the_recorder_says_no_space_left_once_with_the_storage(tmp_path):
    import sqlite3

    study = optuna.create_study(storage=open_storage(tmp_path / "study.db"), study_name="s")
    recorder = OptunaRecorder(study, RetuneRule(0.5, 0.9), 0, retries=2, retry_wait=0.0)

    def full() -> None:
        raise optuna.exceptions.StorageInternalError("write failed") from sqlite3.OperationalError(
            "database or disk is full"
        )

    recorder.writes.write("trial 0 result", full)
    recorder.writes.write("trial 1 result", full)
    with pytest.raises(UserError) as caught:
        recorder.close()
    message = str(caught.value)
    assert message.startswith(f"storage sqlite:///{tmp_path / 'study.db'}: no space left on device")
    assert "2 writes were not recorded (first: trial 0 result)" in message and "--resume" in message


@pytest.mark.parametrize(
    "exc, full",
    [
        (OSError(28, "No space left on device"), True),
        (OSError(122, "Disk quota exceeded"), True),
        (RuntimeError("database or disk is full"), True),
        (OSError(13, "Permission denied"), False),
        (RuntimeError("database is locked"), False),
    ],
)
def test_disk_full_is_told_apart_from_other_storage_errors(exc, full):
    assert disk_full(exc) is full
