"""``python -m hpo.run grid``: the L2 grid on Ray Tune, the retune rule, an Optuna record, the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from . import add_config_arguments

if TYPE_CHECKING:
    from hpo.grid import GridResult


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grid",
        help="run the study's L2 grid on Ray Tune, recorded in Optuna",
        description="Run one Ray Tune trial per (L2, seed) of the study config, re-run trials stopped by the "
        "10%%/90%% retune rule with the next adjustment, record every trial in an Optuna study "
        "and write the HTML report.",
    )
    add_study_arguments(parser)
    parser.set_defaults(func=main)


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``grid`` and ``search`` share."""
    add_config_arguments(parser)
    parser.add_argument(
        "--storage", metavar="URL", help="Optuna storage URL or database file path (default: <out>/study.db)"
    )
    parser.add_argument("--study-name", metavar="NAME", help="Optuna study name (default: the config's name)")
    parser.add_argument("--out", metavar="DIR", help="study folder (default: runs/<study-name>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish an existing study: nothing finished is redone, interrupted trials continue",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if another driver runs this study, wait for it to end instead of refusing",
    )
    parser.add_argument("--address", metavar="ADDR", help="join a running Ray cluster instead of starting one")
    parser.add_argument("--num-cpus", type=int, metavar="N", help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")


def write_report(result: GridResult) -> Path:
    """The study's HTML report (and its figures saved into the study), asked for by the command, so that
    :mod:`hpo.grid` never imports :mod:`dashboards`."""
    from dashboards.report import build_report

    path = build_report(result.storage, result.study_name, result.out_dir)
    print(f"report:  {path}")
    return path


def main(args: argparse.Namespace) -> int:
    from hpo.attempts import PointStatus
    from hpo.config import load_study_config
    from hpo.grid import run_grid
    from lgeseg.errors import ConfigError

    config = load_study_config(args.config, args.overrides, args.data)
    if "search" in config:
        raise ConfigError(
            f"{args.config}: this config has a 'search:' section; run it with "
            f"`python -m hpo.run search --config {args.config}`"
        )
    result = run_grid(
        config,
        storage=args.storage,
        study_name=args.study_name,
        out_dir=args.out,
        resume=args.resume,
        address=args.address,
        num_cpus=args.num_cpus,
        wait=args.wait,
    )
    if not args.no_report:
        write_report(result)
    if any(r["status"] in PointStatus.UNFINISHED for r in result.rows):
        print("the study is unfinished: run the same command with --resume to finish it")
    return 1 if any(r["status"] in PointStatus.UNSUCCESSFUL for r in result.rows) else 0
