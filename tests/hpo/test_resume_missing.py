"""``--resume`` of a study the storage does not hold (a mistyped ``--study-name`` or ``--storage``) is one line
before Ray starts and before any folder or database file is made; it never starts a new study."""

from __future__ import annotations

import optuna
import pytest

from hpo.storage import check_resumable
from lgeseg.errors import UserError


def _argv(data, out, *extra):
    return ["grid", "--data", str(data), "--out", str(out), "--set", "train.batch_size=4", "--resume", *extra]


def test_resume_of_a_missing_study_writes_nothing(tiny_data_dir, tmp_path, one_line_error):
    out = tmp_path / "nosuch"
    line = one_line_error(_argv(tiny_data_dir, out, "--study-name", "nosuch"))
    assert line == (
        f"error: --resume: no study 'nosuch' in sqlite:///{out / 'study.db'} (studies there: none); "
        "run without --resume to start it"
    )
    assert not out.exists()


def test_resume_names_the_studies_the_storage_holds(tiny_data_dir, tmp_path, one_line_error):
    db = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=db, study_name="quick")
    optuna.create_study(storage=db, study_name="quick/sampler").set_user_attr("record_study", "quick")
    line = one_line_error(_argv(tiny_data_dir, tmp_path / "s", "--storage", db, "--study-name", "quik"))
    assert "no study 'quik'" in line and "(studies there: quick)" in line  # the sampler study is no choice
    check_resumable(db, "quick")  # the one that is there passes


@pytest.mark.parametrize("suffix", [".db", ".log"])
def test_check_resumable_never_creates_the_storage_file(tmp_path, suffix):
    path = tmp_path / f"missing{suffix}"
    with pytest.raises(UserError, match="no study 'x'"):
        check_resumable(str(path), "x")
    assert not path.exists()
