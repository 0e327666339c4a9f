"""The ``search:`` section of a study config: an Optuna sampler over any run-config hyperparameter.

A study has either ``grid:`` (one trial per L2 and seed) or ``search:``::

    search:
      sampler: tpe            # tpe | random | gp | cmaes | qmc | grid (Optuna's samplers)
      n_trials: 24            # configurations the sampler proposes
      max_concurrent: 2       # configurations in progress at once
      seed: 0                 # the sampler's seed
      seeds_per_trial: 1      # run seeds 0..k-1 of each configuration; the sampler sees their mean
      startup_trials: null    # random configurations before TPE / GP / CMA-ES model (null: Optuna's default)
      space:
        train.l2: {low: 1.0e-6, high: 1.0e-1, log: true}
        model.width: {choices: [8, 16, 32]}
      scheduler: null         # or asha (Ray Tune's ASHAScheduler on validation accuracy per epoch)

Every space key is a dotted key of a run's ``model`` or ``train`` section; its range or choices are checked
against that key's type and range here, on load, so a bad space fails before anything runs. The space
becomes Optuna distributions (:func:`distributions`), and :func:`configuration_run_config` turns one
sampled configuration into the run config of one seed.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from lgeseg.config import RUN_DEFAULTS, merge, run_config
from lgeseg.errors import ConfigError

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


def _set_dotted(sections: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = sections
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def configuration_run_config(study: dict, params: dict[str, Any], seed: int, adjustment: dict | None = None) -> dict:
    """The run config of one seed of one configuration.

    Args:
        study: a validated search study config.
        params: the configuration, dotted run-config key -> value (as Optuna sampled it).
        seed: the run seed.
        adjustment: a retune rerun's train-key changes, applied over the sampled values.

    Returns:
        A validated run config.

    Raises:
        ConfigError: when the combination is not a valid run.
    """
    sections = copy.deepcopy({"model": study["model"], "train": study["train"]})
    for dotted, value in params.items():
        _set_dotted(sections, dotted, value)
    sections["train"].update(copy.deepcopy(adjustment or {}))
    return run_config({"data": study["data"], "seed": seed, "split": study["split"], **sections})


def _type_name(default: Any) -> str:
    return {bool: "a boolean", float: "a number", int: "an integer", str: "a string"}.get(type(default), "a value")


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(default))


def _check_value(study: dict, key: str, value: Any, what: str) -> None:
    """``value`` of ``key`` must give a valid run on its own (range checks of :mod:`lgeseg.config`)."""
    try:
        configuration_run_config(study, {key: value}, 0)
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
            if not _type_ok(choice, default):
                raise ConfigError(
                    f"config key '{where}.choices' holds {choice!r}, but '{key}' must be {_type_name(default)}"
                )
            _check_value(study, key, choice, "choice")
        values = [float(c) if isinstance(default, float) else c for c in choices]
        if len(set(values)) != len(values):
            raise ConfigError(f"config key '{where}.choices' has repeated values: {choices!r}")
        return CategoricalDistribution(values)
    if isinstance(default, (bool, str)) or not isinstance(default, (int, float)):
        raise ConfigError(f"config key '{where}': '{key}' is {_type_name(default)}, so it takes {{choices: [...]}}")
    missing = [b for b in ("low", "high") if b not in spec]
    if missing:
        raise ConfigError(f"config key '{where}' needs '{missing[0]}' (or choices)")
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    for bound, value in (("low", low), ("high", high)):
        if not _type_ok(value, default):
            raise ConfigError(f"config key '{where}.{bound}' must be {_type_name(default)}, got {value!r}")
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


def distributions(config: dict) -> dict[str, BaseDistribution]:
    """The Optuna distribution of each key of a validated search config's space, in space order."""
    keys = searchable_keys()
    return {key: _distribution(config, key, spec, keys[key]) for key, spec in config["search"]["space"].items()}


def grid_size(dists: dict[str, BaseDistribution]) -> int:
    """How many points the grid sampler has (all keys must be choices)."""
    return math.prod(len(d.choices) for d in dists.values() if isinstance(d, CategoricalDistribution))


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
    if startup is not None and (not isinstance(startup, int) or isinstance(startup, bool) or startup < 0):
        raise ConfigError(f"config key 'search.startup_trials' must be null or an integer >= 0, got {startup!r}")
    space = search["space"]
    if not space:
        raise ConfigError("config key 'search.space' is empty: name at least one run-config key to search")
    keys = searchable_keys()
    for key in space:
        if key not in keys:
            raise ConfigError(
                f"config key 'search.space.{key}': '{key}' is not a searchable run-config key "
                f"(searchable: {', '.join(keys)})"
            )
    dists = distributions(config)
    ranges = [k for k, d in dists.items() if not isinstance(d, CategoricalDistribution)]
    if search["sampler"] == "grid":
        if ranges:
            raise ConfigError(
                f"config key 'search.space.{ranges[0]}': the grid sampler needs {{choices: [...]}} for every key"
            )
        if search["n_trials"] > grid_size(dists):
            raise ConfigError(
                f"config key 'search.n_trials' is {search['n_trials']} but the grid sampler's space "
                f"has {grid_size(dists)} points"
            )
    if search["sampler"] == "cmaes" and len(ranges) < 2:
        raise ConfigError(
            "config key 'search.sampler': cmaes needs at least two {low, high} keys in "
            "search.space (Optuna's CMA-ES samples one-dimensional spaces at random)"
        )


def search_study_config(values: dict) -> dict:
    """A validated search study config: the study defaults (``train.l2`` included, no ``grid`` or
    ``seeds``) overlaid with ``values``, and its ``search`` section checked."""
    from .config import STUDY_DEFAULTS, check_study

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
    del config["seeds"]
    check_search(config)
    config["search"]["space"] = {
        key: _canonical(spec, dist)
        for (key, spec), dist in zip(config["search"]["space"].items(), distributions(config).values())
    }
    return config


def _canonical(spec: dict, dist: BaseDistribution) -> dict:
    """The space entry as stored: floats where the key is a float, ``log`` always present for ranges."""
    if isinstance(dist, CategoricalDistribution):
        return {"choices": list(dist.choices)}
    return {"low": dist.low, "high": dist.high, "log": dist.log}


def seeds(config: dict) -> list[int]:
    """The run seeds of every configuration of a search study."""
    return list(range(config["search"]["seeds_per_trial"]))


def max_epochs(config: dict) -> int:
    """The most epochs any attempt can run: the train section, the space and the retune adjustments."""
    epochs = [config["train"]["epochs"]]
    spec = config["search"]["space"].get("train.epochs")
    if spec:
        epochs += list(spec.get("choices", [])) + [spec.get("high", 0)]
    epochs += [a["epochs"] for a in config["retune"]["adjustments"] if "epochs" in a]
    return int(max(epochs))


__all__ = [
    "NOT_SEARCHABLE",
    "SAMPLERS",
    "SCHEDULERS",
    "SEARCH_DEFAULTS",
    "check_search",
    "configuration_run_config",
    "distributions",
    "grid_size",
    "max_epochs",
    "search_study_config",
    "searchable_keys",
    "seeds",
]
