"""hpo.storage: storage arguments, one-line failures and the wait for a busy SQLite database (no Ray)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest

from hpo.storage import (
    WAIT_ENV,
    StorageError,
    default_storage,
    find_storage,
    journal_path,
    mask_url,
    open_storage,
    resolve,
    sqlite_path,
)

#: Storages that cannot be opened, and what their one line must name: a URL SQLAlchemy cannot read, an
#: unknown back end, a driver that is not installed, a server nobody answers at (password masked in all).
BAD_STORAGES = [
    ("sqlite://nohost/x.db", "Invalid SQLite URL"),
    ("nosuchdb://bob:s3cret@127.0.0.1/x", "sqlalchemy.dialects:nosuchdb"),
    ("mysql://bob:s3cret@127.0.0.1/x", "driver is not installed"),
    ("postgresql+psycopg://bob:s3cret@127.0.0.1:9/x", "127.0.0.1"),
]


def test_resolve_bare_paths_and_urls():
    assert resolve("runs/x/study.db") == "sqlite:///runs/x/study.db"
    assert resolve("/abs/study.db") == "sqlite:////abs/study.db"
    assert resolve(Path("runs/x/study.log")) == "journal:runs/x/study.log"
    for url in ("sqlite:///a.db", "postgresql://u:p@h/db", "journal:///abs/s.log", "journal:rel.log"):
        assert resolve(url) == url
    assert sqlite_path(resolve("runs/x/study.db")) == Path("runs/x/study.db")
    assert sqlite_path("sqlite:///:memory:") is None and sqlite_path("postgresql://h/db") is None
    assert journal_path("journal:///abs/s.log") == Path("/abs/s.log")
    assert journal_path("rel/s.log") == Path("rel/s.log") and journal_path("sqlite:///a.db") is None
    assert default_storage(Path("runs") / "demo") == "sqlite:///runs/demo/study.db"
    assert resolve("C:/runs/study.db") == "sqlite:///C:/runs/study.db"  # a drive letter is no URL scheme


@pytest.mark.parametrize("text", ["sqlite:/tmp/x.db", "sqlite:x.db", "postgresql:bob:s3cret@h/db", "mysql+pymysql:x"])
def test_a_database_url_without_its_slashes_is_one_line_without_the_value(text, one_line_error):
    """``sqlite:/x.db`` is a mistyped URL: it was taken for a file name (``sqlite:///sqlite:/x.db``, "not found");
    the value may hold a password, so it is not repeated."""
    with pytest.raises(StorageError, match=r"--storage: a URL needs '://' after '[a-z+]+:'"):
        resolve(text)
    line = one_line_error(["report", "--storage", text])
    assert "needs '://'" in line and "s3cret" not in line
    assert mask_url("postgresql://bob:s3cret@h:5432/db") == "postgresql://bob:***@h:5432/db"


def test_find_storage_needs_exactly_one_study_folder(tmp_path):
    with pytest.raises(StorageError, match="0 study databases"):
        find_storage(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "study.db").touch()
    assert find_storage(tmp_path) == f"sqlite:///{(tmp_path / 'a').resolve() / 'study.db'}"


def test_bare_path_opens_the_same_study_as_its_url(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    optuna.create_study(storage="sqlite:///study.db", study_name="s").enqueue_trial({"x": 1})
    study = optuna.load_study(study_name="s", storage=open_storage("study.db"))
    assert len(study.get_trials()) == 1


@pytest.mark.parametrize("url,expected", BAD_STORAGES)
def test_unopenable_storage_is_one_line_for_report_and_dashboard(url, expected, one_line_error):
    for command in ("report", "dashboard"):
        line = one_line_error([command, "--storage", url])
        assert expected in line and "s3cret" not in line and "max length" not in line


# ------------------------------------------------------------------------------ a busy database


@contextmanager
def locked(db: Path, seconds: float):
    """A second process holding an exclusive SQLite lock on ``db`` for ``seconds`` (until it ends)."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def small_study(tmp_path: Path) -> str:
    """A study with one finished trial and the attributes ``report`` reads; its sqlite URL."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="busy", direction="maximize")
    study.set_user_attr("out_dir", str(tmp_path))
    study.add_trial(
        optuna.trial.create_trial(
            params={"l2": 1e-3},
            value=0.5,
            user_attrs={"trial_name": "t0"},
            distributions={"l2": optuna.distributions.FloatDistribution(1e-6, 1)},
        )
    )
    return url


def test_report_waits_for_a_lock_shorter_than_the_wait(tmp_path, monkeypatch, caplog):
    url = small_study(tmp_path)
    monkeypatch.setenv(WAIT_ENV, "30")
    from dashboards.report import build_report

    with locked(tmp_path / "study.db", 1.5) as holder:
        path = build_report(url, "busy")
        assert holder.poll() is not None  # the report got through only after the lock went
    assert path.is_file() and "is busy" in caplog.text and "waiting up to 30 s" in caplog.text
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    loaded = optuna.load_study(study_name="busy", storage=url)
    graphs = get_plotly_graph_objects(loaded._storage.get_study_system_attrs(loaded._study_id))
    assert "report-figure1" in graphs  # the figures were saved into the study too


def test_report_and_dashboard_give_up_on_a_longer_lock_in_one_line(tmp_path, monkeypatch, one_line_error):
    url = small_study(tmp_path)
    before = optuna.load_study(study_name="busy", storage=url)
    monkeypatch.setenv(WAIT_ENV, "0.5")
    with locked(tmp_path / "study.db", 60):
        for command in ("report", "dashboard"):
            line = one_line_error([command, "--storage", str(tmp_path / "study.db")])
            assert "stayed busy for 0.5 s" in line and "database is locked" in line and "max length" not in line
    after = optuna.load_study(study_name="busy", storage=url)
    assert after.user_attrs == before.user_attrs and after.trials == before.trials


def test_dashboard_waits_for_a_lock_shorter_than_the_wait(tmp_path, monkeypatch, capsys):
    import types

    import hpo.commands.dashboard
    from hpo.run import main

    small_study(tmp_path)
    served = []

    def bind(storage, host, port, artifact_store=None):  # bound once the storage opened; serves nothing here
        served.append(storage.get_all_studies()[0].study_name)
        return types.SimpleNamespace(serve_forever=lambda: None, server_close=lambda: None)

    monkeypatch.setattr(hpo.commands.dashboard, "bind_server", bind)
    monkeypatch.setenv(WAIT_ENV, "30")
    with locked(tmp_path / "study.db", 1.0):
        assert main(["dashboard", "--storage", str(tmp_path / "study.db")]) == 0
    assert served == ["busy"]


def test_bad_wait_setting_is_one_line(tmp_path, monkeypatch, one_line_error):
    small_study(tmp_path)
    monkeypatch.setenv(WAIT_ENV, "soon")
    assert WAIT_ENV in one_line_error(["report", "--storage", str(tmp_path / "study.db")])
