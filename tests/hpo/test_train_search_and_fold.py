"""``train`` with a search config (its own ``train.l2``, seed 0, no grid axes) and with ``--fold`` under
``split.folds`` (one cross-validation replicate, named and recorded as the study's)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import RECORD_STUDY, tiny_study, tiny_train_args

import hpo.run

ROOT = Path(__file__).resolve().parents[2]
TINY = tiny_train_args(epochs=1)
SEARCH = {"search": {"n_trials": 2, "space": {"train.l2": {"low": 1e-6, "high": 1e-1, "log": True}}}}


def _search_config(path: Path, data: Path, **train) -> Path:
    values = {"name": "tiny-search", "data": str(data), "model": {"width": 4, "depth": 2}, **SEARCH}
    values["train"] = {"epochs": 1, "batch_size": 4, **train}
    values["resources"] = {"gpu": 0, "cpu": 1}
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def seen(monkeypatch):
    """What ``train`` hands to :func:`lgeseg.run.run` (the run itself is not done)."""
    found = {}

    def fake_run(config, out, **kwargs):
        found["config"], found["out"] = config, Path(out)
        raise SystemExit(0)

    monkeypatch.setattr("lgeseg.run.run", fake_run)
    return found


def _train(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        hpo.run.main(["train", *argv])


@pytest.mark.parametrize(
    ("extra", "l2", "seed"),
    [
        ([], 2e-3, 0),
        (["--l2", "0.001"], 1e-3, 0),
        (["--l2", "0.001", "--seed", "3"], 1e-3, 3),
        (["--seed", "2"], 2e-3, 2),
    ],
)
def test_a_search_config_trains_its_own_l2_at_seed_0(extra, l2, seed, seen, tiny_data_dir, tmp_path):
    config = _search_config(tmp_path / "search.yaml", tiny_data_dir, l2=2e-3)
    _train(["--config", str(config), *TINY, *extra])
    assert seen["config"]["train"]["l2"] == l2 and seen["config"]["seed"] == seed
    assert seen["config"]["model"]["width"] == 4 and seen["config"]["split"]["fold"] == 0
    assert seen["out"] == Path("runs") / "tiny-search-train" / f"l2={l2:g}_seed={seed}"


def test_a_search_over_other_keys_trains_the_configs_own_values(seen, tiny_data_dir, tmp_path):
    config = _search_config(tmp_path / "search.yaml", tiny_data_dir, l2=3e-4, learning_rate=2e-3)
    text = yaml.safe_load(config.read_text())
    text["search"]["space"] = {
        "train.learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
        "model.width": {"choices": [4, 8]},
    }
    config.write_text(yaml.safe_dump(text))
    _train(["--config", str(config), *TINY])
    assert seen["config"]["train"]["learning_rate"] == 2e-3 and seen["config"]["train"]["l2"] == 3e-4


def test_the_shipped_search_config_trains(capsys, tiny_data_dir, tmp_path):
    """study_configs/l2-search.yaml, which crashed with KeyError 'grid' (then 'seeds', then 'choices')."""
    out = tmp_path / "run"
    argv = ["train", "--config", str(ROOT / "study_configs" / "l2-search.yaml"), "--data", str(tiny_data_dir)]
    argv += [*TINY, "--set", "model.depth=2", "--set", "resources.cpu=1", "--seed", "3", "--out", str(out)]
    assert hpo.run.main(argv) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["seed"] == 3 and info["l2"] == 5e-4 and info["epochs_run"] == 1  # train.l2: the run default


@pytest.mark.parametrize(("extra", "fold"), [([], 0), (["--fold", "1"], 1), (["--fold", "2"], 2)])
@pytest.mark.parametrize("kind", ["grid", "search"])
def test_fold_is_the_replicates_fold_and_names_the_folder(kind, extra, fold, seen, tiny_data_dir, tmp_path):
    config = _search_config(tmp_path / "s.yaml", tiny_data_dir, l2=5e-3) if kind == "search" else None
    argv = ["--config", str(config)] if config else ["--data", str(tiny_data_dir)]
    _train([*argv, *TINY, "--set", "split.folds=3", *extra])
    assert seen["config"]["split"]["folds"] == 3 and seen["config"]["split"]["fold"] == fold
    assert seen["out"].name == f"l2=0.005_seed=0_fold={fold}"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--set", "split.folds=3", "--fold", "3"], "error: --fold 3: outside the folds 0..2 of split.folds: 3"),
        (["--set", "split.folds=3", "--fold", "-1"], "error: --fold -1: outside the folds 0..2 of split.folds: 3"),
        (["--fold", "1"], "error: --fold 1: the config has no split.folds (no cross-validation)"),
        (
            ["--set", "split.folds=3", "--set", "split.fold=1"],
            "leave split.fold out; train one fold with train --fold F",
        ),
    ],
)
def test_a_fold_outside_the_folds_is_one_line(extra, expected, tiny_data_dir, tmp_path, one_line_error):
    line = one_line_error(["train", "--data", str(tiny_data_dir), *TINY, *extra, "--out", str(tmp_path / "o")])
    assert expected in line
    assert not (tmp_path / "o").exists()


def test_a_trained_fold_is_recorded_as_the_studys_replicate(make_dataset_dir, tmp_path, capsys):
    data = make_dataset_dir(n_patients=6, slices=2)
    config = tmp_path / "cv.yaml"
    study = tiny_study(data, RECORD_STUDY, split={"folds": 3}, train={"epochs": 1, "batch_size": 4})
    config.write_text(yaml.safe_dump(study))
    out = tmp_path / "fold1"
    assert hpo.run.main(["train", "--config", str(config), "--l2", "0.0005", "--fold", "1", "--out", str(out)]) == 0
    assert json.loads((out / "split.json").read_text())["fold"] == 1
    storage = tmp_path / "s" / "study.db"
    argv = ["record", str(out), "--storage", str(storage), "--study-name", "rec", "--config", str(config)]
    assert hpo.run.main(argv) == 0, capsys.readouterr().err
    (trial,) = optuna.load_study(study_name="rec", storage=f"sqlite:///{storage}").get_trials()
    assert trial.params["fold"] == 1 and trial.params["seed"] == 0 and trial.params["l2"] == 5e-4
    assert trial.user_attrs["lineage"]["point"] == "l2=0.0005,seed=0,fold=1"
