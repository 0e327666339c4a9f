"""``evaluate``: score a folder of predicted mask PNGs against the true masks of the same file names.

Prints MATLAB-style class and data-set tables (:func:`lgeseg.metrics.format_tables`) and optionally writes
the full result, per-image metrics included, as JSON. Every input problem (missing folder or file, size
mismatch, unreadable PNG, values outside the label map) is a one-line :class:`lgeseg.errors.DataError`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Show a progress bar while reading only when there are at least this many mask pairs.
PROGRESS_MIN_FILES = 50


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
    parser.add_argument("--labels", help="label map name=value,... (default: dataset.json next to or in "
                                         "the truth folder, else region1=255,region2=128,region3=0)")
    parser.add_argument("--json", type=Path, help="write the full result (per-image metrics too) here")
    parser.set_defaults(func=main)


def _labels(text: str | None, truth_dir: Path) -> dict[str, int]:
    """The label map: ``--labels``, else the dataset.json of the truth folder's parent or the folder itself."""
    from lgeseg.data import DEFAULT_LABELS, parse_labels, read_label_map

    if text is not None:
        return parse_labels(text)
    for root in (truth_dir.parent, truth_dir):
        if (root / "dataset.json").exists():
            return read_label_map(root)
    return dict(DEFAULT_LABELS)


def _mask_names(folder: Path, side: str) -> set[str]:
    """PNG file names in ``folder``; DataError if the folder is missing or holds none."""
    from lgeseg.errors import DataError

    if not folder.is_dir():
        raise DataError(f"{folder}: {side} folder not found")
    names = {p.name for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()}
    if not names:
        raise DataError(f"{folder}: {side} folder holds no .png masks")
    return names


def _pair_names(pred_dir: Path, truth_dir: Path) -> list[str]:
    """Sorted file names present on both sides; DataError naming the first file missing on either side."""
    from lgeseg.errors import DataError

    pred_names = _mask_names(pred_dir, "prediction")
    truth_names = _mask_names(truth_dir, "truth")
    for names, other, side, other_side in ((pred_names, truth_names, "prediction", "truth"),
                                           (truth_names, pred_names, "truth", "prediction")):
        missing = sorted(names - other)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            other_dir = truth_dir if other_side == "truth" else pred_dir
            raise DataError(f"{other_dir / missing[0]}: {other_side} mask missing for {side} mask "
                            f"{missing[0]}{more}")
    return sorted(pred_names)


def main(args: argparse.Namespace) -> int:
    """Read the mask pairs, evaluate them, print the tables and write the JSON if asked."""
    import numpy as np
    from tqdm import tqdm

    from lgeseg.png import read_mask
    from lgeseg.errors import DataError
    from lgeseg.metrics import evaluate, format_tables, write_json

    labels = _labels(args.labels, args.truth)
    names = _pair_names(args.pred, args.truth)
    preds: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    show = len(names) >= PROGRESS_MIN_FILES and sys.stderr.isatty()
    for name in tqdm(names, desc="reading masks", unit="mask", disable=not show):
        truth = read_mask(args.truth / name, labels)
        pred = read_mask(args.pred / name, labels)
        if pred.shape != truth.shape:
            raise DataError(f"{args.pred / name}: prediction size {pred.shape[1]}x{pred.shape[0]} differs "
                            f"from truth size {truth.shape[1]}x{truth.shape[0]} ({args.truth / name})")
        if truths and truth.shape != truths[0].shape:
            raise DataError(f"{args.truth / name}: size {truth.shape[1]}x{truth.shape[0]} differs from "
                            f"{truths[0].shape[1]}x{truths[0].shape[0]} of {args.truth / names[0]}; "
                            f"all masks of a set must have one size")
        preds.append(pred)
        truths.append(truth)

    result = evaluate(np.stack(preds), np.stack(truths), list(labels), names)
    print(format_tables(result))
    if args.json is not None:
        write_json(result, args.json)
        print(f"\nwrote {args.json}")
    return 0
