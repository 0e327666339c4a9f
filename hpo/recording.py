"""``record``: bring run folders written by ``train`` (here, or on a machine without Ray) into a study.

A recorded run becomes the attempt trial a grid would have written for the same configuration and
replicate: the same params (:func:`hpo.record.attempt_params`), intermediate values (validation accuracy
per epoch, from ``history.csv``), user attrs (:func:`hpo.record.start_attrs`,
:func:`hpo.record.finished_attempt`), lineage and value, plus ``recorded_from``; its checkpoint goes into the
study's artifact store (:mod:`hpo.artifacts`). So ``report``, ``dashboard`` and ``predict`` treat it like
any trial, and a later ``grid --resume`` of the study counts it as done.

Every folder is checked before anything is written; one refused folder refuses the whole call with one
line naming it. A folder is refused when it is not a finished run (``run.json`` with ``finished``,
``config.yaml``, ``metrics.json``, ``val_metrics.json``, ``history.csv``, ``split.json``), when its data
fingerprint, split or labels differ from the study's (or, for a new study, from the first folder's), when
its run config is not a point of the study's space times one of its replicates under the study's protocol
(everything but the space's keys, the replicate's keys and where the run ran: ``data`` path,
``train.device``, ``train.checkpoint_every``, ``train.channels_last``), when the study's retune rule would
have stopped it, or when it is already recorded (the same trial folder, or its configuration and replicate
already COMPLETE). Only grid studies take runs: a search's configurations come from its sampler.

No Ray here or in anything this imports (the command must run where Ray is not installed).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from lgeseg.config import first_difference, get_dotted, without_neutral
from lgeseg.errors import ConfigError, DataError, UserError
from lgeseg.fingerprint import check_same
from lgeseg.run import RunResult, read_run_folder

from .record import (
    ATTR,
    DISTRIBUTIONS,
    Attempt,
    Configuration,
    TrialReport,
    attempt_params,
    finished_attempt,
    start_attrs,
)
from .rule import RetuneRule
from .study_config import NOT_SEARCHABLE, grid_configurations, replicates, run_config_of, space

#: Run-config keys that say where a run ran, not what it learned: not part of the protocol compared.
WHERE = ("data", *NOT_SEARCHABLE)


#: The study attributes of its data, as :func:`hpo.study.describe_data` gives them.
DATA_ATTRS = ("data_dir", "labels", "synthetic", "data_fingerprint", "split")


def run_data(run: RunResult) -> dict[str, Any]:
    """The study attributes of a run's data (:data:`DATA_ATTRS`)."""
    return {**{k: run.info[k] for k in DATA_ATTRS if k != "split"}, "split": run.split}


@dataclass
class Recording:
    """One folder matched to its place in the study: the attempt (rerun 0) it stands for."""

    run: RunResult
    attempt: Attempt


def read_run(folder: str | Path) -> RunResult:
    """A finished run folder (:func:`lgeseg.run.read_run_folder`) that carries its data fingerprint.

    Raises:
        DataError: not a finished run folder (see :func:`lgeseg.run.read_run_folder`), or one written before data
            fingerprints were recorded.
    """
    run = read_run_folder(folder)
    if "data_fingerprint" not in run.info:
        raise DataError(f"{folder}: run.json has no data fingerprint (written before they were recorded)")
    run.out_dir = run.out_dir.resolve()
    return run


def _protocol(run: dict[str, Any]) -> dict[str, Any]:
    """A run config without the keys that say where it ran (:data:`WHERE`)."""
    run = without_neutral(run)
    for dotted in WHERE:
        section, _, last = dotted.rpartition(".")
        node = get_dotted(run, section, {}) if section else run
        node.pop(last, None)
    return run


def match(config: dict, name: str, run: RunResult) -> Attempt:
    """The attempt of grid study ``config`` that ``run`` is, or a UserError naming the folder and why not."""
    where = f"{run.out_dir}"
    params = {}
    for key, dist in space(config).items():
        value = get_dotted(run.config, key)
        if value not in dist.choices:
            raise ConfigError(
                f"{where}: {key}={value!r} is not a point of study '{name}' ({key}: {list(dist.choices)})"
            )
        params[key] = value
    configuration = next(c for c in grid_configurations(config) if c.values == params)
    mine = _protocol(run.config)
    for replicate in replicates(config):
        if mine == _protocol(run_config_of(config, params, replicate)):
            return Attempt(Configuration(configuration.params), replicate)
    first = replicates(config)[0]
    expected = _protocol(run_config_of(config, params, first))
    keys = set(first.apply(expected))
    difference = first_difference(
        {k: v for k, v in mine.items() if k not in keys}, {k: v for k, v in expected.items() if k not in keys}
    )
    if difference is None:
        values = ", ".join(f"{k}={mine.get(k)!r}" for k in sorted(keys))
        known = ", ".join(r.key for r in replicates(config))
        raise ConfigError(f"{where}: {values} is not a replicate of study '{name}' ({known})")
    key, now, study_value = difference
    raise ConfigError(
        f"{where}: not the protocol of study '{name}': {key} is {now!r}, the study's is {study_value!r}"
        + (_check_epoch_hint(config, run.config) if key == "train.validation_epochs" else "")
    )


def _check_epoch_hint(config: dict, run_config: dict) -> str:
    """Why ``train.validation_epochs`` differs: it holds the retune rule's check epoch, which ``train`` adds from
    the ``retune`` section of the config it is given, so the run was trained under another retune rule."""
    if "retune" not in config:
        return ""
    rule = RetuneRule.from_config(config["retune"])
    fraction = f"retune.check_fraction={rule.check_fraction:g}"
    if not rule.enabled:
        return f" (the study's retune rule is off, {fraction}: the run was trained under another retune rule)"
    epoch = rule.check_epoch(get_dotted(run_config, "train.epochs"))
    return (
        f" (the study's retune rule checks at epoch {epoch}, {fraction}, and a run validates there: "
        "the run was trained under another retune rule)"
    )


def _check_data(run: RunResult, name: str, data: dict[str, Any]) -> None:
    check_same(
        f"{run.out_dir}",
        data["data_fingerprint"],
        data["split"],
        run.info["data_fingerprint"],
        run.split,
        f"record it into another study (study '{name}')",
    )
    if {str(k): int(v) for k, v in run.info["labels"].items()} != {str(k): int(v) for k, v in data["labels"].items()}:
        raise DataError(f"{run.out_dir}: labels {run.info['labels']} differ from study '{name}''s {data['labels']}")


def _check_rule(config: dict, run: RunResult) -> None:
    """A run the study's retune rule would have stopped is not what a grid records as COMPLETE."""
    rule = RetuneRule.from_config(config["retune"])  # RetuneRule.fails: never when switched off
    epochs = run.config["train"]["epochs"]
    check = rule.check_epoch(epochs)
    reached = [row["val_accuracy"] for row in run.history if row["epoch"] <= check]
    result = {"epoch": check, "epochs": epochs, "best_val_accuracy": max(reached, default=math.nan)}
    if len(reached) >= check and rule.fails(result):
        raise UserError(
            f"{run.out_dir}: the study's retune rule would have stopped this run ({rule.reason(result)}); "
            "a grid reruns it with the next adjustment"
        )


def plan_recordings(
    folders: list[str | Path], config: dict, name: str, study: optuna.Study | None
) -> tuple[list[Recording], dict[str, Any]]:
    """Check every folder against the study (or, for a new study, ``config`` and the first folder's data)
    and return what to record and the study's data attributes; raise a UserError for the first refused one.
    """
    if "search" in config:
        raise ConfigError(
            f"study '{name}' is a search: its configurations come from the sampler; record takes grid studies"
        )
    runs = [read_run(folder) for folder in folders]
    data = dict(study.user_attrs) if study is not None and "data_fingerprint" in study.user_attrs else run_data(runs[0])
    recorded: dict[str, int] = {}
    complete: dict[str, int] = {}
    running: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False) if study is not None else []:
        folder = trial.user_attrs.get(ATTR.TRIAL_DIR)
        if folder:
            recorded[str(Path(folder).resolve())] = trial.number
        point = (trial.user_attrs.get(ATTR.LINEAGE) or {}).get("point")
        if point and trial.state == optuna.trial.TrialState.COMPLETE:
            complete[point] = trial.number
        if point and trial.state == optuna.trial.TrialState.RUNNING:
            running[point] = trial.number
    plans: list[Recording] = []
    seen: dict[str, Path] = {}
    for run in runs:
        _check_data(run, name, data)
        attempt = match(config, name, run)
        if str(run.out_dir) in recorded:
            raise UserError(f"{run.out_dir}: already recorded in study '{name}' as trial {recorded[str(run.out_dir)]}")
        if attempt.point in complete:
            raise UserError(
                f"{run.out_dir}: {attempt.point} is already COMPLETE in study '{name}' "
                f"(trial {complete[attempt.point]})"
            )
        if attempt.point in running:
            raise UserError(
                f"{run.out_dir}: {attempt.point} is being trained in study '{name}' (trial {running[attempt.point]} "
                "is RUNNING); finish or resume the study first"
            )
        if attempt.point in seen:
            raise UserError(f"{run.out_dir}: {attempt.point} is given twice (also {seen[attempt.point]})")
        seen[attempt.point] = run.out_dir
        _check_rule(config, run)
        plans.append(Recording(run, attempt))
    return plans, {k: data[k] for k in DATA_ATTRS}


def write_recording(study: optuna.Study, store, plan: Recording) -> optuna.trial.FrozenTrial:
    """Write one checked folder as its attempt trial, as the recorder writes a grid's (see the module)."""
    from .artifacts import register_checkpoints

    run = plan.run
    attrs = {
        **start_attrs(plan.attempt, str(run.out_dir), run.info["config_hash"], None, None),
        ATTR.RECORDED_FROM: str(run.out_dir),
    }
    params = attempt_params(run.config, plan.attempt.rerun)
    study.enqueue_trial(params, user_attrs=attrs)
    trial = study.ask({k: DISTRIBUTIONS[k] for k in params})  # no draw for a param left out (a fold-less run)
    for row in run.history:
        trial.report(row["val_accuracy"], row["epoch"])
    try:
        register_checkpoints(store, trial, run.out_dir)
    except DataError as exc:
        print(f"note: {run.out_dir}: no checkpoint registered ({exc}); predict cannot use this trial", file=sys.stderr)
    state, value, attrs = finished_attempt(TrialReport.of_run(run, run.config["train"]["epochs"]))
    for key, val in attrs.items():
        trial.set_user_attr(key, val)
    return study.tell(trial, value, state=state)


__all__ = ["match", "plan_recordings", "read_run", "run_data", "write_recording"]
