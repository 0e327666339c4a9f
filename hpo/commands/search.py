"""``python -m hpo.run search``: Optuna's sampler over any hyperparameter on Ray Tune, recorded in Optuna."""

from __future__ import annotations

import argparse

from .grid import add_study_arguments, write_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search",
        help="run a study config's search: (Optuna sampler) on Ray Tune, recorded in Optuna",
        description="Sample search.n_trials configurations with Optuna's sampler, train search.seeds_per_trial "
        "seeds of each as Ray Tune trials (the 10%%/90%% retune rule re-runs stopped ones), tell the "
        "sampler each configuration's mean validation MeanIoU, record everything in one Optuna study "
        "and write the HTML report with slice, contour and importance plots. The default config is "
        "study_configs/paper-l2-search.yaml.",
    )
    add_study_arguments(parser)
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hpo.config import CONFIG_DIR, load_study_config
    from hpo.search import run_search
    from lgeseg.errors import ConfigError

    config = load_study_config(args.config or CONFIG_DIR / "paper-l2-search.yaml", args.overrides, args.data)
    if "search" not in config:
        raise ConfigError(
            f"{args.config or 'the default config'}: no 'search:' section (a grid study); run it "
            f"with `python -m hpo.run grid`, or add search: (see README)"
        )
    result = run_search(
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
    unfinished = len(result.rows) < config["search"]["n_trials"] or any(
        r["status"] == "interrupted" for r in result.rows
    )
    if unfinished:
        print("the search is unfinished: run the same command with --resume to finish it")
    return 1 if unfinished or any(r["status"] == "failed" for r in result.rows) else 0
