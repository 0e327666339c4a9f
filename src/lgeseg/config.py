"""Run configuration as plain data.

A run config is a nested dict; :data:`RUN_DEFAULTS` lists every key with its default, and the default's
type is the key's type. :func:`merge` lays user values over defaults and rejects unknown keys and wrong
types with a :class:`~lgeseg.errors.ConfigError` naming the dotted key. :func:`check_run` adds the range
checks. The HPO layer builds its study config from the same sections.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .losses import LOSSES
from .models import MODEL_DEFAULTS, check_model
from .normalization import NORMALIZATION_DIMENSIONS, NORMALIZATIONS


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``1e-4`` as a number (YAML 1.2), not as the string YAML 1.1 makes it,
    and refuses a key given twice in one mapping, at any depth (PyYAML keeps the last silently,
    yaml/pyyaml#165; YAML 1.2 requires unique keys). Keys brought in by a ``<<`` merge may be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error follows
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r}, also at line {first.start_mark.line + 1}; delete one",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


#: The field's metrics :mod:`lgeseg.field_metrics` computes beside MATLAB's (config ``metrics.field``).
FIELD_METRICS: tuple[str, ...] = ("dice", "hd95", "assd", "nsd")

#: Every key of a single training run, with MATLAB R2020b / the study's values as defaults.
RUN_DEFAULTS: dict[str, Any] = {
    "data": None,  # dataset folder; None = the built-in synthetic phantom
    "seed": 0,  # weights init, shuffling, augmentation, dropout
    # folds: k >= 2 for patient-wise k-fold cross-validation (fold f's test set is patient group f, validation
    # from the other patients by the fractions); stratify: a manifest column balanced across folds.
    "split": {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0, "folds": None, "fold": 0, "stratify": None},
    "model": MODEL_DEFAULTS,  # architecture, normalisation, padding and each architecture's options (lgeseg.models)
    "train": {
        "epochs": 180,
        "batch_size": 16,
        "learning_rate": 1.0e-4,
        "lr_schedule": "none",  # trainingOptions' LearnRateSchedule: none | piecewise; onecycle (not MATLAB)
        "lr_drop_factor": 0.1,  # LearnRateDropFactor: piecewise multiplies the learning rate by this ...
        "lr_drop_period": 10,  # ... every LearnRateDropPeriod epochs
        "shuffle": "once",  # trainingOptions' Shuffle: once (MATLAB's default) | every-epoch
        "l2": 5.0e-4,
        "loss": "cross-entropy",  # cross-entropy (MATLAB) | dice-ce | dice | focal (lgeseg.losses)
        "l2_mode": "coupled",  # coupled = MATLAB (L2 added to the gradient); decoupled = AdamW
        "select": "final",  # final = the last network, as MATLAB R2020b returns; best_val
        "augment": {"reflect": True, "translate": 10},
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "precision": "auto",  # auto (bf16 where native: CUDA, CPUs with AVX-512 BF16 or AMX; else fp32) | fp32 | bf16
        "channels_last": "auto",  # auto (on CUDA) | true | false
        "checkpoint_every": 1,  # epochs between resumable checkpoints (last.pt, best.pt)
        # 0 = validate at the end of every epoch; N = MATLAB's ValidationFrequency (iterations; its default
        # is 50): after the first iteration, every N-th and the last, plus the ends of validation_epochs
        "validation_frequency": 0,
        "validation_epochs": [],  # epochs whose end always validates (hpo: the retune rule's check epoch)
    },
    # The field's metrics beside MATLAB's (lgeseg.field_metrics): which to compute, NSD tolerance (mm).
    "metrics": {"field": list(FIELD_METRICS), "nsd_tolerance_mm": 2.0},
}

#: Keys added after runs were recorded: at these values they are left out of :func:`config_hash`, so the
#: hash (and a finished run's "same config" check) of every config written before them stays the same.
HASH_NEUTRAL: dict[tuple[str, ...], Any] = {
    ("split", "folds"): None,
    ("split", "fold"): 0,
    ("split", "stratify"): None,
    ("metrics",): RUN_DEFAULTS["metrics"],
    ("train", "validation_frequency"): 0,
    ("train", "validation_epochs"): [],
}

#: Keys whose value may be null besides their default's type.
NULLABLE = {"data", "split.folds", "split.stratify"}
CHOICES = {
    "model.normalization": NORMALIZATIONS,
    "model.normalization_dimension": NORMALIZATION_DIMENSIONS,
    "train.lr_schedule": ("none", "piecewise", "onecycle"),
    "train.shuffle": ("once", "every-epoch"),
    "train.l2_mode": ("coupled", "decoupled"),
    "train.select": ("final", "best_val"),
    "train.loss": LOSSES,
    "train.precision": ("auto", "fp32", "bf16"),
}


def type_ok(value: Any, default: Any) -> bool:
    """Whether ``value`` may stand where the config's ``default`` does: the same kind (an int for a float,
    never a bool for a number); a float must be finite (NaN and inf are never a setting); a None default
    takes anything. The one type check of run, study and search-space values."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if default is None:
        return True
    return isinstance(value, type(default))


def type_name(default: Any) -> str:
    """How :func:`type_ok` names the kind of ``default`` in an error ("a number", ...)."""
    return {
        bool: "a boolean",
        float: "a number",
        int: "an integer",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(default), type(default).__name__)


def merge(defaults: dict, values: dict | None, where: str = "", nullable: set[str] = NULLABLE) -> dict:
    """Return ``defaults`` overlaid with ``values``; unknown keys and wrong types raise ConfigError."""
    out = copy.deepcopy(defaults)
    if values is None:
        return out
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    for key, value in values.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in defaults:
            known = ", ".join(sorted(defaults))
            raise ConfigError(f"unknown config key '{dotted}' (known here: {known})")
        default = defaults[key]
        if isinstance(default, dict) and default:
            out[key] = merge(default, value, dotted, nullable)
        elif value is None and dotted in nullable:
            out[key] = None
        elif dotted == "channels_last" or dotted.endswith(".channels_last"):
            if value not in ("auto", True, False):
                raise ConfigError(f"config key '{dotted}' must be auto, true or false, got {value!r}")
            out[key] = value
        elif not type_ok(value, default):
            raise ConfigError(f"config key '{dotted}' must be {type_name(default)}, got {value!r}")
        else:
            out[key] = float(value) if isinstance(default, float) else value
    return out


def set_dotted(config: dict, assignment: str) -> None:
    """Apply one ``--set key.sub=value`` override in place (value parsed as YAML)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc.problem})") from None
    put_dotted(config, key, value, f"--set {key}")


def get_dotted(config: dict, key: str, default: Any = None) -> Any:
    """The value of dotted ``key`` (``train.l2``) in ``config``, or ``default`` where a part is missing."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def put_dotted(config: dict, key: str, value: Any, where: str = "") -> None:
    """Set dotted ``key`` (``train.l2``) of ``config`` in place, making sections the config left out
    (:func:`merge` validates the key later). The one home of dotted keys.

    Raises:
        ConfigError: when a part of ``key`` names a value, not a section.
    """
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where or key}: '{part}' is not a config section")
    node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with ``yaml.safe_load``; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{at} ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def _positive(config: dict, dotted: str, allow_zero: bool = False) -> None:
    node = get_dotted(config, dotted)
    if not math.isfinite(node) or node < 0 or (node == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"config key '{dotted}' must be {bound}, got {node!r}")


def check_choices(config: dict) -> None:
    for dotted, allowed in CHOICES.items():
        node = get_dotted(config, dotted)
        if node not in allowed:
            raise ConfigError(f"config key '{dotted}' must be one of {', '.join(allowed)}, got {node!r}")


def check_split_fractions(
    train: float, val: float, test: float, where: str = "split", allow_empty: bool = False
) -> tuple[float, float, float]:
    """The one rule for train / validation / test fractions; returns them as floats.

    Each is a finite number in (0, 1), or in [0, 1] with ``allow_empty`` (a split of fraction 0 stays
    empty), and together they sum to 1 (within 1e-6). A run's config needs all three splits (it trains,
    selects on validation and reports test metrics); :func:`lgeseg.data.split_dataset` allows empty ones.

    Raises:
        ConfigError: naming the key ``<where>.<name>`` and the value.
    """
    fractions = (train, val, test)
    for name, value in zip(("train", "val", "test"), fractions):
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        if not (0 <= number <= 1 if allow_empty else 0 < number < 1):
            bounds = "from 0 to 1" if allow_empty else "between 0 and 1"
            raise ConfigError(f"config key '{where}.{name}' must be {bounds}, got {value!r}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(f"config keys '{where}.train/val/test' must sum to 1, got {sum(fractions):g}")
    return float(train), float(val), float(test)


def check_split(split: dict, where: str = "split") -> None:
    """A config's ``split`` section: every split non-empty (see :func:`check_split_fractions`), and the folds.

    With ``folds`` (an integer >= 2) the test set is one fold, so ``test`` is not used and the validation
    share of the remaining patients is ``val / (train + val)``; ``fold`` must be in ``0 .. folds - 1``;
    ``stratify`` is a manifest column name (checked against the manifest when the data are split).
    """
    check_split_fractions(split["train"], split["val"], split["test"], where)
    folds, fold, stratify = split.get("folds"), split.get("fold", 0), split.get("stratify")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ConfigError(f"config key '{where}.folds' must be an integer >= 2 (or null for one split), got {folds!r}")
    if folds is None and fold != 0:
        raise ConfigError(f"config key '{where}.fold' is {fold!r} but '{where}.folds' is not set")
    if folds is not None and not 0 <= fold < folds:
        raise ConfigError(f"config key '{where}.fold' must be from 0 to {folds - 1} ({where}.folds - 1), got {fold!r}")
    if stratify is not None and (not isinstance(stratify, str) or not stratify.strip()):
        raise ConfigError(f"config key '{where}.stratify' must be a manifest column name, got {stratify!r}")
    if stratify is not None and folds is None:
        raise ConfigError(f"config key '{where}.stratify' needs '{where}.folds' (it balances the folds)")


def check_model_train(config: dict) -> None:
    """Range checks shared by run and study configs."""
    check_choices(config)
    check_model(config["model"])
    check_split(config["split"])
    for key in (
        "model.width",
        "model.depth",
        "train.epochs",
        "train.batch_size",
        "train.learning_rate",
        "train.checkpoint_every",
        "train.lr_drop_period",
    ):
        _positive(config, key)
    factor = config["train"]["lr_drop_factor"]
    if not 0 <= factor <= 1:  # trainingOptions: a scalar from 0 to 1
        raise ConfigError(f"config key 'train.lr_drop_factor' must be between 0 and 1, got {factor!r}")
    _positive(config, "train.l2", allow_zero=True)
    _positive(config, "split.seed", allow_zero=True)
    if "seed" in config:
        _positive(config, "seed", allow_zero=True)
    _positive(config, "train.augment.translate", allow_zero=True)
    _positive(config, "train.validation_frequency", allow_zero=True)
    epochs = config["train"]["validation_epochs"]
    if not all(type_ok(e, 0) and e > 0 for e in epochs):
        raise ConfigError(
            f"config key 'train.validation_epochs' must be a list of epochs (integers > 0), got {epochs!r}"
        )
    if "metrics" in config:
        check_metrics_config(config["metrics"])


def check_metrics_config(section: dict, where: str = "metrics") -> None:
    """The ``metrics`` config section: ``nsd_tolerance_mm`` > 0 and ``field`` names from :data:`FIELD_METRICS`.

    Raises:
        ConfigError: one line naming the key and the value.
    """
    tolerance = section["nsd_tolerance_mm"]
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ConfigError(f"config key '{where}.nsd_tolerance_mm' must be > 0, got {tolerance!r}")
    for name in section["field"]:
        if name not in FIELD_METRICS:
            raise ConfigError(
                f"config key '{where}.field' names unknown metric {name!r} (known: {', '.join(FIELD_METRICS)})"
            )


def run_config(values: dict | None = None) -> dict:
    """A validated run config: RUN_DEFAULTS overlaid with ``values``."""
    config = merge(RUN_DEFAULTS, values)
    check_model_train(config)
    return config


def first_difference(now: Any, stored: Any, where: str = "") -> tuple[str, Any, Any] | None:
    """Where two configs first differ (keys sorted, depth first): ``(dotted key, now's value, stored value)``
    (a key one of them lacks has None there), or None when they are equal."""
    if isinstance(now, dict) and isinstance(stored, dict):
        for key in sorted(set(now) | set(stored)):
            found = first_difference(now.get(key), stored.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if now == stored else (where, now, stored)


def without_neutral(config: dict) -> dict:
    """A copy of ``config`` without the :data:`HASH_NEUTRAL` keys that hold their neutral value: what a
    config recorded before those keys existed is compared with (hashes, a study's stored config)."""
    config = copy.deepcopy(config)
    for path, neutral in HASH_NEUTRAL.items():
        node = config
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == neutral:
            del node[path[-1]]
    return config


def config_hash(config: dict) -> str:
    """Short stable hash of a config (key order does not matter; :data:`HASH_NEUTRAL` keys at those values
    are left out, see :func:`without_neutral`)."""
    config = without_neutral(config)
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
