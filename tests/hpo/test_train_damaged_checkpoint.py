"""``train`` resuming from a damaged ``last.pt`` or ``best.pt``: one ``error:`` line naming the file, no traceback.

A run interrupted after its epochs (``run.json`` not yet written) resumes from ``last.pt``; a checkpoint cut short,
emptied or replaced by something else stops that resume with one line (:func:`lgeseg.checkpoint.read_checkpoint`)
and leaves the folder as it was; deleting the named file(s) lets the run start again.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import tiny_train_args

import hpo.run


def _argv(data, out):
    return ["train", "--data", str(data), "--l2", "0.005", *tiny_train_args(epochs=2), "--out", str(out)]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_data_dir):
    """A tiny run whose evaluation never happened: its checkpoints, config and split, no run.json."""
    out = tmp_path_factory.mktemp("damaged") / "run"
    assert hpo.run.main(_argv(tiny_data_dir, out)) == 0
    for name in ("run.json", "metrics.json", "val_metrics.json"):
        (out / name).unlink()
    return out


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "truncated": _truncate,
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"not a checkpoint at all\n" * 100),
    "a list": lambda path: torch.save([1, 2, 3], path),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("name", ["last.pt", "best.pt"])
def test_a_damaged_checkpoint_is_one_line_naming_it(name, damage, interrupted, tiny_data_dir, tmp_path, one_line_error):
    out = shutil.copytree(interrupted, tmp_path / "run")
    DAMAGES[damage](out / name)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    line = one_line_error(_argv(tiny_data_dir, out))
    assert line.startswith(f"error: {out / name}: ")
    size = (out / name).stat().st_size
    expected = {"empty": "unreadable checkpoint (empty file)", "a list": "not a checkpoint of lgeseg (holds a list"}
    assert expected.get(damage, f"unreadable checkpoint ({size} bytes; ") in line
    assert len(line) - len(str(out / name)) < 230  # torch's first sentence, not its paragraph
    remedy = "delete it to start the run again" if name == "last.pt" else "delete it and last.pt to start the run again"
    assert line.endswith(remedy)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing written


def test_deleting_what_the_error_names_starts_the_run_again(interrupted, tiny_data_dir, tmp_path, capsys):
    out = shutil.copytree(interrupted, tmp_path / "run")
    (out / "best.pt").write_bytes(b"")
    assert hpo.run.main(_argv(tiny_data_dir, out)) == 2
    (out / "best.pt").unlink()
    (out / "last.pt").unlink()
    assert hpo.run.main(_argv(tiny_data_dir, out)) == 0
    assert "continuing from epoch" not in capsys.readouterr().err  # trained from the start
    assert (out / "run.json").is_file() and (out / "best.pt").stat().st_size > 0
