"""Command line: ``python -m hpo.run grid|search|train|evaluate|report|dashboard|import-nifti|predict|export|record``.

User errors (:class:`lgeseg.errors.UserError`), and paths the command cannot read or write (``OSError``:
``--out`` below a file, a folder where a file goes), are printed as one ``error:`` line with exit status 2 and
no traceback; each subcommand lives in ``hpo/commands/<name>.py`` and imports its heavy dependencies
(torch, Ray, Optuna) only when it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lgeseg.errors import UserError

from .commands import dashboard, evaluate, export, import_nifti, predict, record, report, study, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lgeseg-hpo" if Path(sys.argv[0]).name == "lgeseg-hpo" else "python -m hpo.run",  # how it was started
        description="Hyperparameter studies of U-Net segmentation of LGE-MRI (the Rukundo L2 study).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (study, train, evaluate, report, dashboard, import_nifti, predict, export, record):
        module.register(sub)
    return parser


#: What a command interrupted by Ctrl-C tells the user to do next (train continues from ``last.pt``; a study's
#: record says what --resume still owes).
RESUME_HINTS = {
    "train": ": run the same command again to continue from the last checkpoint",
    "grid": ": run the same command with --resume to finish the study",
    "search": ": run the same command with --resume to finish the study",
}

#: Loggers of the project's own packages, shown by the CLI.
LOGGERS = ("lgeseg", "hpo")


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler writing to whatever ``sys.stderr`` is at each record (tests redirect it)."""

    @property
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _LevelFormatter(logging.Formatter):
    """Warnings and errors as ``warning: ...`` lines, notes (INFO) as they are."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return f"warning: {message}" if record.levelno >= logging.WARNING else message


def _library_messages() -> logging.Handler:
    """The project loggers' notes and warnings (e.g. a run that is not learning) as lines on stderr."""
    handler = _StderrHandler()
    handler.setLevel(logging.INFO)
    handler.setFormatter(_LevelFormatter())
    return handler


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _library_messages()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the command cannot use (--out under a file, a folder given for a file, ...)
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{RESUME_HINTS.get(args.command, '')}", file=sys.stderr)
        return 130
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
