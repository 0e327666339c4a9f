"""``record``: train run folders into a grid study, what the record holds, and every refusal (nothing written).

Tiny ``train`` runs (8 x 16 x 16 slices, width 4, 2 epochs) made once per module; each test records copies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import RECORD_L2S as L2S
from conftest import RECORD_STUDY, tiny_study, write_dataset_dir

from hpo.run import main

ROOT = Path(__file__).resolve().parents[2]


def write_config(path: Path, data: Path, **sections) -> Path:
    """The record tests' study (:data:`conftest.RECORD_STUDY`) on ``data`` with ``sections`` merged in, as YAML."""
    path.write_text(yaml.safe_dump(tiny_study(data, RECORD_STUDY, **sections)))
    return path


def train(config: Path, out: Path, l2: float, seed: int = 0, *extra: str) -> Path:
    import torch

    torch.set_num_threads(1)  # as a grid trial with resources.cpu 1
    argv = ["train", "--config", str(config), "--l2", str(l2), "--seed", str(seed), "--out", str(out), *extra]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """``data/``, ``other/`` (other pixels), ``study.yaml`` and runs: ``l2=<L2>`` (the grid's three points,
    seed 0), ``seed1`` (a seed the study does not have), ``lr`` (another learning rate), ``other`` (other data)."""
    base = tmp_path_factory.mktemp("record")
    data = write_dataset_dir(base / "data")
    other = write_dataset_dir(base / "other", seed=5)
    config = write_config(base / "study.yaml", data)
    for l2 in L2S:
        train(config, base / "runs" / f"l2={l2:g}", l2)
    train(config, base / "runs" / "seed1", L2S[0], 1)
    train(write_config(base / "lr.yaml", data, train={"learning_rate": 3e-3}), base / "runs" / "lr", L2S[0])
    train(write_config(base / "other.yaml", other), base / "runs" / "other", L2S[0])
    return base


@pytest.fixture
def runs(made, tmp_path) -> Path:
    """A fresh copy of the module's runs."""
    return Path(shutil.copytree(made / "runs", tmp_path / "runs"))


def record(made: Path, tmp_path: Path, *folders: Path, config: bool = True) -> list[str]:
    argv = ["record", *map(str, folders), "--storage", str(tmp_path / "s" / "study.db"), "--study-name", "rec"]
    return argv + (["--config", str(made / "study.yaml")] if config else [])


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="rec", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}").get_trials()


def test_record_writes_the_trials_a_grid_writes(made, runs, tmp_path, capsys):
    folders = [runs / f"l2={l2:g}" for l2 in L2S]
    assert main(record(made, tmp_path, *folders)) == 0
    assert "3 run(s) recorded" in capsys.readouterr().out
    trials = _trials(tmp_path)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    first = trials[0]
    info = json.loads((folders[0] / "run.json").read_text())
    val = json.loads((folders[0] / "val_metrics.json").read_text())
    assert first.value == val["dataset"]["MeanIoU"]
    assert first.params == {
        "l2": 5e-3,
        "learning_rate": 1e-3,
        "batch_size": 8,
        "epochs": 2,
        "seed": 0,
        "rerun": 0,
        "architecture": "matlab-unet",
        "loss": "cross-entropy",
    }
    history = (folders[0] / "history.csv").read_text().splitlines()
    epochs = {int(r.split(",")[0]): float(r.split(",")[4]) for r in history[1:]}
    assert first.intermediate_values == epochs and sorted(epochs) == [1, 2]
    attrs = first.user_attrs
    assert attrs["trial_name"] == "l2=0.005_seed=0_rerun=0" and attrs["trial_dir"] == str(folders[0].resolve())
    assert attrs["lineage"] == {"point": "l2=0.005,seed=0", "rerun": 0, "rerun_of": None, "adjustment": None}
    assert attrs["test_metrics"] == json.loads((folders[0] / "metrics.json").read_text())
    assert attrs["split_hash"] == info["split_hash"] and attrs["config_hash"] == info["config_hash"]
    study = optuna.load_study(study_name="rec", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    assert study.user_attrs["data_fingerprint"] == info["data_fingerprint"]
    assert study.user_attrs["labels"] == info["labels"] and study.user_attrs["config"]["grid"]["l2"] == list(L2S)
    # the checkpoint the run evaluated (train.select final, the default: last.pt) and its config are in the store
    registered = attrs["checkpoints"]
    assert set(registered) == {"config.yaml", "last.pt"}
    assert registered["last.pt"]["bytes"] < (folders[0] / "last.pt").stat().st_size / 2  # no optimizer state
    metas = optuna.artifacts.get_all_artifact_meta(first, storage=study._storage)
    assert {m.filename for m in metas} == {"config.yaml", "last.pt"}
    # appended to the existing study later: the study keeps its config; --config is optional
    assert main(record(made, tmp_path, runs / "seed1", config=False)) != 0  # seed 1 is not a replicate


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("other", "was made from other data"),
        ("lr", "not the protocol of study 'rec': train.learning_rate is 0.003, the study's is 0.001"),
        ("seed1", "seed=1 is not a replicate of study 'rec' (seed=0)"),
        ("nofolder", "run folder not found"),
        ("unfinished", "not a finished train run (run.json missing)"),
        ("nohistory", "not a finished train run (history.csv missing)"),
        ("notfinished", "not a finished train run (run.json does not say finished)"),
        ("edited", "config.yaml is not the config run.json was written for"),
        ("truncated", "unreadable run file"),
    ],
)
def test_a_refused_folder_refuses_all_and_writes_nothing(made, runs, tmp_path, one_line_error, which, expected):
    good = runs / "l2=0.005"
    bad = runs / which
    if which in ("unfinished", "nohistory", "notfinished", "edited", "truncated"):  # lgeseg.run.read_run's refusals
        shutil.copytree(good, bad)
    if which == "unfinished":
        (bad / "run.json").unlink()
    if which == "nohistory":
        (bad / "history.csv").unlink()
    if which == "notfinished":
        info = json.loads((bad / "run.json").read_text())
        (bad / "run.json").write_text(json.dumps({**info, "finished": False}))
    if which == "edited":
        (bad / "config.yaml").write_text((bad / "config.yaml").read_text().replace("epochs: 2", "epochs: 3"))
    if which == "truncated":
        text = (bad / "metrics.json").read_text()
        (bad / "metrics.json").write_text(text[: len(text) // 2])
    line = one_line_error(record(made, tmp_path, good, bad))
    assert str(bad.name) in line and expected in line
    assert not (tmp_path / "s").exists()  # no database, no study folder


def test_already_recorded_is_refused(made, runs, tmp_path, one_line_error):
    good = runs / "l2=0.005"
    assert main(record(made, tmp_path, good)) == 0
    line = one_line_error(record(made, tmp_path, good))
    assert line.endswith(f"{good.resolve()}: already recorded in study 'rec' as trial 0")
    copy = shutil.copytree(good, runs / "again")  # the same configuration and replicate from another folder
    line = one_line_error(record(made, tmp_path, runs / "l2=5e-05", copy))
    assert "l2=0.005,seed=0 is already COMPLETE in study 'rec' (trial 0)" in line and "again" in line
    assert len(_trials(tmp_path)) == 1  # the good l2=5e-05 folder was not recorded either
    line = one_line_error(record(made, tmp_path, runs / "l2=5e-05", runs / "l2=5e-05"))
    assert "is given twice" in line


def test_a_point_outside_the_grid_and_a_missing_config_are_refused(made, runs, tmp_path, one_line_error):
    line = one_line_error(["record", str(runs / "l2=0.005"), "--storage", str(tmp_path / "x.db"), "--study-name", "n"])
    assert "study 'n' is not in" in line and "give --config FILE" in line
    narrow = write_config(tmp_path / "narrow.yaml", made / "data", grid={"l2": [5e-4]})
    argv = ["record", str(runs / "l2=0.005"), "--storage", str(tmp_path / "x.db"), "--study-name", "n"]
    line = one_line_error([*argv, "--config", str(narrow)])
    assert "train.l2=0.005 is not a point of study 'n' (train.l2: [0.0005])" in line
    assert not (tmp_path / "x.db").exists()


def test_record_runs_where_ray_cannot_be_imported(made, runs, tmp_path):
    """In a subprocess with ``ray`` made unimportable, as on a GPU machine without Ray."""
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from hpo.run import main\n"
        f"code = main({record(made, tmp_path, runs / 'l2=0.005')!r})\n"
        "assert code == 0, code\n"
        "assert [m for m in sys.modules if m == 'ray' or m.startswith('ray.')] == ['ray'], 'ray imported'\n"
        "assert sys.modules['ray'] is None\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_trials(tmp_path)) == 1


def test_a_run_without_checkpoints_is_recorded_and_predict_says_so(made, runs, tmp_path, capsys, one_line_error):
    """A folder copied back from a GPU machine without its checkpoints: recorded (report and dashboard use it),
    with a note; ``predict`` of it is one error line."""
    bare = runs / "l2=0.005"
    for checkpoint in bare.glob("*.pt"):
        checkpoint.unlink()
    assert main(record(made, tmp_path, bare)) == 0
    assert "no checkpoint registered" in capsys.readouterr().err
    (trial,) = _trials(tmp_path)
    assert trial.state.name == "COMPLETE" and "checkpoints" not in trial.user_attrs
    argv = ["predict", "--storage", str(tmp_path / "s" / "study.db"), "--study-name", "rec", "--trial", "0"]
    line = one_line_error([*argv, "--input", str(made / "data"), "--out", str(tmp_path / "p")])
    assert "last.pt: checkpoint not found" in line


def test_predict_fetches_a_deleted_checkpoint_from_the_store(made, runs, tmp_path, monkeypatch):
    monkeypatch.setenv("LGESEG_CACHE", str(tmp_path / "cache"))
    good = runs / "l2=0.005"
    assert main(record(made, tmp_path, good)) == 0
    argv = ["predict", "--storage", str(tmp_path / "s" / "study.db"), "--study-name", "rec", "--trial", "0"]
    assert main([*argv, "--input", str(made / "data"), "--out", str(tmp_path / "a")]) == 0
    (good / "last.pt").unlink()  # the folder is here, its checkpoint is not
    assert main([*argv, "--input", str(made / "data"), "--out", str(tmp_path / "b")]) == 0
    assert list((tmp_path / "cache" / "artifacts").glob("*/last.pt"))
    masks = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert masks and all((tmp_path / "a" / m).read_bytes() == (tmp_path / "b" / m).read_bytes() for m in masks)


def test_a_point_being_trained_is_refused(made, runs, tmp_path, one_line_error):
    assert main(record(made, tmp_path, runs / "l2=0.005")) == 0
    study = optuna.load_study(study_name="rec", storage=f"sqlite:///{tmp_path / 's' / 'study.db'}")
    running = study.ask()  # as a grid driver has it while it trains l2=0.0005, seed 0
    running.set_user_attr("lineage", {"point": "l2=0.0005,seed=0", "rerun": 0})
    line = one_line_error(record(made, tmp_path, runs / "l2=0.0005", config=False))
    assert f"is being trained in study 'rec' (trial {running.number} is RUNNING)" in line


def _rewrite_history(folder: Path, how: str) -> None:
    """Damage ``folder``'s history.csv (2 epochs, header epoch,train_loss,train_accuracy,val_loss,val_accuracy)."""
    path = folder / "history.csv"
    header, *rows = path.read_text().splitlines()
    text = {
        "header only": [header],
        "other columns": ["epoch,foo", "1,0.5", "2,0.6"],
        "cut short": [header, rows[0]],
        "empty": [],
        "repeated epoch": [header, rows[0], rows[0]],
        "extra epoch": [header, *rows, "3" + rows[1][1:]],
        "nan accuracy": [header, rows[0], rows[1].rsplit(",", 1)[0] + ",nan"],
        "short row": [header, rows[0], rows[1].rsplit(",", 2)[0]],
        "text cell": [header, rows[0], rows[1].rsplit(",", 1)[0] + ",high"],
    }[how]
    path.write_text("".join(f"{line}\n" for line in text))


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("header only", "holds epochs none, not one row for each epoch run (1-2, run.json's epochs_run)"),
        ("other columns", "no train_loss, train_accuracy, val_loss, val_accuracy column (header epoch,foo)"),
        ("cut short", "holds epochs 1, not one row for each epoch run (1-2"),
        ("empty", "no epoch, train_loss, train_accuracy, val_loss, val_accuracy column (header empty)"),
        ("repeated epoch", "holds epochs 1,1, not one row for each epoch run (1-2"),
        ("extra epoch", "holds epochs 1-3, not one row for each epoch run (1-2"),
        ("nan accuracy", "val_accuracy of epoch 2 is nan, not an accuracy"),
        ("short row", "line 3 is not a row of 5 numbers"),
        ("text cell", "line 3 is not a row of 5 numbers"),
    ],
)
def test_a_damaged_history_is_refused(made, runs, tmp_path, one_line_error, how, expected):
    """A history that does not hold one row per epoch run (run.json's epochs_run) with a finite validation
    accuracy would be recorded COMPLETE with too few intermediate values, past the retune rule's check."""
    from lgeseg.errors import DataError
    from lgeseg.run import read_run_folder

    good, bad = runs / "l2=0.005", runs / "l2=0.0005"
    _rewrite_history(bad, how)
    line = one_line_error(record(made, tmp_path, good, bad))
    assert f"{bad / 'history.csv'}: {expected}" in line
    assert not (tmp_path / "s").exists()
    with pytest.raises(DataError, match="history.csv"):  # every reader of a run folder refuses it
        read_run_folder(bad)


def test_epochs_run_that_is_not_a_count_is_refused(made, runs, tmp_path, one_line_error):
    bad = runs / "l2=0.005"
    info = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**info, "epochs_run": 3}))
    line = one_line_error(record(made, tmp_path, bad))
    assert "history.csv: holds epochs 1-2, not one row for each epoch run (1-3, run.json's epochs_run)" in line
    del info["epochs_run"]
    (bad / "run.json").write_text(json.dumps(info))
    line = one_line_error(record(made, tmp_path, bad))
    assert line.endswith(f"{bad}/run.json: epochs_run is None, not a number of epochs")


def _study_yaml(made: Path, tmp_path: Path, name: str, **sections) -> Path:
    return write_config(tmp_path / f"{name}.yaml", made / "data", **sections)


@pytest.mark.parametrize(
    ("retune", "recorded"),
    [
        ({"check_fraction": 0.0, "target_accuracy": 1.0}, True),  # switched off: never refuses
        ({"check_fraction": 0.5, "target_accuracy": 0.0}, True),  # target 0: never fires
        ({"check_fraction": 0.5, "target_accuracy": 1.0}, False),  # on: epoch 1's accuracy < 1
        ({"check_fraction": 1.0, "target_accuracy": 1.0}, False),  # checks at the last epoch
    ],
)
def test_the_retune_rule_refuses_only_a_run_it_would_have_stopped(
    made, runs, tmp_path, capsys, one_line_error, retune, recorded
):
    run = runs / "l2=0.005"
    accuracies = [float(r.split(",")[4]) for r in (run / "history.csv").read_text().splitlines()[1:]]
    assert max(accuracies) < 1.0  # so a rule that is on with target 1 fires
    config = _study_yaml(made, tmp_path, "rule", retune={**RECORD_STUDY["retune"], **retune})
    argv = ["record", str(run), "--storage", str(tmp_path / "s" / "study.db"), "--study-name", "rec"]
    if recorded:
        assert main([*argv, "--config", str(config)]) == 0
        assert [t.state.name for t in _trials(tmp_path)] == ["COMPLETE"]
    else:
        check = 1 if retune["check_fraction"] == 0.5 else 2
        line = one_line_error([*argv, "--config", str(config)])
        best = max(accuracies[:check])
        assert f"the study's retune rule would have stopped this run (validation accuracy {best:.4f} < 1" in line
        assert f"after {check} of 2 epochs" in line
        assert not (tmp_path / "s").exists()


def test_a_search_or_foreign_study_is_refused_naming_what_it_is_and_makes_no_folder(
    made, runs, tmp_path, monkeypatch, one_line_error
):
    """A sampler study ``rec/sampler`` (a search's or a grid's), a search's study, one another tool made: with or
    without --config, one line saying what the study is, nothing about --resume, and no folder (runs/<name>/)."""
    storage = tmp_path / "study.db"
    url = f"sqlite:///{storage}"
    sampler = optuna.create_study(study_name="rec/sampler", storage=url)
    sampler.set_user_attr("record_study", "rec")
    searched = optuna.create_study(study_name="searched", storage=url)
    searched.set_user_attr("created_by", {"tool": "lgeseg", "command": "search"})
    foreign = optuna.create_study(study_name="foreign", storage=url)
    foreign.add_trial(optuna.trial.create_trial(value=1.0))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    expected = {
        "rec/sampler": "is the sampler study of study 'rec', not a grid study: record will not write into it; its "
        "record is study 'rec'",
        "searched": "is a search study, not a grid study: record will not write into it",
        "foreign": "is a study this tool did not create (another tool, or by hand), not a grid study: record will",
    }
    for name, what in expected.items():
        argv = ["record", str(runs / "l2=0.005"), "--storage", str(storage), "--study-name", name]
        for extra in ([], ["--config", str(made / "study.yaml")]):
            line = one_line_error([*argv, *extra])
            assert f"study '{name}' in {url} {what}" in line and "--resume" not in line
    assert list(cwd.iterdir()) == []
    assert [len(optuna.load_study(study_name=n, storage=url).get_trials()) for n in expected] == [0, 0, 1]


def test_another_config_for_an_existing_study_names_the_key(made, runs, tmp_path, one_line_error):
    assert main(record(made, tmp_path, runs / "l2=0.005")) == 0
    for sections, key, now, was in [
        ({"train": {"learning_rate": 3e-3}}, "train.learning_rate", 0.003, 0.001),
        ({"grid": {"l2": [5e-3]}}, "grid.l2", [5e-3], list(L2S)),
        ({"seeds": [0, 1]}, "seeds", [0, 1], [0]),
    ]:
        other = _study_yaml(made, tmp_path, "other", **sections)
        argv = ["record", str(runs / "l2=0.0005"), "--storage", str(tmp_path / "s" / "study.db"), "--study-name", "rec"]
        line = one_line_error([*argv, "--config", str(other)])
        assert f"{other}: not the config study 'rec' was started with: {key} is {now!r}, the study's is {was!r}" in line
    assert len(_trials(tmp_path)) == 1


@pytest.mark.parametrize(
    ("trained", "study", "hint"),
    [
        (0.0, 0.5, "the study's retune rule checks at epoch 1, retune.check_fraction=0.5, and a run validates there"),
        (0.5, 0.0, "the study's retune rule is off, retune.check_fraction=0"),
        (0.5, 1.0, "the study's retune rule checks at epoch 2, retune.check_fraction=1, and a run validates there"),
    ],
)
def test_a_run_of_another_retune_rule_is_refused_saying_so(
    made, tmp_path, capsys, one_line_error, trained, study, hint
):
    """With validation_frequency, a run validates at its retune rule's check epoch (train.validation_epochs):
    a run trained under another rule is another protocol, and the line says it is the retune rule."""
    sections = {"train": {"validation_frequency": 1}, "retune": {**RECORD_STUDY["retune"], "check_fraction": trained}}
    run = train(_study_yaml(made, tmp_path, "trained", **sections), tmp_path / "run", L2S[0])
    capsys.readouterr()  # train's progress
    sections["retune"]["check_fraction"] = study
    argv = ["record", str(run), "--storage", str(tmp_path / "s" / "study.db"), "--study-name", "rec"]
    line = one_line_error([*argv, "--config", str(_study_yaml(made, tmp_path, "study", **sections))])
    assert "not the protocol of study 'rec': train.validation_epochs is" in line
    assert f"({hint}: the run was trained under another retune rule)" in line
    sections["retune"]["check_fraction"] = trained  # the same rule: recorded
    assert main([*argv, "--config", str(_study_yaml(made, tmp_path, "same", **sections))]) == 0
