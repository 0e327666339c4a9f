"""``predict``: segment new PNG slices or NIfTI volumes with a study's networks or an exported model zip.

The study says which networks (:func:`hpo.networks.select_networks`); loading, ensembling, TTA and the
outputs are :mod:`lgeseg.predict` (Ray-free). Torch and Optuna are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import percentiles


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """``--storage``, ``--study-name`` and ``--checkpoint`` (shared with ``export``)."""
    parser.add_argument("--storage", help="Optuna storage URL or database file path (default: runs/NAME/study.db)")
    parser.add_argument("--study-name", help="study name (default: the only study in --storage)")
    parser.add_argument(
        "--checkpoint",
        choices=("selected", "best", "last"),
        default="selected",
        help="selected: the network the run evaluated (train.select: best_val -> best.pt, final -> last.pt; "
        "default); best: best.pt; last: last.pt",
    )
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help="the study's artifact store, where a trial folder is not reachable (default: the study's "
        "artifact_store attr, else artifacts/ beside the storage file)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict",
        help="segment new images or NIfTI volumes with a study's networks (or an exported model zip)",
        description="Apply one trial, the top K configurations, or all replicates of one configuration (an "
        "ensemble: mean of softmax probabilities) to a folder of PNG slices, a NIfTI file or a folder/glob of "
        "NIfTI volumes; write masks in the study's label values (PNG) or label volumes with the input's "
        "affine and header (NIfTI), and predictions.csv.",
    )
    add_study_arguments(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="the network of trial N")
    which.add_argument(
        "--best",
        type=int,
        nargs="?",
        const=1,
        metavar="K",
        help="the K configurations with the best mean validation MeanIoU (never test), all their replicates "
        "(default K: 1)",
    )
    which.add_argument(
        "--configuration",
        type=int,
        metavar="N",
        help="all COMPLETE replicates (seeds) of the configuration of trial N (a search's configuration trial "
        "or any of its attempts)",
    )
    which.add_argument(
        "--model",
        action="append",
        type=Path,
        metavar="ZIP",
        help="a model zip written by export (no study needed); repeat for an ensemble",
    )
    parser.add_argument(
        "--input", required=True, help="folder of PNG slices (or dataset folder), NIfTI file, folder or glob"
    )
    parser.add_argument("--out", required=True, type=Path, help="new or empty output folder")
    parser.add_argument("--tta", choices=("flip",), help="also average over the left-right reflection")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument(
        "--format", choices=("png", "nifti"), help="png masks or NIfTI label volumes (default: the input's format)"
    )
    parser.add_argument("--batch-size", type=int, help="slices per forward pass (default: 16 on a CPU, 128 on a GPU)")
    parser.add_argument(
        "--axis", type=int, default=2, choices=(0, 1, 2), help="slice axis of NIfTI volumes (as import-nifti)"
    )
    parser.add_argument(
        "--percentiles",
        metavar="LOW,HIGH",
        help="NIfTI: percentiles of a volume's voxels mapped to black and white, as import-nifti (default: 0.5,99.5)",
    )
    parser.set_defaults(func=main)


def study_networks(args: argparse.Namespace, **which) -> tuple[list, str]:
    """The networks of the study ``args`` names and the study's name (``which``: trial/best/configuration)."""
    from hpo.artifacts import network_dir
    from hpo.networks import select_networks
    from hpo.storage import open_study
    from lgeseg.predict import load_network

    study = open_study(args.storage, args.study_name)
    chosen = select_networks(study.get_trials(deepcopy=False), study.study_name, **which, checkpoint=args.checkpoint)
    folders = [network_dir(c, study, args.storage, args.artifacts, args.checkpoint) for c in chosen]
    networks = [load_network(folder, args.checkpoint, name=c.name) for folder, c in zip(folders, chosen)]
    return networks, study.study_name


def main(args: argparse.Namespace) -> int:
    """Load the networks, predict, print what was written."""
    import time

    from lgeseg.errors import ConfigError
    from lgeseg.predict import check_out_dir, load_model_zip, predict_path

    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.model:  # study options a zip would silently ignore, and a zip given twice (weighted double)
        study = {"--storage": args.storage, "--study-name": args.study_name, "--artifacts": args.artifacts}
        ignored = [option for option, value in study.items() if value is not None]
        ignored += ["--checkpoint"] if args.checkpoint != "selected" else []
        if ignored:
            raise ConfigError(f"{', '.join(ignored)}: for a study's networks; a --model zip holds one network")
        seen: set[Path] = set()
        for path in args.model:
            if path.resolve() in seen:
                raise ConfigError(f"--model {path} is given twice: an ensemble member would count double")
            seen.add(path.resolve())
    check_out_dir(args.out)  # before any study or network is read
    if args.model:
        networks = [load_model_zip(path) for path in args.model]
    else:
        networks, _ = study_networks(args, trial=args.trial, best=args.best, configuration=args.configuration)
    started = time.perf_counter()
    summary = predict_path(
        networks,
        args.input,
        args.out,
        fmt=args.format,
        tta=args.tta,
        device=args.device,
        batch_size=args.batch_size,
        progress=True,
        axis=args.axis,
        percentiles=percentiles(args.percentiles) if args.percentiles else None,
    )
    seconds = time.perf_counter() - started
    names = ", ".join(n.name for n in networks)
    print(
        f"{summary.slices} slices, {len(summary.files)} outputs with {len(networks)} network(s) ({names}) "
        f"in {seconds:.1f} s -> {summary.out}",
        file=sys.stdout,
    )
    print(f"table: {summary.table}")
    return 0
