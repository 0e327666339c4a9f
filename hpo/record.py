"""The study record: how a study is written into Optuna and read back. No Ray, so dashboards read it too.

A study is a space of *configurations* (a grid's categorical axes, or what a sampler proposes) times
*replicates* (seeds now; cross-validation folds next). Each replicate of a configuration is trained by
*attempts*: rerun 0 is the protocol itself, rerun k carries the k-th retune adjustment. The record (one Optuna
study per study) holds one trial per attempt and, for a search, one trial per configuration (user attr
``kind`` = :data:`CONFIGURATION`); a grid's record keeps only attempts, as it always has, and its sampler
trials (``<name>/sampler``) stand for its configurations. This module is the one home of that schema:

* the names: :attr:`Attempt.name` (trial folder and ``trial_name``) and :attr:`Attempt.point` (lineage
  ``point``), derived from the configuration and :class:`Replicate` in one place;
* the attribute keys (:data:`ATTR`), the attempt params and their wide distributions (:func:`attempt_params`),
  and an attempt's attributes when it starts and when it completes (:func:`start_attrs`,
  :func:`finished_attempt`: written by the recorder and by ``record`` alike);
* the one status vocabulary (:class:`Status`);
* what a trial reports to Tune (:class:`TrialReport`);
* a replicate's outcome (:func:`stored_outcome`, :func:`reported_outcome`) and a configuration's outcome
  from its replicates (:func:`configuration_outcome`: the mean validation value, never a test value);
* the resume plan (:func:`plan_study`), read by the searcher, the closing table and the report alike.

The fold axis (``split.folds: k``): :func:`hpo.study_config.replicates` gives every (seed, fold) as a
:class:`Replicate`, :meth:`Replicate.apply` sets ``seed`` and ``split.fold``; names, lineage, the plan and a
configuration's outcome (the mean over all its replicates, folds and seeds alike) follow from it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from lgeseg.losses import LOSSES
from lgeseg.models import ARCHITECTURES


class ATTR:
    """User-attribute keys of the record's trials (attempts unless marked)."""

    KIND = "kind"  #: configuration trials: :data:`CONFIGURATION`
    CONFIGURATION = "configuration"  #: configuration trials: the configuration's index
    SAMPLER_TRIAL = "sampler_trial"  #: configuration trials: its trial in the sampler study
    TRIAL_NAME = "trial_name"  #: :attr:`Attempt.name` (``c<index>`` for a configuration trial)
    TRIAL_DIR = "trial_dir"
    LINEAGE = "lineage"  #: point, rerun, rerun_of, adjustment (+ configuration, configuration_index)
    ERROR = "error"
    RETUNE = "retune"  #: why the retune rule stopped the attempt, and its replacement
    STOPPED_BY_SCHEDULER = "stopped_by_scheduler"
    TEST_METRICS = "test_metrics"
    VAL_METRICS = "val_metrics"
    EPOCHS_RUN = "epochs_run"
    BEST_VAL_ACCURACY = "best_val_accuracy"
    BASELINE = "baseline"  #: the majority-class baseline's metrics per split (lgeseg.run)
    SPLIT_HASH = "split_hash"
    REPLICATES = "seeds"  #: configuration trials: every replicate's outcome (named ``seeds`` since d5d5804)
    CONFIG_HASH = "config_hash"
    CHECKPOINTS = "checkpoints"  #: file name -> {artifact_id, sha256, bytes} in the study's artifact store
    RECORDED_FROM = "recorded_from"  #: attempts brought in by ``record``: the run folder as given


#: The ``error`` of a finished attempt whose selected network has no validation MeanIoU (no objective).
UNDEFINED_VALUE = "validation MeanIoU is undefined (a class never occurs in the validation split)"

#: ``kind`` of a configuration trial in the record.
CONFIGURATION = "configuration"
#: Suffix of the sampler study's name (grids recorded before the one flow, at d5d5804, have none).
SAMPLER_SUFFIX = "/sampler"


def sampler_study_name(name: str) -> str:
    """The sampler study that goes with record study ``name``."""
    return f"{name}{SAMPLER_SUFFIX}"


class Status:
    """Where an attempt's replicate (and a configuration) stands: the one vocabulary of the resume plan, the
    closing table, the stored replicate outcomes and the exit status."""

    PENDING = "pending"  #: nothing recorded yet, or a rerun is owed
    INTERRUPTED = "interrupted"  #: the last attempt was RUNNING when its driver stopped
    COMPLETE = "complete"  #: the last attempt finished
    NOT_CONVERGED = "not converged"  #: every attempt was stopped by the retune rule, no reruns left
    STOPPED = "stopped by ASHA"  #: the trial scheduler stopped the last attempt
    FAILED = "failed"  #: the last attempt failed (recorded with its error, not retried)

    #: Statuses that make a study command exit with status 1.
    UNSUCCESSFUL = (PENDING, INTERRUPTED, FAILED)


@dataclass(frozen=True)
class Replicate:
    """One repetition of a configuration: a run seed and, under ``split.folds``, a cross-validation ``fold``.

    Every name and key of a replicate comes from here; a fold-less replicate is named as before folds existed.
    """

    seed: int
    fold: int | None = None

    @property
    def key(self) -> str:
        """Its part of a lineage point: ``seed=<S>`` (``,fold=<F>`` when folded)."""
        return f"seed={self.seed}" + (f",fold={self.fold}" if self.fold is not None else "")

    @property
    def name(self) -> str:
        """Its part of a trial name: ``seed=<S>`` (``_fold=<F>`` when folded)."""
        return self.key.replace(",", "_")

    def apply(self, run: dict[str, Any]) -> dict[str, Any]:
        """The run-config values this replicate sets (merged into the run config ``run`` of an attempt): the
        seed, and the fold's ``split.fold`` (the rest of ``run["split"]`` kept)."""
        if self.fold is None:
            return {"seed": self.seed}
        return {"seed": self.seed, "split": {**run["split"], "fold": self.fold}}

    def to_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "fold": self.fold}


def point_configuration(point: str) -> str:
    """A lineage ``point`` without its replicate's parts (``seed=``, ``fold=``): the configuration it is a
    replicate of, as a grid names it (``l2=0.005,loss=dice``); ``""`` for a study of one configuration."""
    keys = {f.name for f in fields(Replicate)}
    return ",".join(part for part in point.split(",") if part.split("=", 1)[0] not in keys)


@dataclass(frozen=True)
class Configuration:
    """One point of the space: dotted run-config key -> value, in the space's order.

    A grid point is named by its values (``l2=<L2>`` then the other axes, as trial folders always were); a
    configuration of any other sampler, which has a configuration trial in the record, by its index
    ``c<index>``. Both carry their index (the order the sampler proposed them in) once sampled.
    """

    params: tuple[tuple[str, Any], ...]
    index: int | None = None  #: a search's configuration index; a grid point's sampler trial (None unsampled)
    record_number: int | None = None  #: its configuration trial in the record (searches only)

    @property
    def values(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def by_values(self) -> bool:
        """Whether it is named by its values (a grid point: no configuration trial) rather than ``c<index>``."""
        return self.record_number is None

    @property
    def label(self) -> str:
        """How progress lines name it: ``c<index>``, or a grid point's values (``l2=5e-05,loss=dice``)."""
        return ",".join(sum(self._parts(), []))

    def _parts(self) -> tuple[list[str], list[str]]:
        """(before, after) the replicate in a grid point's name: ``l2=<L2>`` first, the other axes after."""
        if not self.by_values:
            return [f"c{self.index:03d}"], []
        head = [f"l2={v:g}" for k, v in self.params if k == "train.l2"]
        tail = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.params if k != "train.l2"]
        return head, tail


@dataclass(frozen=True)
class Attempt:
    """One try at one replicate of one configuration; ``rerun`` 0 is the protocol, k > 0 carries adjustment k."""

    configuration: Configuration
    replicate: Replicate
    rerun: int = 0
    optuna_number: int | None = None  #: an interrupted attempt trial this one continues

    @property
    def point(self) -> str:
        """The replicate's name, the lineage ``point``: ``l2=<L2>,seed=<S>[,<axis>=<v>...]`` or ``c<i>,seed=<S>``."""
        head, tail = self.configuration._parts()
        return ",".join([*head, self.replicate.key, *tail])

    @property
    def name(self) -> str:
        """The attempt's name (trial folder and ``trial_name``): the point with ``_`` and ``_rerun=<k>``."""
        head, tail = self.configuration._parts()
        return "_".join([*head, self.replicate.name, *tail, f"rerun={self.rerun}"])

    def next(self) -> Attempt:
        """The rerun that replaces this attempt when the retune rule stops it."""
        return replace(self, rerun=self.rerun + 1, optuna_number=None)

    def previous(self) -> Attempt | None:
        """The attempt this rerun replaces (None for the protocol's own attempt)."""
        return replace(self, rerun=self.rerun - 1, optuna_number=None) if self.rerun > 0 else None

    def to_config(self) -> dict[str, Any]:
        """The attempt as the plain dict a Ray trial config carries."""
        c = self.configuration
        return {
            "params": [list(p) for p in c.params],
            "index": c.index,
            "record_number": c.record_number,
            "replicate": self.replicate.to_config(),
            "rerun": self.rerun,
            "optuna_number": self.optuna_number,
        }

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> Attempt:
        """The attempt of a Ray trial config's ``attempt`` dict (see :meth:`to_config`)."""
        params = tuple((k, v) for k, v in values["params"])
        c = Configuration(params, values["index"], values["record_number"])
        return cls(c, Replicate(**values["replicate"]), values["rerun"], values.get("optuna_number"))


#: Wide bounds of an attempt's params, so reruns and later studies over the same parameters fit one record.
#: Optuna checks only the kind and scale of a param's distribution between trials, so bounds may widen.
#: :func:`hpo.study_config.check_recordable` refuses a study whose values fall outside them.
DISTRIBUTIONS = {
    "l2": FloatDistribution(1e-12, 1.0, log=True),
    # far beyond any rate that trains: a typo such as 1e3 fails its trial with the NaN-loss message instead
    "learning_rate": FloatDistribution(1e-10, 1e6, log=True),
    "batch_size": IntDistribution(1, 65536),
    "epochs": IntDistribution(1, 1_000_000),
    "seed": IntDistribution(0, 2**31 - 1),
    "rerun": IntDistribution(0, 1000),
    "fold": IntDistribution(0, 1000),
    "architecture": CategoricalDistribution(ARCHITECTURES),
    "loss": CategoricalDistribution(LOSSES),
}


def attempt_params(run: dict[str, Any], rerun: int) -> dict[str, Any]:
    """The Optuna params of an attempt trial, from its run config (:data:`DISTRIBUTIONS`); ``fold`` only under
    cross-validation (``split.folds``), so fold-less studies record exactly what they always did."""
    train = run["train"]
    fold = {"fold": run["split"]["fold"]} if run.get("split", {}).get("folds") is not None else {}
    return {
        "l2": train["l2"],
        "learning_rate": train["learning_rate"],
        "batch_size": train["batch_size"],
        "epochs": train["epochs"],
        "seed": run["seed"],
        "rerun": rerun,
        "architecture": run["model"]["architecture"],
        "loss": train["loss"],
        **fold,
    }


def start_attrs(
    attempt: Attempt, trial_dir: str, config_hash: str, rerun_of: int | None, adjustment: dict | None
) -> dict[str, Any]:
    """The user attrs an attempt trial gets when it starts: its name, folder, run-config hash and lineage
    (``point``, ``rerun``, ``rerun_of``, ``adjustment``; a sampled configuration's trial and index as
    d5d5804 wrote them). Written by the recorder and by ``record``."""
    lineage: dict[str, Any] = {
        "point": attempt.point,
        "rerun": attempt.rerun,
        "rerun_of": rerun_of,
        "adjustment": adjustment,
    }
    if attempt.configuration.record_number is not None:  # a search's trials, as d5d5804 wrote them
        lineage.update(
            configuration=attempt.configuration.record_number, configuration_index=attempt.configuration.index
        )
    return {
        ATTR.TRIAL_NAME: attempt.name,
        ATTR.TRIAL_DIR: trial_dir,
        ATTR.CONFIG_HASH: config_hash,
        ATTR.LINEAGE: lineage,
    }


def _version(package: str) -> str | None:
    """An installed package's version; None where it is not installed (Ray on a machine that ran ``train``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def finished_attempt(report: TrialReport) -> tuple[TrialState, float | None, dict[str, Any]]:
    """How a finished attempt is told: COMPLETE with its validation MeanIoU and user attrs of its metrics and
    how its run went (``report.run_info`` is the run's ``run.json``), or FAIL with :data:`UNDEFINED_VALUE`
    where that value is undefined. Written by the recorder and by ``record``."""
    import optuna

    if report.val_MeanIoU is None:
        return TrialState.FAIL, None, {ATTR.ERROR: UNDEFINED_VALUE, ATTR.TEST_METRICS: report.test_metrics}
    info = report.run_info or {}
    attrs = {
        ATTR.TEST_METRICS: report.test_metrics,
        ATTR.VAL_METRICS: report.val_metrics,
        ATTR.EPOCHS_RUN: info["epochs_run"],
        ATTR.BEST_VAL_ACCURACY: info["best_val_accuracy"],
        "selected_epoch": info["selected_epoch"],
        "device": info["device"],
        ATTR.BASELINE: info.get("baseline"),
        "wall_time_s": info["wall_time_s"],
        ATTR.SPLIT_HASH: info["split_hash"],
        "versions": {**info["versions"], "ray": _version("ray"), "optuna": optuna.__version__},
    }
    return TrialState.COMPLETE, report.val_MeanIoU, attrs


def _nested(result: dict[str, Any]) -> dict[str, Any]:
    """Tune hands some callbacks the result flattened (``test_metrics/dataset/MeanIoU``): nest it again."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        node, parts = out, key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


@dataclass
class TrialReport:
    """What a trial reports to Tune: every epoch, then (``finished``) the evaluated network's metrics.

    Epoch fields are per-epoch numbers in [0, 1] (accuracies) or losses; ``val_MeanIoU`` is the selected
    network's validation MeanIoU (None when undefined), ``test_metrics`` its :func:`lgeseg.metrics` summary.
    """

    epoch: int
    epochs: int
    val_accuracy: float
    best_val_accuracy: float
    finished: bool = False
    train_loss: float | None = None
    train_accuracy: float | None = None
    val_loss: float | None = None
    epoch_seconds: float | None = None
    replayed: bool = False
    val_MeanIoU: float | None = None
    val_metrics: dict[str, Any] | None = None
    test_metrics: dict[str, Any] | None = None
    run_info: dict[str, Any] | None = None
    node_id: str | None = None
    done: bool = False  #: set by Tune on a trial's last result (the scheduler stopped it when not finished)

    def to_result(self) -> dict[str, Any]:
        """The dict ``tune.report`` takes (Tune adds ``done`` itself)."""
        return {k: v for k, v in asdict(self).items() if k != "done"}

    @classmethod
    def from_result(cls, result: dict[str, Any] | None) -> TrialReport | None:
        """A Tune result (nested or flattened) as a report; None when it carries no epoch."""
        result = _nested(result or {})
        if "epoch" not in result or "epochs" not in result:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in result.items() if k in known})

    @classmethod
    def of_run(cls, run: Any, epochs: int, node_id: str | None = None) -> TrialReport:
        """The last report of a finished run (:class:`lgeseg.run.RunResult`, from training or from a run
        folder ``record`` read): ``epochs`` is its ``train.epochs``."""
        return cls(
            epoch=len(run.history),
            epochs=epochs,
            finished=True,
            val_accuracy=run.history[-1]["val_accuracy"] if run.history else float("nan"),
            best_val_accuracy=run.info["best_val_accuracy"],
            val_MeanIoU=run.val_metrics["dataset"]["MeanIoU"],
            val_metrics=run.val_metrics["dataset"],
            test_metrics=run.test_metrics,
            run_info=run.info,
            node_id=node_id,
        )

    @property
    def test_MeanIoU(self) -> float | None:
        return ((self.test_metrics or {}).get("dataset") or {}).get("MeanIoU")


@dataclass(frozen=True)
class Outcome:
    """How one replicate of a configuration ended (its last attempt), or where it stands."""

    status: str  #: a :class:`Status` value
    trial: int | None = None  #: record number of the attempt that decided it
    rerun: int = 0
    value: float | None = None  #: validation MeanIoU (complete only): the objective
    test_MeanIoU: float | None = None  #: reported, never optimised
    epoch: int | None = None  #: where a stopped attempt stopped
    val_accuracy: float | None = None  #: its best validation accuracy there


def stored_outcome(last: FrozenTrial, max_reruns: int) -> Outcome | None:
    """The outcome a stored last attempt gives its replicate, or None when it still owes work."""
    rerun, attrs = int(last.params.get("rerun", 0)), last.user_attrs
    stopped = {"epoch": attrs.get(ATTR.EPOCHS_RUN), "val_accuracy": attrs.get(ATTR.BEST_VAL_ACCURACY)}
    if last.state == TrialState.COMPLETE:
        test = ((attrs.get(ATTR.TEST_METRICS) or {}).get("dataset") or {}).get("MeanIoU")
        return Outcome(Status.COMPLETE, last.number, rerun, last.value, test)
    if last.state == TrialState.FAIL:
        return Outcome(Status.FAILED, last.number, rerun)
    if last.state == TrialState.PRUNED and ATTR.STOPPED_BY_SCHEDULER in attrs:
        return Outcome(Status.STOPPED, last.number, rerun, **stopped)
    if last.state == TrialState.PRUNED and rerun >= max_reruns:
        return Outcome(Status.NOT_CONVERGED, last.number, rerun, **stopped)
    return None


def reported_outcome(
    report: TrialReport | None, failed: bool, number: int | None, rerun: int, not_converged: bool = False
) -> Outcome | None:
    """The outcome an attempt's last Tune report gives its replicate; ``not_converged``: the retune rule
    stopped it with no reruns left (the rule's verdict is the caller's). None when the experiment stopped it
    (continued on ``--resume``)."""
    if failed or (report is not None and report.finished and report.val_MeanIoU is None):
        return Outcome(Status.FAILED, number, rerun)
    if report is None:
        return None
    if report.finished:
        return Outcome(Status.COMPLETE, number, rerun, report.val_MeanIoU, report.test_MeanIoU)
    if report.done or not_converged:
        status = Status.NOT_CONVERGED if not_converged else Status.STOPPED
        return Outcome(status, number, rerun, epoch=report.epoch, val_accuracy=report.best_val_accuracy)
    return None


def configuration_outcome(outcomes: dict[Replicate, Outcome]) -> tuple[TrialState, float | None, dict[str, Any]]:
    """The state, objective and user attrs of a configuration whose replicates all have an outcome.

    COMPLETE with the mean over replicates (every seed and, under cross-validation, every fold) of each one's
    validation MeanIoU (never a test value) when every replicate completed;
    FAIL when one failed; else PRUNED (not converged, or stopped by the scheduler).
    The attrs hold every replicate's outcome and the spread (sample sd; None for one replicate).
    """
    decided = sorted(outcomes.items(), key=lambda kv: (kv[0].seed, kv[0].fold or 0))
    replicates = [
        {
            **r.to_config(),
            "status": o.status,
            "value": o.value,
            "test_MeanIoU": o.test_MeanIoU,
            "trial": o.trial,
            "rerun": o.rerun,
        }
        for r, o in decided
    ]
    attrs: dict[str, Any] = {
        ATTR.REPLICATES: replicates,
        "n_seeds": len({r.seed for r in outcomes}),
        "n_replicates": len(outcomes),
        "reruns": sum(o.rerun for o in outcomes.values()),
    }
    statuses = {o.status for o in outcomes.values()}
    if Status.FAILED in statuses:
        return TrialState.FAIL, None, {**attrs, ATTR.ERROR: "a replicate failed (see its attempt trial)"}
    if statuses != {Status.COMPLETE}:
        return TrialState.PRUNED, None, attrs
    values = [o.value for o in outcomes.values()]
    tests = [o.test_MeanIoU for o in outcomes.values() if o.test_MeanIoU is not None]
    attrs.update(
        value_mean=statistics.fmean(values),
        value_std=statistics.stdev(values) if len(values) > 1 else None,
        value_min=min(values),
        value_max=max(values),
        test_MeanIoU_mean=statistics.fmean(tests) if len(tests) == len(values) else None,
    )
    return TrialState.COMPLETE, statistics.fmean(values), attrs


def pruned_report(outcomes: dict[Replicate, Outcome]) -> tuple[int, float] | None:
    """For a PRUNED configuration, (epoch, validation accuracy) of the replicate that stopped it soonest, for
    the sampler (TPE ranks pruned trials by how far and how well they got)."""
    stopped = [o for o in outcomes.values() if o.status in (Status.NOT_CONVERGED, Status.STOPPED) and o.epoch]
    if not stopped:
        return None
    worst = min(stopped, key=lambda o: (o.epoch, o.val_accuracy if o.val_accuracy is not None else -math.inf))
    return worst.epoch, worst.val_accuracy if worst.val_accuracy is not None else 0.0


def configuration_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The record's configuration trials, by configuration index."""
    found = [t for t in trials if t.user_attrs.get(ATTR.KIND) == CONFIGURATION]
    return sorted(found, key=lambda t: t.user_attrs[ATTR.CONFIGURATION])


def configuration_key(trial: FrozenTrial) -> str | None:
    """Which configuration a record trial belongs to, as a label: ``configuration <N>`` for a sampled
    configuration (its configuration trial N, or an attempt whose lineage names it), the grid point
    (:func:`point_configuration` of the lineage ``point``; ``the only point`` for a one-point grid), or None
    for a trial the record gives no configuration. Reads studies written since d5d5804 alike."""
    if trial.user_attrs.get(ATTR.KIND) == CONFIGURATION:
        return f"configuration {trial.number}"
    lineage = trial.user_attrs.get(ATTR.LINEAGE) or {}
    if "configuration" in lineage:
        return f"configuration {lineage['configuration']}"
    if "point" in lineage:
        return point_configuration(lineage["point"]) or "the only point"
    return None


def configuration_of(trial: FrozenTrial, grid: bool = False) -> Configuration:
    """The configuration a search's record configuration trial, or (``grid``) a grid's sampler trial, stands for."""
    if grid:  # in grid order: train.l2, then the other axes as GRID_AXES has them (model.* before train.*)
        params = sorted(trial.params.items(), key=lambda kv: (kv[0] != "train.l2", kv[0]))
        return Configuration(tuple(params), trial.number)
    return Configuration(tuple(trial.params.items()), trial.user_attrs[ATTR.CONFIGURATION], trial.number)


#: The ``error`` of a trial a driver enqueued but was killed before starting (see :func:`close_unstarted`).
UNSTARTED = "left unstarted by an interrupted driver"


def close_unstarted(study) -> None:
    """A WAITING trial can only be left by a driver killed between enqueue and ask: close it as FAIL, marked
    :data:`UNSTARTED`, so the plan treats it as never run (the attempt it stood for is owed again)."""
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        trial.set_user_attr(ATTR.ERROR, UNSTARTED)
        study.tell(trial, state=TrialState.FAIL)


def is_unstarted(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is an enqueued attempt that never started (WAITING, or closed by :func:`close_unstarted`)."""
    return trial.state == TrialState.WAITING or (
        trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR.ERROR) == UNSTARTED
    )


@dataclass
class ReplicatePlan:
    """Where one replicate of a configuration stands in the record."""

    first: Attempt  #: its protocol attempt (names the point)
    attempt: Attempt | None  #: what still has to run, or None
    status: str  #: a :class:`Status` value
    outcome: Outcome | None = None  #: how it ended, when it has
    history: list[FrozenTrial] = field(default_factory=list)  #: its attempt trials, by rerun

    @property
    def last(self) -> FrozenTrial | None:
        return self.history[-1] if self.history else None

    @property
    def reruns(self) -> int:
        """Reruns that ran (started): the rerun number of its latest attempt."""
        return int(self.last.params.get("rerun", 0)) if self.last is not None else 0


@dataclass
class ConfigurationPlan:
    """A configuration and where each of its replicates stands."""

    configuration: Configuration
    replicates: dict[Replicate, ReplicatePlan]
    sampler_number: int | None = None  #: its sampler-study trial (sampled configurations only)
    told: bool = False  #: a sampled configuration whose outcome the record and the sampler already have

    @property
    def owed(self) -> list[Attempt]:
        return [p.attempt for p in self.replicates.values() if p.attempt is not None]

    @property
    def outcomes(self) -> dict[Replicate, Outcome]:
        """The replicates that have ended, with their outcomes."""
        return {r: p.outcome for r, p in self.replicates.items() if p.outcome is not None}


def plan_replicate(first: Attempt, history: list[FrozenTrial], max_reruns: int) -> ReplicatePlan:
    """What a replicate still needs, from its attempt trials: none -> attempt 0; COMPLETE / FAIL / stopped by
    the scheduler -> ended; PRUNED by the rule -> the next rerun, or not converged once ``max_reruns`` are
    spent; RUNNING -> continued under the same Optuna trial from its last checkpoint."""
    history = sorted(history, key=lambda t: t.params.get("rerun", 0))
    if not history:
        return ReplicatePlan(first, first, Status.PENDING)
    last = history[-1]
    rerun = int(last.params.get("rerun", 0))
    outcome = stored_outcome(last, max_reruns)
    if outcome is not None:
        return ReplicatePlan(first, None, outcome.status, outcome, history)
    if last.state == TrialState.RUNNING:
        attempt = replace(first, rerun=rerun, optuna_number=last.number)
        return ReplicatePlan(first, attempt, Status.INTERRUPTED, None, history)
    return ReplicatePlan(first, replace(first, rerun=rerun + 1), Status.PENDING, None, history)


def plan_study(
    configurations: Iterable[Configuration],
    replicates: list[Replicate],
    trials: Iterable[FrozenTrial],
    max_reruns: int,
) -> list[ConfigurationPlan]:
    """The resume plan: for every configuration and replicate, what the record says and what is owed.

    Attempts are matched to replicates by their lineage ``point`` (:attr:`Attempt.point`), as grid and search
    studies have recorded it since d5d5804; attempts a killed driver enqueued but never started are ignored.
    """
    by_point: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        lineage = trial.user_attrs.get(ATTR.LINEAGE)
        if lineage and not is_unstarted(trial):
            by_point.setdefault(lineage["point"], []).append(trial)
    plans = []
    for configuration in configurations:
        steps = {}
        for replicate in replicates:
            first = Attempt(configuration, replicate)
            steps[replicate] = plan_replicate(first, by_point.get(first.point, []), max_reruns)
        plans.append(ConfigurationPlan(configuration, steps))
    return plans
