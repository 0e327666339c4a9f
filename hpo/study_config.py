"""Study configs (``study_configs/*.yaml``): the run sections of :mod:`lgeseg.config` plus the space of
configurations, the replicates, the retune rule and each trial's resources. Validated on load; errors
name the key.

A study is a space times replicates. ``grid:`` is the shorthand for a categorical space (``l2`` and, when
given, ``architecture`` and ``loss``) sampled in full by Optuna's ``GridSampler``; ``search:`` lets one of
Optuna's samplers propose configurations from any run-config key (the ``search:`` keys: README,
"``search:`` configs"). Either way :func:`sampler_settings` says how the one sampler path runs.

Every space key is a dotted key of a run's ``model`` or ``train`` section; its range or choices are checked
against that key's type and range here. :func:`space` gives either kind of study as Optuna distributions,
:func:`replicates` its replicates, :func:`run_config_of` the run config of one attempt.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from pathlib import Path
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lgeseg.config import (
    RUN_DEFAULTS,
    check_model_train,
    load_yaml,
    merge,
    put_dotted,
    run_config,
    set_dotted,
    type_name,
    type_ok,
)
from lgeseg.errors import ConfigError
from lgeseg.losses import LOSSES
from lgeseg.models import ARCHITECTURES

from .record import DISTRIBUTIONS, Configuration, Replicate
from .rule import RetuneRule

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
    "metrics": RUN_DEFAULTS["metrics"],
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


def check_distinct_names(l2: list[float]) -> None:
    """Refuse L2 values that print alike: a configuration, its trial folder and its Optuna lineage are named
    by ``f"{l2:g}"`` (6 significant digits, :class:`hpo.record.Configuration`), so two such values would
    share one configuration and one of them would silently never run (ray#17894)."""
    by_name: dict[str, float] = {}
    for value in l2:
        name = f"{float(value):g}"
        if name in by_name and by_name[name] != value:
            raise ConfigError(
                f"config key 'grid.l2': {by_name[name]!r} and {value!r} are both named l2={name} (6 significant "
                f"digits) and would share one grid point and trial folder; give values that differ within 6 "
                f"significant digits"
            )
        by_name[name] = value


def check_study(config: dict) -> None:
    """Range and shape checks beyond the types :func:`lgeseg.config.merge` enforces."""
    if not config["name"] or any(c in config["name"] for c in "/\\ "):
        raise ConfigError(
            f"config key 'name' must be a non-empty name without '/', '\\' or spaces, got {config['name']!r}"
        )
    check_model_train({**config, "train": {**config["train"], "l2": 0.0}})
    seeds = config["seeds"]
    if not seeds or not all(type_ok(s, 0) and s >= 0 for s in seeds):
        raise ConfigError(f"config key 'seeds' must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"config key 'seeds' has repeated values: {seeds!r}")
    if config["split"].get("folds") is not None and config["split"].get("fold", 0) != 0:
        raise ConfigError(
            f"config key 'split.fold' is {config['split']['fold']!r}, but a study over split.folds trains every "
            f"fold as a replicate: leave split.fold out; train one fold with train --fold F"
        )
    if "grid" in config:  # a search study has a `search` section instead
        l2 = config["grid"]["l2"]
        if not l2 or not all(type_ok(v, 0.0) for v in l2):
            raise ConfigError(f"config key 'grid.l2' must be a non-empty list of finite numbers, got {l2!r}")
        if len(set(l2)) != len(l2):
            raise ConfigError(f"config key 'grid.l2' has repeated values: {l2!r}")
        check_distinct_names(l2)
        config["grid"]["l2"] = [float(v) for v in l2]
        for axis, (_, _, allowed) in GRID_AXES.items():
            values = config["grid"][axis]
            if not all(isinstance(v, str) and v in allowed for v in values):
                raise ConfigError(f"config key 'grid.{axis}' must be a list of {', '.join(allowed)}, got {values!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"config key 'grid.{axis}' has repeated values: {values!r}")

    retune = config["retune"]
    if not 0 <= retune["check_fraction"] <= 1:  # 0 switches the rule off
        raise ConfigError(f"config key 'retune.check_fraction' must be in [0, 1], got {retune['check_fraction']!r}")
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
    """A validated study config: STUDY_DEFAULTS overlaid with ``values``; for a ``search:`` study the study
    defaults without ``grid`` or ``seeds`` (``train.l2`` included) and its ``search`` section checked."""
    defaults = STUDY_DEFAULTS
    if isinstance(values, dict) and "search" in values:
        if "grid" in values:
            raise ConfigError("config keys 'grid' and 'search' are both given: a study is a grid or a search")
        if "seeds" in values:
            raise ConfigError(
                "config key 'seeds' is for grids: a search trains run seeds 0..k-1 of every "
                "configuration (search.seeds_per_trial: k)"
            )
        defaults = {k: v for k, v in STUDY_DEFAULTS.items() if k != "grid"}
        defaults.update(train=RUN_DEFAULTS["train"], search=SEARCH_DEFAULTS)
    config = merge(defaults, values)
    check_study(config)
    if "search" in config:
        del config["seeds"]
        check_search(config)
        config["search"]["space"] = {
            key: _canonical(spec, dist)
            for (key, spec), dist in zip(config["search"]["space"].items(), space(config).values())
        }
    return config


def values_of(config: dict, key: str) -> list[tuple[str, Any]]:
    """Every value the run-config key ``key`` (``train.batch_size``) can take in the study's attempts, each
    with the config key it comes from: the space's choices or bounds (``grid.<axis>`` or
    ``search.space.<key>``), else the run section's value, then the retune adjustments
    (``retune.adjustments[i].<name>``)."""
    section, name = key.split(".", 1)
    dist = space(config).get(key)
    if dist is None:  # the run section's value (a grid's train section has no l2: the grid gives it)
        found = [(key, config[section][name])] if name in config[section] else []
    else:  # the space's, which replace the run section's
        where = f"grid.{name}" if "grid" in config else f"search.space.{key}"
        values = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        found = [(where, value) for value in values]
    if section == "train":
        adjustments = enumerate(config["retune"]["adjustments"])
        found += [(f"retune.adjustments[{i}].{name}", a[name]) for i, a in adjustments if name in a]
    return found


#: The attempt param (:data:`hpo.record.DISTRIBUTIONS`) each numeric run-config key is recorded as.
RECORDED_AS = {
    "train.l2": "l2",
    "train.learning_rate": "learning_rate",
    "train.batch_size": "batch_size",
    "train.epochs": "epochs",
}


def check_recordable(config: dict) -> None:
    """Refuse a study whose attempts would carry a value outside the record's distributions
    (:data:`hpo.record.DISTRIBUTIONS`). Optuna cannot store a value its distribution cannot represent (L2 0 on
    the log scale: the study trained such trials and then failed to record them) and stores one outside the
    bounds only with a warning, leaving a record whose params contradict their distributions. Checked: the
    values of :func:`values_of` (run section, space, retune adjustments), the largest seed, fold and rerun.

    Raises:
        ConfigError: naming the config key, the value and the range the record holds.
    """
    found = [(where, param, v, 0) for key, param in RECORDED_AS.items() for where, v in values_of(config, key)]
    if "search" in config:  # seeds 0..k-1
        found.append(("search.seeds_per_trial", "seed", config["search"]["seeds_per_trial"], 1))
    else:
        found.append(("seeds", "seed", max(config["seeds"]), 0))
    if config["split"].get("folds") is not None:  # folds 0..k-1
        found.append(("split.folds", "fold", config["split"]["folds"], 1))
    found.append(("retune.max_reruns", "rerun", config["retune"]["max_reruns"], 0))
    for where, param, value, offset in found:
        dist = DISTRIBUTIONS[param]
        if not dist.low + offset <= value <= dist.high + offset:  # NaN too
            low, high = (f"{b + offset:g}" if dist.log else str(b + offset) for b in (dist.low, dist.high))
            scale = " on a log scale" if dist.log else ""
            hint = "; 1e-12 stands for no L2" if param == "l2" and value == 0 else ""
            raise ConfigError(
                f"config key '{where}': {value!r} is outside what the study record holds "
                f"([{low}, {high}]{scale}, as the attempt param {param}){hint}"
            )


def load_study_config(
    path: str | Path | None = None, overrides: list[str] | None = None, data: str | None = None
) -> dict:
    """Read ``path`` (default ``study_configs/paper.yaml``), apply ``--set`` overrides and ``--data``.

    Raises:
        ConfigError: naming the file, or ``--set`` when the file alone is valid (the fault is an override's).
    """
    path = path or DEFAULT_CONFIG
    values = load_yaml(path)
    if not values:  # a new file not yet written, or the wrong one: say what runs instead of nothing
        logging.getLogger(__name__).warning(
            "%s is empty: every key takes its default (the paper's protocol: %d epochs x %d L2 values, name '%s')",
            path,
            STUDY_DEFAULTS["train"]["epochs"],
            len(STUDY_DEFAULTS["grid"]["l2"]),
            STUDY_DEFAULTS["name"],
        )
    for assignment in overrides or []:
        set_dotted(values, assignment)
    if data is not None:
        values["data"] = str(Path(data).expanduser().resolve())
    try:
        return study_config(values)
    except ConfigError as exc:
        where = f"{path}"
        if overrides:
            try:
                study_config(load_yaml(path))
                where = "--set"
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {exc}") from None


def space(study: dict) -> dict[str, BaseDistribution]:
    """The study's space as Optuna distributions (dotted run-config key -> distribution), in space order: a
    search's ``search.space``, or a grid's categorical axes, ``train.l2`` first, then every gridded
    :data:`GRID_AXES` axis (the empty ones use the config's own value)."""
    if "search" in study:
        keys = searchable_keys()
        return {key: _distribution(study, key, spec, keys[key]) for key, spec in study["search"]["space"].items()}
    axes = {"train.l2": study["grid"]["l2"]}
    axes.update({f"{section}.{key}": study["grid"][axis] for axis, (section, key, _) in GRID_AXES.items()})
    return {key: CategoricalDistribution(values) for key, values in axes.items() if values}


def grid_configurations(study: dict) -> list[Configuration]:
    """Every point of a grid study's space, L2 slowest, in config order (named by their values): the order
    of the closing table and of ``train``'s default, whatever order the grid sampler ran them in."""
    axes = {key: dist.choices for key, dist in space(study).items()}
    return [Configuration(tuple(zip(axes, values))) for values in itertools.product(*axes.values())]


def sampler_settings(study: dict) -> dict[str, Any]:
    """How the study's sampler runs (:mod:`hpo.sampling`): a search's ``search`` section, or for a grid
    Optuna's grid sampler over the whole space, every point at once (``max_concurrent``), seed 0."""
    if "search" in study:
        return study["search"]
    points = math.prod(len(d.choices) for d in space(study).values())
    return {**SEARCH_DEFAULTS, "sampler": "grid", "n_trials": points, "max_concurrent": points, "space": None}


def replicates(study: dict) -> list[Replicate]:
    """The replicates every configuration of ``study`` is trained on: a grid's ``seeds``, a search's seeds
    0..``seeds_per_trial``-1, and under ``split.folds: k`` each of those seeds on every fold 0..k-1
    (``Replicate(seed, fold)``, seed-major), so each patient is a test patient once per seed."""
    seeds = range(study["search"]["seeds_per_trial"]) if "search" in study else study["seeds"]
    folds = study["split"].get("folds")
    if folds is None:
        return [Replicate(seed) for seed in seeds]
    return [Replicate(seed, fold) for seed in seeds for fold in range(folds)]


def run_config_of(
    study: dict, params: dict[str, Any], replicate: Replicate, adjustment: dict | None = None
) -> dict[str, Any]:
    """The run config of one attempt: the study's run sections with the configuration's dotted ``params``,
    the replicate's values and a retune rerun's ``adjustment`` (train keys) over them.

    Raises:
        ConfigError: when the combination is not a valid run.
    """
    sections = copy.deepcopy({"model": study["model"], "train": study["train"]})
    for dotted, value in params.items():
        put_dotted(sections, dotted, value)
    train = sections["train"]
    train.update(copy.deepcopy(adjustment or {}))
    rule = RetuneRule.from_config(study["retune"]) if "retune" in study else None
    if train.get("validation_frequency") and rule is not None and rule.enabled:  # validate at its check point
        train["validation_epochs"] = sorted({*train.get("validation_epochs", []), rule.check_epoch(train["epochs"])})
    values = {
        "data": study["data"],
        "split": study["split"],
        "metrics": study.get("metrics", RUN_DEFAULTS["metrics"]),
        **sections,
    }
    values.update(replicate.apply(values))
    return run_config(values)


SAMPLERS: tuple[str, ...] = ("tpe", "random", "gp", "cmaes", "qmc", "grid")
SCHEDULERS: tuple[str, ...] = ("asha",)
SEARCH_DEFAULTS: dict[str, Any] = {
    "sampler": "tpe",
    "n_trials": 20,
    "max_concurrent": 1,
    "seed": 0,
    "seeds_per_trial": 1,
    "startup_trials": None,
    "space": {},
    "scheduler": None,
}
#: Run-config sections whose keys may be searched.
SEARCHABLE_SECTIONS: tuple[str, ...] = ("model", "train")
#: Keys of those sections that say where, how often or in which memory layout, not what is learned.
NOT_SEARCHABLE: tuple[str, ...] = ("train.device", "train.checkpoint_every", "train.channels_last")


def _leaves(node: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            out.update(_leaves(value, dotted))
        else:
            out[dotted] = value
    return out


def searchable_keys() -> dict[str, Any]:
    """Every searchable dotted run-config key with its default (whose type is the key's type)."""
    keys: dict[str, Any] = {}
    for section in SEARCHABLE_SECTIONS:
        keys.update(_leaves(RUN_DEFAULTS[section], section))
    return {k: v for k, v in keys.items() if k not in NOT_SEARCHABLE}


def _check_value(study: dict, key: str, value: Any, what: str) -> None:
    """``value`` of ``key`` must give a valid run on its own (range checks of :mod:`lgeseg.config`)."""
    try:
        run_config_of(study, {key: value}, Replicate(0))
    except ConfigError as exc:
        raise ConfigError(f"config key 'search.space.{key}': {what} {value!r} is not a valid value ({exc})") from None


def _distribution(study: dict, key: str, spec: Any, default: Any) -> BaseDistribution:
    where = f"search.space.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(
            f"config key '{where}' must be a mapping {{low, high, log}} or {{choices: [...]}}, got {spec!r}"
        )
    unknown = sorted(set(spec) - {"low", "high", "log", "choices"})
    if unknown:
        raise ConfigError(f"unknown config key '{where}.{unknown[0]}' (known here: choices, high, log, low)")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(f"config key '{where}': give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"config key '{where}.choices' must be a non-empty list, got {choices!r}")
        for choice in choices:
            if not type_ok(choice, default):
                raise ConfigError(
                    f"config key '{where}.choices' holds {choice!r}, but '{key}' must be {type_name(default)}"
                )
            _check_value(study, key, choice, "choice")
        values = [float(c) if isinstance(default, float) else c for c in choices]
        if len(set(values)) != len(values):
            raise ConfigError(f"config key '{where}.choices' has repeated values: {choices!r}")
        return CategoricalDistribution(values)
    if isinstance(default, (bool, str)) or not isinstance(default, (int, float)):
        raise ConfigError(f"config key '{where}': '{key}' is {type_name(default)}, so it takes {{choices: [...]}}")
    missing = [b for b in ("low", "high") if b not in spec]
    if missing:
        raise ConfigError(f"config key '{where}' needs '{missing[0]}' (or choices)")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    for bound, value in (("low", low), ("high", high)):
        if not type_ok(value, default):
            raise ConfigError(f"config key '{where}.{bound}' must be {type_name(default)}, got {value!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"config key '{where}.log' must be true or false, got {log!r}")
    if low >= high:
        raise ConfigError(f"config key '{where}': low ({low!r}) must be below high ({high!r})")
    if log and low <= 0:
        raise ConfigError(f"config key '{where}': a log scale needs low > 0, got {low!r}")
    _check_value(study, key, low, "low")
    _check_value(study, key, high, "high")
    if isinstance(default, float):
        return FloatDistribution(float(low), float(high), log=log)
    return IntDistribution(low, high, log=log)


def check_search(config: dict) -> None:
    """Check the ``search`` section of a merged study config; raise a one-line ConfigError naming the key."""
    search = config["search"]
    if search["sampler"] not in SAMPLERS:
        raise ConfigError(
            f"config key 'search.sampler' must be one of {', '.join(SAMPLERS)}, got {search['sampler']!r}"
        )
    if search["scheduler"] is not None and search["scheduler"] not in SCHEDULERS:
        raise ConfigError(
            f"config key 'search.scheduler' must be null or one of {', '.join(SCHEDULERS)}, got {search['scheduler']!r}"
        )
    for key in ("n_trials", "max_concurrent", "seeds_per_trial"):
        if search[key] < 1:
            raise ConfigError(f"config key 'search.{key}' must be >= 1, got {search[key]!r}")
    if search["seed"] < 0:
        raise ConfigError(f"config key 'search.seed' must be >= 0, got {search['seed']!r}")
    startup = search["startup_trials"]
    if startup is not None and not (type_ok(startup, 0) and startup >= 0):
        raise ConfigError(f"config key 'search.startup_trials' must be null or an integer >= 0, got {startup!r}")
    if not search["space"]:
        raise ConfigError("config key 'search.space' is empty: name at least one run-config key to search")
    keys = searchable_keys()
    for key in search["space"]:
        if key not in keys:
            raise ConfigError(
                f"config key 'search.space.{key}': '{key}' is not a searchable run-config key "
                f"(searchable: {', '.join(keys)})"
            )
    dists = space(config)
    ranges = [k for k, d in dists.items() if not isinstance(d, CategoricalDistribution)]
    if search["sampler"] == "grid":
        if ranges:
            raise ConfigError(
                f"config key 'search.space.{ranges[0]}': the grid sampler needs {{choices: [...]}} for every key"
            )
        points = math.prod(len(d.choices) for d in dists.values())
        if search["n_trials"] > points:
            raise ConfigError(
                f"config key 'search.n_trials' is {search['n_trials']} but the grid sampler's space has {points} points"
            )
    if search["sampler"] == "cmaes" and len(ranges) < 2:
        raise ConfigError(
            "config key 'search.sampler': cmaes needs at least two {low, high} keys in "
            "search.space (Optuna's CMA-ES samples one-dimensional spaces at random)"
        )


def _canonical(spec: dict, dist: BaseDistribution) -> dict:
    """The space entry as stored: floats where the key is a float, ``log`` always present for ranges."""
    if isinstance(dist, CategoricalDistribution):
        return {"choices": list(dist.choices)}
    return {"low": dist.low, "high": dist.high, "log": dist.log}


def max_epochs(config: dict) -> int:
    """The most epochs any attempt can run: the train section or the space, and the retune adjustments."""
    return int(max(value for _, value in values_of(config, "train.epochs")))
