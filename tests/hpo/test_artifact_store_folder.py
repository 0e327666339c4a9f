"""Where ``predict``/``export`` (one study's attrs) and ``dashboard`` (every study's) find the artifact store
(:func:`hpo.artifacts.store_folder`): ``--artifacts``, else the studies' ``artifact_store`` attr, else
``artifacts/`` beside the storage file."""

from __future__ import annotations

import logging

import optuna
import pytest

from hpo.artifacts import STORE_ATTR, store_folder
from lgeseg.errors import DataError


def _studies(*stores):
    """One study per entry of ``stores`` (None: no artifact_store attr) in an in-memory storage: every study's
    user attrs (what ``dashboard`` passes), and each study's own as a list of one (what ``predict`` passes)."""
    storage = optuna.storages.InMemoryStorage()
    made = []
    for i, folder in enumerate(stores):
        study = optuna.create_study(storage=storage, study_name=f"s{i}")
        if folder is not None:
            study.set_user_attr(STORE_ATTR, str(folder))
        made.append(study)
    return [s.user_attrs for s in storage.get_all_studies()], [[s.user_attrs] for s in made]


def test_given_folder_wins_and_a_missing_one_is_one_error(tmp_path):
    given, recorded = tmp_path / "given", tmp_path / "recorded"
    given.mkdir()
    recorded.mkdir()
    every, (study,) = _studies(recorded)
    assert store_folder(study, None, given) == given
    assert store_folder(every, None, given) == given
    for find in (lambda g: store_folder(study, None, g), lambda g: store_folder(every, None, g)):
        with pytest.raises(DataError, match=r"--artifacts .*nowhere: folder not found"):
            find(tmp_path / "nowhere")


def test_recorded_folder_then_the_one_beside_the_storage_file(tmp_path):
    db = tmp_path / "study.db"
    beside = tmp_path / "artifacts"
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    every, (with_attr, gone, without) = _studies(recorded, tmp_path / "moved-away", None)
    assert store_folder(with_attr, db) == recorded
    assert store_folder(gone, db) is None and store_folder(without, db) is None  # nothing beside the file yet
    beside.mkdir()
    assert store_folder(gone, db) == beside and store_folder(without, db) == beside
    assert store_folder(without, None) is None  # a database server has no file to look beside
    assert store_folder(every, db) == recorded  # a recorded store comes before the one beside the file


def test_dashboard_serves_the_first_of_several_stores_and_says_so(tmp_path, caplog):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    warnings = lambda: [r.getMessage() for r in caplog.records if r.name == "hpo.artifacts"]  # noqa: E731
    every, _ = _studies(first, first)
    with caplog.at_level(logging.WARNING, logger="hpo.artifacts"):
        assert store_folder(every, None) == first
    assert warnings() == []  # one store shared by two studies is one store
    every, _ = _studies(first, None, second)
    with caplog.at_level(logging.WARNING, logger="hpo.artifacts"):
        assert store_folder(every, None) == first
    assert len(warnings()) == 1 and "2 artifact stores" in warnings()[0]
