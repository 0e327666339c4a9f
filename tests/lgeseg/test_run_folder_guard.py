"""A run never writes into a folder that is not a run folder (:func:`lgeseg.run.stored_run_config`).

A user's non-empty folder (their own ``metrics.json`` and ``history.csv``, notes in a ``config.yaml``) is refused
with one line and left byte for byte as it was; a new or empty folder, one a run left before it wrote its config,
and a run folder of the same config (continued or read back) keep working.
"""

from __future__ import annotations

import pytest
import yaml

import lgeseg.run as run_mod
from lgeseg.errors import TrainingError
from lgeseg.run import RUN_LOCK, run


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


#: Folders that are not run folders: file name -> content, and a piece of the one-line refusal.
NOT_RUN_FOLDERS = {
    "user results": ({"metrics.json": '{"my": "result"}', "history.csv": "epoch,mine\n"}, "not a run folder"),
    "notes only": ({"notes.txt": "my precious notes"}, "not a run folder (no config.yaml; it holds notes.txt)"),
    "run.json alone": ({"run.json": "{}"}, "not a run folder (no config.yaml; it holds run.json)"),
    "last.pt without config": ({"last.pt": "x", "split.json": "{}"}, "no config.yaml; it holds last.pt)"),
    "many files": ({f"f{i}.txt": "" for i in range(5)}, "it holds f0.txt, f1.txt, f2.txt and 2 more)"),
    "config.yaml of notes": ({"config.yaml": "my precious notes\n"}, "is not a run config (a str, not a mapping)"),
    "config.yaml a list": ({"config.yaml": "- 1\n- 2\n"}, "is not a run config (a list, not a mapping)"),
    "config.yaml another tool's": (
        {"config.yaml": "seed: 1\nlr: 0.1\n"},
        "is not a run config (a mapping without split, model, train)",
    ),
    "config.yaml broken": ({"config.yaml": "a: [1,\n"}, "is not a run config (unreadable: "),
    "config.yaml empty": ({"config.yaml": ""}, "is not a run config (a NoneType, not a mapping)"),
}


@pytest.mark.parametrize("case", list(NOT_RUN_FOLDERS))
def test_a_folder_that_is_not_a_run_folder_is_refused_and_left_as_it_was(case, tmp_path, tiny_run_config, make_dataset):
    files, expected = NOT_RUN_FOLDERS[case]
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    before = _snapshot(out)
    with pytest.raises(TrainingError) as refused:
        run(tiny_run_config(train__epochs=1), out, dataset=make_dataset())
    message = str(refused.value)
    assert expected in message and str(out) in message and "\n" not in message
    assert len(message) < 300  # never the whole config (it was: "another config (: 'my precious notes' there, {...})")
    assert _snapshot(out) == before  # nothing written, not even run.lock


def test_a_file_as_the_run_folder_is_refused(tmp_path, tiny_run_config, make_dataset):
    out = tmp_path / "metrics.json"
    out.write_text('{"my": "result"}')
    with pytest.raises(TrainingError, match="metrics.json: is a file"):
        run(tiny_run_config(train__epochs=1), out, dataset=make_dataset())
    assert out.read_text() == '{"my": "result"}'
    with pytest.raises(TrainingError, match="/sub/run: cannot be a folder: .*metrics.json is a file"):
        run(tiny_run_config(train__epochs=1), out / "sub" / "run", dataset=make_dataset())
    assert out.read_text() == '{"my": "result"}'


@pytest.mark.parametrize("left", [(), (RUN_LOCK,), (RUN_LOCK, "split.json")])
def test_new_empty_and_started_folders_are_run_folders(left, tmp_path):
    """What a run writes before config.yaml (its lock, then split.json) is a run that stopped early."""
    out = tmp_path / "out"
    out.mkdir()
    for name in left:
        (out / name).write_text("")
    assert run_mod.stored_run_config(out) is None
    assert run_mod.stored_run_config(tmp_path / "missing") is None


def test_a_run_folder_continues_and_a_finished_one_is_read_back(tmp_path, tiny_run_config, make_dataset):
    config = tiny_run_config(train__epochs=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / RUN_LOCK).write_text("")  # a folder a run stopped in before it wrote its config
    first = run(config, out, dataset=make_dataset())
    assert first.info["epochs_run"] == 1
    assert run_mod.stored_run_config(out) == yaml.safe_load((out / "config.yaml").read_text())
    (out / "notes.txt").write_text("the user's note beside a run")  # a run folder with a file of the user's
    assert run(config, out, dataset=make_dataset()).info == first.info  # read back
    (out / "run.json").unlink()  # died before run.json: continued from last.pt
    again = run(config, out, dataset=make_dataset())
    assert again.info["resumed_from_epoch"] == 1
    assert (out / "notes.txt").read_text() == "the user's note beside a run"
