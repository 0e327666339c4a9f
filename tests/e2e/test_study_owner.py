"""``--resume`` records only into a study this tool created for that command (optuna#2989): not into a
search's sampler study, not into a search's record from ``grid`` (or the reverse), not into a study
another tool made."""

from __future__ import annotations

import optuna
import pytest
import yaml
from conftest import tiny_study
from test_search_ray import tiny as tiny_search

from hpo.run import main
from hpo.storage import open_storage
from hpo.study_owner import CREATED_BY, claim_study
from lgeseg.errors import UserError
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory, ray_cluster):
    """One finished search (record 'tiny' and sampler 'tiny/sampler') and one grid config."""
    root = tmp_path_factory.mktemp("owner")
    data_dir = generate_phantom(root / "phantom", n_patients=5, seed=3)
    grid_path, search_path = root / "grid.yaml", root / "search.yaml"
    grid_path.write_text(yaml.safe_dump(tiny_study(data_dir, train={"epochs": 1})))
    search = tiny_search(data_dir, {"sampler": "random", "n_trials": 1, "seeds_per_trial": 1}, train={"epochs": 1})
    search_path.write_text(yaml.safe_dump(search))
    out = root / "study"
    assert main(["search", "--config", str(search_path), "--out", str(out), "--no-report"]) == 0
    return grid_path, search_path, out


def _trials(out, name):
    return len(optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}").trials)


@pytest.mark.parametrize(
    "command, name, what",
    [
        ("grid", "tiny/sampler", "the sampler study of study 'tiny'"),
        ("grid", "tiny", "a search study, not a grid study"),
        ("search", "tiny/sampler", "the sampler study of study 'tiny'"),
    ],
)
def test_resume_refuses_a_study_of_another_kind(setup, one_line_error, command, name, what):
    grid_path, search_path, out = setup
    before = _trials(out, name)
    config = grid_path if command == "grid" else search_path
    line = one_line_error(
        [command, "--config", str(config), "--out", str(out), "--study-name", name, "--resume", "--no-report"]
    )
    assert f"study '{name}' in sqlite:///{out / 'study.db'} is {what}" in line
    assert _trials(out, name) == before  # nothing recorded into it


def test_resume_refuses_a_study_another_tool_made(tmp_path, ray_cluster, one_line_error):
    data_dir = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(tiny_study(data_dir)))
    out = tmp_path / "study"
    out.mkdir()
    other = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="tiny")
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    line = one_line_error(["grid", "--config", str(path), "--out", str(out), "--resume", "--no-report"])
    assert "is a study this tool did not create" in line
    assert _trials(out, "tiny") == 2


def test_claim_marks_new_studies_and_accepts_its_own_and_old_records(tmp_path):
    storage = open_storage(tmp_path / "s.db")
    new = optuna.create_study(storage=storage, study_name="new")
    claim_study(new, "grid", "s.db")
    assert new.user_attrs[CREATED_BY] == {"tool": "lgeseg", "command": "grid"}
    claim_study(new, "grid", "s.db")  # its own: fine
    with pytest.raises(UserError, match="is a grid study, not a search study"):
        claim_study(new, "search", "s.db")
    old = optuna.create_study(storage=storage, study_name="old")  # a record from before created_by
    old.set_user_attr("config", {"name": "old", "grid": {"l2": [1e-3]}})
    claim_study(old, "grid", "s.db")
    assert old.user_attrs[CREATED_BY]["command"] == "grid"
