"""``report``: write a study's self-contained HTML report (Figure 1, sensitivity, curves, Figure 2, tables).

Plotly and Optuna are imported only when the command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand to the ``hpo.run`` parser."""
    parser = subparsers.add_parser(
        "report",
        help="write report.html for a grid or search study",
        description="Write one self-contained report.html for a grid study (also for a study still running) "
        "and save its figures into the study for optuna-dashboard.",
    )
    parser.add_argument("--storage", help="Optuna storage URL or database file path (default: runs/NAME/study.db)")
    parser.add_argument("--study-name", help="study name (default: the only study in --storage)")
    parser.add_argument("--out", type=Path, help="output folder (default: the study's folder)")
    parser.add_argument(
        "--format",
        choices=("html", "png", "svg", "pdf"),
        default="html",
        help="html only, or also each figure as figures/<name>.png/svg/pdf (kaleido + Chrome/Chromium)",
    )
    parser.add_argument(
        "--export-timeout",
        type=float,
        metavar="S",
        help="seconds the png/svg/pdf export may take before it and its browser are stopped (default: 120)",
    )
    parser.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="also show test metrics per group of this manifest.csv column (e.g. pathology); repeatable",
    )
    parser.add_argument(
        "--metric",
        default=None,
        metavar="NAME",
        help="metric of the per-patient verdicts: CLASS:METRIC of the field metrics (default myocardium:Dice; "
        "METRIC one of Dice, HD95, ASSD, NSD, ... per lgeseg.field_metrics) or a MATLAB per-image metric "
        "(MeanIoU, ...)",
    )
    parser.add_argument(
        "--equivalence",
        type=float,
        default=0.01,
        metavar="DELTA",
        help="equivalence margin (> 0, in the metric's unit; default 0.01): a pair is 'equivalent' when the 95%% CI "
        "of the median per-patient difference lies inside [-DELTA, DELTA]",
    )
    parser.add_argument(
        "--no-dashboard", action="store_true", help="do not save the figures into the study for optuna-dashboard"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Build the report and print where it is."""
    from dashboards.report import build_report

    path = build_report(
        args.storage,
        args.study_name,
        out_dir=args.out,
        fmt=args.format,
        save_to_dashboard=not args.no_dashboard,
        by=args.by,
        export_timeout=args.export_timeout,
        metric=args.metric,
        delta=args.equivalence,
    )
    print(f"report: {path}")
    return 0
