"""``python -m hpo.run grid`` and ``python -m hpo.run search``: run a study (:func:`hpo.study.run_study`).

There is one flow; the two commands differ only in what they insist on. ``search`` runs any study config
(default ``study_configs/paper-l2-search.yaml``); ``grid`` is its alias for configs with a ``grid:`` section
(default ``study_configs/paper.yaml``), so every grid command line keeps working. Both write the HTML report
at the end unless ``--no-report``, and exit 1 when the study is unfinished or a replicate failed.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from . import add_config_arguments

if TYPE_CHECKING:
    from hpo.study import StudyResult


def register(subparsers: argparse._SubParsersAction) -> None:
    grid = subparsers.add_parser(
        "grid",
        help="run a grid study (the L2 grid, or any grid: config) on Ray Tune, recorded in Optuna",
        description="Run every (configuration, seed) of the study config's grid as Ray Tune trials, re-run "
        "trials stopped by the 10%/90% retune rule with the next adjustment, record every trial in an "
        "Optuna study and write the HTML report.",
    )
    add_study_arguments(grid, "paper.yaml")
    grid.set_defaults(func=main, kind="grid")
    search = subparsers.add_parser(
        "search",
        help="run a study config's search: (Optuna sampler) on Ray Tune, recorded in Optuna",
        description="Sample search.n_trials configurations with Optuna's sampler, train search.seeds_per_trial "
        "seeds of each as Ray Tune trials (the 10%/90% retune rule re-runs stopped ones), tell the "
        "sampler each configuration's mean validation MeanIoU, record everything in one Optuna study "
        "and write the HTML report with slice, contour and importance plots. The default config is "
        "study_configs/paper-l2-search.yaml.",
    )
    add_study_arguments(search, "paper-l2-search.yaml")
    search.set_defaults(func=main, kind="search")


def add_study_arguments(parser: argparse.ArgumentParser, default_config: str) -> None:
    """The options of a study command (``default_config``: its config file in ``study_configs/``)."""
    add_config_arguments(parser, default_config)
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


def write_report(result: StudyResult) -> Path:
    """The study's HTML report (and its figures saved into the study), asked for by the command, so that
    :mod:`hpo.study` never imports :mod:`dashboards`."""
    from dashboards.report import build_report

    path = build_report(result.storage, result.study_name, result.out_dir)
    print(f"report:  {path}")
    return path


def main(args: argparse.Namespace) -> int:
    from hpo.record import Status
    from hpo.study import run_study
    from hpo.study_config import CONFIG_DIR, load_study_config
    from lgeseg.errors import ConfigError

    config = load_study_config(args.config or CONFIG_DIR / args.default_config, args.overrides, args.data)
    if args.kind == "grid" and "search" in config:
        raise ConfigError(
            f"{args.config}: this config has a 'search:' section; run it with "
            f"`python -m hpo.run search --config {args.config}`"
        )
    result = run_study(
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
    if result.unfinished:
        print("the study is unfinished: run the same command with --resume to finish it")
    return 1 if result.unfinished or any(r["status"] in Status.UNSUCCESSFUL for r in result.rows) else 0
