"""``export``: one trial's network as a self-contained model zip that ``predict --model`` uses without the study.

The zip's content is :func:`lgeseg.predict.export_model`; the study only says which run folder
(:func:`hpo.networks.select_networks`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .predict import add_study_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="write one trial's network as a model zip (weights, spec, input statistics, labels, config)",
        description="Write the weights, model spec, input-layer statistics, label map and run config of one "
        "trial, with a manifest of versions and SHA-256 fingerprints, into a zip that predict --model reads.",
    )
    add_study_arguments(parser)
    parser.add_argument("--trial", type=int, required=True, metavar="N", help="the trial whose network to export")
    parser.add_argument("--out", type=Path, required=True, help="the .zip to write (must not exist)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Find the trial's run folder and write the zip."""
    from hpo.artifacts import network_dir
    from hpo.networks import select_networks
    from hpo.record import ATTR
    from hpo.storage import open_study
    from lgeseg.predict import export_model

    study = open_study(args.storage, args.study_name)
    trials = study.get_trials(deepcopy=False)
    (chosen,) = select_networks(trials, study.study_name, trial=args.trial, checkpoint=args.checkpoint)
    frozen = chosen.trial
    source = {
        "study_name": study.study_name,
        "trial": args.trial,
        "trial_name": frozen.user_attrs.get(ATTR.TRIAL_NAME),
        "state": frozen.state.name,
        "value": frozen.value,
        "params": frozen.params,
    }
    run_dir = network_dir(chosen, study, args.storage, args.artifacts, args.checkpoint)
    path = export_model(run_dir, args.out, args.checkpoint, source=source)
    print(f"exported trial {args.trial} of study '{study.study_name}' -> {path}")
    return 0
