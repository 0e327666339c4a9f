"""Study configs (``study_configs/*.yaml``): the run sections of :mod:`lgeseg.config` plus the grid,
the retune rule and the resources of each trial. Validated on load; errors name the key."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

from hpo.rule import RetuneRule
from lgeseg.config import RUN_DEFAULTS, check_model_train, config_hash, load_yaml, merge, run_config, set_dotted
from lgeseg.errors import ConfigError
from lgeseg.losses import LOSSES
from lgeseg.models import ARCHITECTURES

CONFIG_DIR = Path(__file__).resolve().parent.parent / "study_configs"
DEFAULT_CONFIG = CONFIG_DIR / "paper.yaml"

_TRAIN = {k: v for k, v in RUN_DEFAULTS["train"].items() if k != "l2"}

STUDY_DEFAULTS: dict[str, Any] = {
    "name": "study",
    "data": None,
    "seeds": [0],
    "split": RUN_DEFAULTS["split"],
    "model": RUN_DEFAULTS["model"],
    "train": _TRAIN,
    "grid": {"l2": [5.0e-3, 5.0e-4, 5.0e-5], "architecture": [], "loss": []},
    "retune": {
        "check_fraction": 0.1,
        "target_accuracy": 0.90,
        "max_reruns": 3,
        "adjustments": [
            {"learning_rate": 1.0e-3},
            {"learning_rate": 1.0e-5},
            {"batch_size": 8, "learning_rate": 3.0e-4},
        ],
    },
    "resources": {"gpu": 1.0, "cpu": 4.0},
}

#: Grid axes besides L2 and the seeds: grid key -> (run config section, key, allowed values). An empty
#: list (the default) leaves the axis out and every trial uses the config's own value.
GRID_AXES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "architecture": ("model", "architecture", ARCHITECTURES),
    "loss": ("train", "loss", LOSSES),
}

#: Train keys a retune adjustment may change (never L2: it is the variable under study).
ADJUSTABLE = ("learning_rate", "batch_size", "epochs", "l2_mode", "augment")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_study(config: dict) -> None:
    """Range and shape checks beyond the types :func:`lgeseg.config.merge` enforces."""
    if not config["name"] or any(c in config["name"] for c in "/\\ "):
        raise ConfigError(
            f"config key 'name' must be a non-empty name without '/', '\\' or spaces, got {config['name']!r}"
        )
    check_model_train({**config, "train": {**config["train"], "l2": 0.0}})
    seeds = config["seeds"]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ConfigError(f"config key 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"config key 'seeds' has repeated values: {seeds!r}")
    if "grid" in config:  # a search study (hpo.search_config) has a `search` section instead
        l2 = config["grid"]["l2"]
        if not l2 or not all(_is_number(v) and 0 < v <= 1 for v in l2):
            raise ConfigError(
                f"config key 'grid.l2' must be a non-empty list of numbers in (0, 1] (recorded on a "
                f"log scale), got {l2!r}"
            )
        if len(set(l2)) != len(l2):
            raise ConfigError(f"config key 'grid.l2' has repeated values: {l2!r}")
        config["grid"]["l2"] = [float(v) for v in l2]
        for axis, (_, _, allowed) in GRID_AXES.items():
            values = config["grid"][axis]
            if not all(isinstance(v, str) and v in allowed for v in values):
                raise ConfigError(f"config key 'grid.{axis}' must be a list of {', '.join(allowed)}, got {values!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"config key 'grid.{axis}' has repeated values: {values!r}")

    retune = config["retune"]
    if not 0 < retune["check_fraction"] <= 1:
        raise ConfigError(f"config key 'retune.check_fraction' must be in (0, 1], got {retune['check_fraction']!r}")
    if not 0 <= retune["target_accuracy"] <= 1:  # 0 switches the rule off
        raise ConfigError(f"config key 'retune.target_accuracy' must be in [0, 1], got {retune['target_accuracy']!r}")
    if retune["max_reruns"] < 0:
        raise ConfigError(f"config key 'retune.max_reruns' must be >= 0, got {retune['max_reruns']!r}")
    adjustments = retune["adjustments"]
    for i, adjustment in enumerate(adjustments):
        where = f"retune.adjustments[{i}]"
        if not isinstance(adjustment, dict) or not adjustment:
            raise ConfigError(f"config key '{where}' must be a non-empty mapping of train keys, got {adjustment!r}")
        for key in adjustment:
            if key == "l2":
                raise ConfigError(
                    f"config key '{where}.l2': an adjustment may not touch L2, the variable "
                    f"under study (adjustable: {', '.join(ADJUSTABLE)})"
                )
            if key not in ADJUSTABLE:
                raise ConfigError(f"config key '{where}.{key}' is not adjustable (adjustable: {', '.join(ADJUSTABLE)})")
        adjusted = {**config, "train": merge(config["train"], adjustment, where), "seeds": None}
        check_model_train({**adjusted, "train": {**adjusted["train"], "l2": 0.0}})
    if len(adjustments) < retune["max_reruns"]:
        raise ConfigError(
            f"config key 'retune.adjustments' has {len(adjustments)} entries but "
            f"retune.max_reruns is {retune['max_reruns']}: give one adjustment per rerun"
        )

    resources = config["resources"]
    for key in ("gpu", "cpu"):
        if resources[key] < 0:
            raise ConfigError(f"config key 'resources.{key}' must be >= 0, got {resources[key]!r}")
    if resources["gpu"] > 1 and resources["gpu"] != int(resources["gpu"]):
        raise ConfigError(f"config key 'resources.gpu' above 1 must be a whole number, got {resources['gpu']!r}")
    if resources["cpu"] == 0 and resources["gpu"] == 0:
        raise ConfigError("config keys 'resources.cpu' and 'resources.gpu' are both 0: a trial needs something")


def study_config(values: dict | None = None) -> dict:
    """A validated study config: STUDY_DEFAULTS overlaid with ``values`` (a ``search:`` study: see
    :func:`hpo.search_config.search_study_config`)."""
    if isinstance(values, dict) and "search" in values:
        from .search_config import search_study_config

        return search_study_config(values)
    config = merge(STUDY_DEFAULTS, values)
    check_study(config)
    return config


def load_study_config(
    path: str | Path | None = None, overrides: list[str] | None = None, data: str | None = None
) -> dict:
    """Read ``path`` (default ``study_configs/paper.yaml``), apply ``--set`` overrides and ``--data``."""
    values = load_yaml(path or DEFAULT_CONFIG)
    for assignment in overrides or []:
        set_dotted(values, assignment)
    if data is not None:
        values["data"] = str(Path(data).expanduser().resolve())
    try:
        return study_config(values)
    except ConfigError as exc:
        raise ConfigError(f"{path or DEFAULT_CONFIG}: {exc}") from None


def grid_choices(study: dict) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of the gridded :data:`GRID_AXES` values, as ((axis, value), ...) tuples in
    :data:`GRID_AXES` order; ``[()]`` when no axis besides L2 is gridded."""
    axes = [[(axis, value) for value in study["grid"][axis]] for axis in GRID_AXES if study["grid"][axis]]
    return list(itertools.product(*axes))


def point_config(
    study: dict, l2: float, seed: int, adjustment: dict | None = None, choices: tuple[tuple[str, str], ...] = ()
) -> dict:
    """The run config of one trial: the study's run sections at this L2, seed and grid ``choices``
    (see :func:`grid_choices`), plus any adjustment."""
    sections = {"model": copy.deepcopy(study["model"]), "train": copy.deepcopy(study["train"])}
    for axis, value in choices:
        section, key, _ = GRID_AXES[axis]
        sections[section][key] = value
    train = sections["train"]
    train.update(copy.deepcopy(adjustment or {}))
    train["l2"] = float(l2)
    if train.get("validation_frequency") and "retune" in study:  # validate at the retune rule's check point
        check = RetuneRule.from_config(study["retune"]).check_epoch(train["epochs"])
        train["validation_epochs"] = sorted({*train.get("validation_epochs", []), check})
    return run_config(
        {"data": study["data"], "seed": seed, "split": study["split"], "model": sections["model"], "train": train}
    )


__all__ = [
    "ADJUSTABLE",
    "DEFAULT_CONFIG",
    "GRID_AXES",
    "STUDY_DEFAULTS",
    "check_study",
    "config_hash",
    "grid_choices",
    "load_study_config",
    "point_config",
    "study_config",
]
