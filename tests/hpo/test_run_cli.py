"""The command line's entry point (:mod:`hpo.run`): its usage line names the command as it was started."""

from __future__ import annotations

import sys

import pytest

import hpo.run


@pytest.mark.parametrize(
    ("argv0", "prog"), [("/venv/bin/lgeseg-hpo", "lgeseg-hpo"), ("/repo/hpo/run.py", "python -m hpo.run")]
)
def test_the_usage_line_names_the_command_as_it_was_started(monkeypatch, argv0, prog):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert hpo.run.build_parser().format_usage().startswith(f"usage: {prog} ")
