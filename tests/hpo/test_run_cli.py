"""The command line's entry point (:mod:`hpo.run`): its usage line names the command as it was started."""

from __future__ import annotations

import sys

import pytest
from conftest import tiny_train_args

import hpo.run


@pytest.mark.parametrize(
    ("argv0", "prog"), [("/venv/bin/lgeseg-hpo", "lgeseg-hpo"), ("/repo/hpo/run.py", "python -m hpo.run")]
)
def test_the_usage_line_names_the_command_as_it_was_started(monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert hpo.run.build_parser().format_usage().startswith(f"usage: {prog} ")


@pytest.mark.parametrize(
    ("command", "said"),
    [
        # train's own run-folder guard (lgeseg.run.stored_run_config) says it first
        (
            ["train", "--set", "train.epochs=1", "--out", "{file}/run"],
            "{file}/run: cannot be a folder: {file} is a file",
        ),
        (["train", "--set", "train.epochs=1", "--out", "{file}"], "{file}: "),
        # any other OSError of a path: hpo.run's one line with the system's reason
        (["evaluate", "--pred", "{masks}", "--truth", "{masks}", "--json", "{folder}"], "{folder}: Is a directory"),
    ],
)
def test_a_path_the_command_cannot_use_is_one_error_line(command, said, tmp_path, tiny_data_dir, one_line_error):
    """``--out`` below a file or on a file, a folder where a file goes: one line naming the path, exit 2."""
    (tmp_path / "afile").write_text("mine")
    names = {"file": tmp_path / "afile", "masks": tiny_data_dir / "masks", "folder": tmp_path}
    argv = [part.format(**names) for part in command]
    if argv[0] == "train":
        argv[1:1] = [*tiny_train_args(), "--data", str(tiny_data_dir)]
    assert one_line_error(argv).startswith(f"error: {said.format(**names)}")
    assert (tmp_path / "afile").read_text() == "mine"


@pytest.mark.parametrize(
    ("command", "said"),
    [
        ("train", "interrupted: run the same command again to continue from the last checkpoint"),
        ("grid", "interrupted: run the same command with --resume to finish the study"),
        ("evaluate", "interrupted"),
    ],
)
def test_ctrl_c_says_how_to_go_on(monkeypatch, capsys, command, said):
    def interrupt(args):
        raise KeyboardInterrupt

    for module in ("train", "study", "evaluate"):
        monkeypatch.setattr(f"hpo.commands.{module}.main", interrupt)
    argv = {"evaluate": ["evaluate", "--pred", "p", "--truth", "t"]}.get(command, [command])
    assert hpo.run.main(argv) == 130
    assert capsys.readouterr().err == said + "\n"
