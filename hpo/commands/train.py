"""``python -m hpo.run train``: one training run of the study's protocol, without Ray."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train and evaluate one network (no Ray)",
        description="Train one U-Net at one L2 value with the study's protocol, evaluate the selected network "
        "on the test split and write metrics.json, history.csv, predictions/, split.json, "
        "config.yaml, run.json, best.pt and last.pt to --out. Re-running into the same --out "
        "resumes from last.pt. It runs with the config's resources.cpu torch threads (at most the machine's "
        "cores), as a trial of the study does, so it reproduces that trial's numbers. With a search config it trains "
        "the config's own train and model sections (train.l2, seed 0 unless given); under split.folds: K it trains "
        "one fold (--fold).",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--l2", type=float, help="L2 regularisation factor (default: a grid's first value, a search config's train.l2)"
    )
    parser.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    parser.add_argument("--width", type=int, help="shortcut for --set model.width=W (64 = MATLAB's U-Net)")
    parser.add_argument("--seed", type=int, help="run seed (default: a grid's first seed, 0 for a search config)")
    parser.add_argument(
        "--fold",
        type=int,
        metavar="F",
        help="with split.folds: K, the cross-validation fold 0..K-1 to train (default 0), the study's replicate "
        "seed=<S>_fold=<F>",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="output folder: new, empty or a run folder of the same config, which continues or is read back "
        "(default: runs/<config name>-train/l2=<L2>_seed=<S>, with _fold=<F> under split.folds)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from hpo.record import Replicate
    from hpo.study_config import grid_configurations, load_study_config, run_config_of
    from lgeseg.run import stored_run_config

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    if args.width is not None:
        overrides.append(f"model.width={args.width}")
    study = load_study_config(args.config, overrides, args.data)
    if "search" in study:  # its own train.l2, seeds 0..k-1, no grid axes (the space's values are the search's)
        l2 = study["train"]["l2"] if args.l2 is None else args.l2
        seed = 0 if args.seed is None else args.seed
        first = {}
    else:
        l2 = study["grid"]["l2"][0] if args.l2 is None else args.l2
        seed = study["seeds"][0] if args.seed is None else args.seed
        first = grid_configurations(study)[0].values  # the first of any gridded axes
    replicate = Replicate(seed, _fold(args.fold, study["split"].get("folds")))
    config = run_config_of(study, {**first, "train.l2": l2}, replicate)
    out = Path(args.out) if args.out else Path("runs") / f"{study['name']}-train" / f"l2={l2:g}_{replicate.name}"
    stored_run_config(out)  # a folder that is not a run folder is refused before the data are loaded

    # A trial's threads (hpo.study.trial_config): CPU numbers depend on them through summation order.
    threads = torch.get_num_threads()
    torch.set_num_threads(min(max(1, int(study["resources"]["cpu"])), os.cpu_count() or 1))
    try:
        return _train(config, out, l2, seed)
    finally:
        torch.set_num_threads(threads)  # main() is called in-process by tests and scripts


def _fold(fold: int | None, folds: int | None) -> int | None:
    """The replicate's fold of ``--fold`` under ``split.folds`` (0 when not given), None without folds.

    Raises:
        ConfigError: ``--fold`` without ``split.folds``, or outside 0..folds-1.
    """
    from lgeseg.errors import ConfigError

    if folds is None:
        if fold is not None:
            raise ConfigError(
                f"--fold {fold}: the config has no split.folds (no cross-validation); add --set split.folds=K "
                f"or leave --fold out"
            )
        return None
    if fold is None:
        return 0
    if not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold}: outside the folds 0..{folds - 1} of split.folds: {folds}")
    return fold


def _train(config: dict, out: Path, l2: float, seed: int) -> int:
    """Run ``config`` into ``out`` and print the test tables; 0."""
    from lgeseg.data import load_dataset
    from lgeseg.metrics import format_tables
    from lgeseg.run import run

    dataset = load_dataset(config["data"], progress=sys.stderr.isatty())
    kind = "SYNTHETIC phantom (no --data given)" if dataset.synthetic else "dataset"
    print(f"{kind}: {dataset.root} ({len(dataset.files)} images, classes {dataset.labels})")
    model = config["model"]
    net = f"width={model['width']}" if model["architecture"] == "matlab-unet" else model["architecture"]
    fold = f" fold={config['split']['fold']}" if config["split"].get("folds") is not None else ""
    print(
        f"l2={l2:g} seed={seed}{fold} {net} loss={config['train']['loss']} epochs={config['train']['epochs']} -> {out}"
    )
    result = run(config, out, progress=True, dataset=dataset)
    info = result.info
    print(
        f"device {info['device']}, {info['epochs_run']} epochs, selected epoch {info['selected_epoch']} "
        f"({config['train']['select']}), {info['wall_time_s']:.1f} s"
    )
    print("test split:")
    print(format_tables(result.test_metrics))
    if "field_metrics" in result.test_metrics:  # absent with metrics.field: []
        from lgeseg.field_metrics import format_field

        print(format_field(result.test_metrics["field_metrics"]))
    print(f"results: {out}")
    return 0
