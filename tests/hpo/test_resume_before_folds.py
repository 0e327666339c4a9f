"""A study stored before ``split.folds`` / ``metrics`` existed resumes with today's config (the new keys at
their neutral values are not a difference); a real change of them still is."""

from __future__ import annotations

import io

import pytest

from hpo.study import prepare_study
from hpo.study_config import study_config
from lgeseg.config import without_neutral
from lgeseg.errors import ConfigError


def _data():
    return {"data_dir": "x", "labels": {}, "synthetic": True, "data_fingerprint": None, "split": None}


def test_old_study_config_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    config = study_config({"name": "s"})
    old = without_neutral(config)
    assert "metrics" not in old and "folds" not in old["split"]  # as stored before issue 20
    prepare_study(old, "s", storage, tmp_path, resume=False, data=_data(), stream=io.StringIO())
    prepare_study(config, "s", storage, tmp_path, resume=True, data=_data(), stream=io.StringIO())
    changed = study_config({"name": "s", "metrics": {"nsd_tolerance_mm": 1.0}})
    with pytest.raises(ConfigError, match=r"differs .*metrics \(None stored"):
        prepare_study(changed, "s", storage, tmp_path, resume=True, data=_data(), stream=io.StringIO())
