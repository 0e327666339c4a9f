"""One module per ``python -m hpo.run`` subcommand; each exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str = "paper.yaml") -> None:
    """The options ``grid``, ``search`` and ``train`` share: a study config (``default_config`` in
    ``study_configs/`` when not given), a dataset and ``--set`` overrides."""
    parser.add_argument("--config", metavar="FILE", help=f"study config YAML (default: study_configs/{default_config})")
    parser.set_defaults(default_config=default_config)
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="dataset folder (images/, masks/); default: the config's, else the synthetic phantom",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=20 (value parsed as YAML); repeatable",
    )


def percentiles(text: str) -> tuple[float, float]:
    """The ``LOW,HIGH`` of a ``--percentiles`` option (``import-nifti``, ``predict``)."""
    from lgeseg.errors import ConfigError

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--percentiles: expected LOW,HIGH, got {text!r}") from None
    return low, high
