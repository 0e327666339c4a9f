"""``record`` holds the study's driver lock (:mod:`hpo.driver_lock`), with a real second process holding it.

While a driver (a ``grid`` training the study) holds the study, a record could write a point the driver then
trains too: two COMPLETE trials of one point, and a report that breaks on them. So a record of a held study
is refused with one line naming the holder and writes nothing; with ``--wait`` it records once the holder
ends. One tiny ``train`` run (width 4, depth 2, 2 epochs) per module.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import RECORD_STUDY, tiny_study, write_dataset_dir
from study_driver import start_holder

from hpo.driver_lock import lock_file
from hpo.run import main


def stop(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait(timeout=30)
    holder.stdout.close()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """``study.yaml`` (the record tests' study) and two runs of it, ``runs/a`` (l2 5e-3) and ``runs/b`` (5e-4)."""
    import torch

    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("record_locked")
    data = write_dataset_dir(base / "data")
    config = base / "study.yaml"
    config.write_text(yaml.safe_dump(tiny_study(data, RECORD_STUDY)))
    for name, l2 in (("a", "5e-3"), ("b", "5e-4")):
        assert main(["train", "--config", str(config), "--l2", l2, "--out", str(base / "runs" / name)]) == 0
    return base


def argv(made: Path, storage: Path, run: str, *extra: str) -> list[str]:
    return ["record", str(made / "runs" / run), "--storage", str(storage), "--study-name", "rec", *extra]


def trials(storage: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="rec", storage=f"sqlite:///{storage}").get_trials()


def test_record_is_refused_while_a_driver_holds_the_study_and_writes_nothing(made, tmp_path, one_line_error):
    storage = tmp_path / "study.db"
    config = ("--config", str(made / "study.yaml"))
    holder = start_holder(str(storage), "rec")
    try:  # a new study: not even the database is created
        line = one_line_error(argv(made, storage, "a", *config))
        assert f"study 'rec' in sqlite:///{storage} is held by process {holder.pid} on host" in line
        assert socket.gethostname() in line and "--wait" in line
        assert [p.name for p in tmp_path.iterdir()] == [lock_file(storage, "rec").name]  # no database
    finally:
        stop(holder)
    assert main(argv(made, storage, "a", *config)) == 0  # the holder is gone: recorded
    holder = start_holder(str(storage), "rec")
    try:  # an existing study: no trial added, nothing in its store
        store = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
        line = one_line_error(argv(made, storage, "b"))
        assert f"is held by process {holder.pid}" in line
        assert len(trials(storage)) == 1
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == store
    finally:
        stop(holder)
    holder = start_holder(str(storage), "rec-other")  # another study of the storage does not hold this one
    try:
        assert main(argv(made, storage, "b")) == 0
    finally:
        stop(holder)
    assert [t.user_attrs["lineage"]["point"] for t in trials(storage)] == ["l2=0.005,seed=0", "l2=0.0005,seed=0"]


def test_record_wait_records_once_the_holder_ends(made, tmp_path, capsys):
    storage = tmp_path / "study.db"
    marker = tmp_path / "released"
    holder = start_holder(str(storage), "rec", seconds=2, marker=marker)
    try:
        assert main(argv(made, storage, "a", "--config", str(made / "study.yaml"), "--wait")) == 0
        assert marker.exists()  # it recorded only after the holder let go
        assert f"is held by process {holder.pid}" in capsys.readouterr().err  # it said whom it waited for
    finally:
        stop(holder)
    assert [t.state.name for t in trials(storage)] == ["COMPLETE"]
