"""``evaluate``: score a folder of predicted mask PNGs against the true masks of the same file names.

Prints MATLAB-style class and data-set tables (:func:`lgeseg.metrics.format_tables`), then the field's
metrics (Dice, HD95, ASSD, NSD per class, :mod:`lgeseg.field_metrics`), and optionally writes
the full result, per-image metrics included, as JSON. The pairing and reading of the masks is
:func:`lgeseg.data.read_mask_pairs`; every input problem (missing folder or file, size mismatch, unreadable
PNG, values outside the label map) is a one-line :class:`lgeseg.errors.DataError`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate predicted masks against true masks (MATLAB evaluateSemanticSegmentation metrics)",
        description="Evaluate a folder of predicted mask PNGs against true mask PNGs with the same file "
        "names: per-class Accuracy, IoU, MeanBFScore, Dice and the data-set metrics.",
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted mask PNGs")
    parser.add_argument("--truth", required=True, type=Path, help="folder of true mask PNGs")
    parser.add_argument(
        "--labels",
        help="label map name=value,... (default: dataset.json next to or in "
        "the truth folder, else region1=255,region2=128,region3=0)",
    )
    parser.add_argument("--json", type=Path, help="write the full result (per-image metrics too) here")
    parser.add_argument(
        "--predicted-only",
        action="store_true",
        help="score only the truth masks that have a prediction (e.g. a train run's predictions/, its test split, "
        "against the data set's masks/); by default every truth mask needs one",
    )
    parser.add_argument(
        "--ignore",
        type=int,
        metavar="VALUE",
        help="truth pixel value of unlabelled pixels, left out of every metric (default: the "
        "'ignore' of that dataset.json, else none)",
    )
    parser.add_argument(
        "--nsd-tolerance",
        type=float,
        default=2.0,
        metavar="MM",
        help="tolerance of the normalised surface distance (mm; pixels when the data set has no spacing; default 2)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Read the mask pairs, evaluate them, print the tables and write the JSON if asked."""
    import math

    from lgeseg.config import RUN_DEFAULTS
    from lgeseg.data import check_ignore, ignore_near, label_map_near, parse_labels, read_mask_pairs
    from lgeseg.errors import UserError
    from lgeseg.field_metrics import field_section, folder_cases, format_field
    from lgeseg.metrics import evaluate, format_tables, write_json

    if not (math.isfinite(args.nsd_tolerance) and args.nsd_tolerance > 0):
        raise UserError(f"--nsd-tolerance must be a distance > 0 (mm), got {args.nsd_tolerance:g}")
    metrics_config = {**RUN_DEFAULTS["metrics"], "nsd_tolerance_mm": args.nsd_tolerance}

    labels = parse_labels(args.labels) if args.labels is not None else label_map_near(args.truth)
    ignore = (
        check_ignore(args.ignore, labels, "--ignore") if args.ignore is not None else ignore_near(args.truth, labels)
    )
    preds, truths, names = read_mask_pairs(
        args.pred, args.truth, labels, progress=sys.stderr.isatty(), ignore=ignore, predicted_only=args.predicted_only
    )
    if args.predicted_only:
        print(f"note: {len(names)} truth masks with a prediction scored (--predicted-only)", file=sys.stderr)
    result = evaluate(preds, truths, list(labels), names)
    patients, units = folder_cases(args.truth, names)
    every = range(len(names))
    result.update(field_section(metrics_config, names, patients, units, every, preds, truths, list(labels)))
    print(format_tables(result))
    print(format_field(result["field_metrics"]))
    if args.json is not None:
        write_json(result, args.json)
        print(f"\nwrote {args.json}")
    return 0
