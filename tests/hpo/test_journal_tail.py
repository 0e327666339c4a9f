"""A journal file whose last append was cut off by a crash (optuna#5138): the half record is moved into a
side file with a warning and the study goes on; nothing whole is lost."""

from __future__ import annotations

import logging

import optuna
import pytest

from hpo.storage import StorageError, open_storage, repair_journal, start_study


def _journal_with_trials(path, n: int = 3) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(f"journal:{path}"), study_name="s")
    for i in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(i)))


def _values(path) -> list[float]:
    return [t.value for t in optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}")).trials]


def _record(path) -> bytes:
    """A real record of this journal: its last whole line."""
    return path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[1]


@pytest.mark.parametrize("cut", [1, 0.5, -1])  # after the first byte, half-way, all but the newline
def test_a_half_written_last_record_is_moved_aside_and_the_study_goes_on(tmp_path, caplog, cut):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    whole = path.read_bytes()
    record = _record(path)
    half = record[: int(len(record) * cut)] if isinstance(cut, float) else record[:cut]
    with path.open("ab") as f:  # the crash: the append stops mid-record
        f.write(half)
    with caplog.at_level(logging.WARNING, logger="hpo.storage"):
        study = start_study(f"journal:{path}", "s", resume=True)  # what --resume does
    warnings = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert len(warnings) == 1 and str(path) in warnings[0]
    sides = list(tmp_path.glob("study.log.torn-*"))
    assert len(sides) == 1 and sides[0].read_bytes() == half + b"\n" and sides[0].name in warnings[0]
    assert path.read_bytes().startswith(whole)  # nothing whole was lost (opening may append a record)
    study.add_trial(optuna.trial.create_trial(value=9.0))  # the next write no longer breaks the journal
    assert _values(path) == [0.0, 1.0, 2.0, 9.0]


def test_a_journal_already_appended_after_the_half_record_is_mended(tmp_path):
    path = tmp_path / "study.log"
    _journal_with_trials(path, 4)
    last = _record(path)  # the fourth trial's record: the write after the crash
    path.write_bytes(path.read_bytes()[: -len(last) - 1])
    half = _record(path)[:25]
    with path.open("ab") as f:  # a crash mid-append, then an unrepaired append glued onto the half line
        f.write(half + last + b"\n")
    raw = optuna.load_study(
        study_name="s", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    )
    assert len(raw.trials) == 3  # Optuna alone silently drops the glued record (and fails once more follow)
    assert _values(path) == [0.0, 1.0, 2.0, 3.0]  # opened through hpo.storage: the glued record is kept
    assert list(tmp_path.glob("study.log.torn-*"))[0].read_bytes() == half + b"\n"


def test_a_whole_journal_is_left_alone(tmp_path):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    before = path.read_bytes()
    assert repair_journal(path) is None
    assert path.read_bytes() == before and not list(tmp_path.glob("*.torn-*"))


def test_a_line_that_is_no_record_is_one_line_naming_it(tmp_path, one_line_error):
    path = tmp_path / "study.log"
    _journal_with_trials(path)
    lines = path.read_bytes().split(b"\n")
    lines.insert(2, b"not a record")
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(StorageError, match=rf"journal {path}: line 3 is not an Optuna record"):
        open_storage(f"journal:{path}")
    line = one_line_error(["report", "--storage", str(path), "--study-name", "s"])
    assert "line 3 is not an Optuna record" in line
