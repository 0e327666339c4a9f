"""A Ray Tune Searcher that asks Optuna's own samplers for configurations and tells them configuration values.

Two Optuna studies share the storage:

* the **record** (the study's name): every Tune trial as a grid records it (an *attempt*: params, live
  intermediate values, metrics, lineage), plus one trial per sampled *configuration* (user attr ``kind``
  ``configuration``): params = the searched dotted keys with their distributions, value = the mean over the
  configuration's seeds of the validation MeanIoU of each seed's final attempt, spread in user attrs;
* the **sampler study** (``<name>/sampler``): one trial per configuration and nothing else. The sampler asks
  and learns there, so it never sees a seed attempt or a stopped attempt: only configuration values.

A configuration is told when every seed has its outcome: COMPLETE with the mean when all seeds completed,
PRUNED when a seed was not converged after its reruns or was stopped by ASHA, FAIL when a seed failed. A
seed's outcome is that of its last attempt, so when the retune rule stops an attempt and a rerun completes,
the sampler is told the rerun's value.

On ``--resume`` :func:`reconcile` and :func:`plan_search` rebuild everything from the two studies: the
sampler's history is the sampler study itself, configurations still owed seeds get them, interrupted
attempts continue under their Optuna trial, and new configurations are sampled until ``n_trials`` exist.
"""

from __future__ import annotations

import math
import statistics
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from ray.tune.search import Searcher

from .attempts import is_unstarted
from .rule import RetuneRule

#: Suffix of the sampler study's name.
SAMPLER_SUFFIX = "/sampler"
#: ``kind`` user attr of configuration trials in the record.
CONFIGURATION = "configuration"
#: ``error`` of a sampler trial whose sampling a killed driver interrupted.
UNSAMPLED = "sampling interrupted by a killed driver; not a configuration"


def sampler_study_name(name: str) -> str:
    """The sampler study that goes with record study ``name``."""
    return f"{name}{SAMPLER_SUFFIX}"


def make_sampler(search: dict, dists: dict[str, BaseDistribution], index: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for configuration ``index`` of a search.

    TPE, random, GP and CMA-ES are stateless between asks (their history is the sampler study; CMA-ES keeps
    its state in the trials), so each ask gets a fresh sampler seeded from ``(seed, index)``: a resumed search
    neither replays the random draws of the configurations it already has nor depends on where it was killed.
    QMC and grid walk one fixed sequence, so they keep ``seed``.
    """
    with warnings.catch_warnings():  # QMC and TPE's constant liar are "experimental": nothing to act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _sampler(search, dists, index)


def _sampler(search: dict, dists: dict[str, BaseDistribution], index: int) -> optuna.samplers.BaseSampler:
    kind, seed = search["sampler"], search["seed"]
    derived = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    startup = {} if search["startup_trials"] is None else {"n_startup_trials": search["startup_trials"]}
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=derived, constant_liar=search["max_concurrent"] > 1, **startup)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=derived)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=derived, **startup)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=derived, **startup)
    if kind == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    if kind == "grid":
        return optuna.samplers.GridSampler(
            {k: list(d.choices) for k, d in dists.items() if isinstance(d, CategoricalDistribution)}, seed=seed
        )
    raise ValueError(f"unknown sampler {kind!r}")


@dataclass
class SeedAttempt:
    """One try at one seed of one configuration; ``rerun`` k > 0 carries retune adjustment k."""

    configuration: int  # the configuration's index, 0 .. n_trials-1
    record_number: int  # the configuration's trial number in the record
    params: dict[str, Any]
    seed: int
    rerun: int = 0
    optuna_number: int | None = None  # an interrupted attempt this one continues

    @property
    def point(self) -> str:
        """The seed's name, ``c<index>,seed=<S>`` (the Optuna lineage ``point``)."""
        return f"c{self.configuration:03d},seed={self.seed}"

    @property
    def name(self) -> str:
        """The attempt's name, ``c<index>_seed=<S>_rerun=<k>`` (trial folder and Optuna ``trial_name``)."""
        return f"c{self.configuration:03d}_seed={self.seed}_rerun={self.rerun}"

    def next(self) -> SeedAttempt:
        """The rerun that replaces this attempt when the retune rule stops it."""
        return SeedAttempt(self.configuration, self.record_number, self.params, self.seed, self.rerun + 1)

    def previous(self) -> SeedAttempt | None:
        """The attempt this rerun replaces (None for a seed's first attempt)."""
        if self.rerun == 0:
            return None
        return SeedAttempt(self.configuration, self.record_number, self.params, self.seed, self.rerun - 1)

    def to_config(self, l2: float) -> dict[str, Any]:
        """The attempt as the plain dict a Ray trial config carries (``l2``: the run's, for the progress table)."""
        return {
            "configuration": self.configuration,
            "record_number": self.record_number,
            "params": self.params,
            "seed": self.seed,
            "rerun": self.rerun,
            "optuna_number": self.optuna_number,
            "l2": l2,
        }

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> SeedAttempt:
        """The attempt of a Ray trial config's ``attempt`` dict (see :meth:`to_config`)."""
        return cls(
            values["configuration"],
            values["record_number"],
            dict(values["params"]),
            values["seed"],
            values["rerun"],
            values.get("optuna_number"),
        )


@dataclass(frozen=True)
class SeedOutcome:
    """How one seed of a configuration ended (its last attempt)."""

    status: str  # complete | not_converged | pruned | failed
    trial: int | None  # record number of the attempt that decided it
    rerun: int
    value: float | None = None  # validation MeanIoU (complete only)
    test_MeanIoU: float | None = None
    epoch: int | None = None  # where a not converged / pruned attempt stopped
    val_accuracy: float | None = None  # its best validation accuracy there


@dataclass
class OpenConfiguration:
    """A sampled configuration that has not been told yet."""

    index: int
    record_number: int
    sampler_number: int
    params: dict[str, Any]
    outcomes: dict[int, SeedOutcome] = field(default_factory=dict)


def configuration_outcome(outcomes: dict[int, SeedOutcome]) -> tuple[TrialState, float | None, dict[str, Any]]:
    """The state, value and user attrs of a configuration whose seeds all have an outcome.

    COMPLETE with the mean validation MeanIoU when every seed completed; else PRUNED (a seed not converged
    or stopped by the scheduler), or FAIL (a seed failed). The attrs hold every seed's result and the spread.
    """
    seeds = [
        {
            "seed": seed,
            "status": o.status,
            "value": o.value,
            "test_MeanIoU": o.test_MeanIoU,
            "trial": o.trial,
            "rerun": o.rerun,
        }
        for seed, o in sorted(outcomes.items())
    ]
    values = [o.value for o in outcomes.values() if o.status == "complete" and o.value is not None]
    tests = [o.test_MeanIoU for o in outcomes.values() if o.status == "complete" and o.test_MeanIoU is not None]
    attrs: dict[str, Any] = {
        "seeds": seeds,
        "n_seeds": len(outcomes),
        "reruns": sum(o.rerun for o in outcomes.values()),
    }
    statuses = {o.status for o in outcomes.values()}
    if "failed" in statuses:
        return TrialState.FAIL, None, {**attrs, "error": "a seed failed (see its attempt trial)"}
    if statuses != {"complete"}:
        return TrialState.PRUNED, None, attrs
    attrs.update(
        value_mean=statistics.fmean(values),
        value_std=statistics.stdev(values) if len(values) > 1 else None,
        value_min=min(values),
        value_max=max(values),
        test_MeanIoU_mean=statistics.fmean(tests) if len(tests) == len(values) else None,
    )
    return TrialState.COMPLETE, statistics.fmean(values), attrs


def _pruned_report(outcomes: dict[int, SeedOutcome]) -> tuple[int, float] | None:
    """For a PRUNED configuration, (epoch, validation accuracy) of the seed that stopped it, for the sampler
    (TPE ranks pruned trials by how far and how well they got)."""
    stopped = [o for o in outcomes.values() if o.status in ("not_converged", "pruned") and o.epoch is not None]
    if not stopped:
        return None
    worst = min(stopped, key=lambda o: (o.epoch, o.val_accuracy if o.val_accuracy is not None else -math.inf))
    return worst.epoch, worst.val_accuracy if worst.val_accuracy is not None else 0.0


def configuration_trials(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The record's configuration trials, by configuration index."""
    found = [t for t in trials if t.user_attrs.get("kind") == CONFIGURATION]
    return sorted(found, key=lambda t: t.user_attrs["configuration"])


def _stored_outcome(last: FrozenTrial, max_reruns: int) -> SeedOutcome | None:
    """The outcome a stored last attempt gives its seed, or None when it still owes work."""
    rerun = int(last.params.get("rerun", 0))
    attrs = last.user_attrs
    if last.state == TrialState.COMPLETE:
        test = ((attrs.get("test_metrics") or {}).get("dataset") or {}).get("MeanIoU")
        return SeedOutcome("complete", last.number, rerun, last.value, test)
    if last.state == TrialState.FAIL:
        return SeedOutcome("failed", last.number, rerun)
    if last.state == TrialState.PRUNED and "stopped_by_scheduler" in attrs:
        return SeedOutcome(
            "pruned", last.number, rerun, epoch=attrs.get("epochs_run"), val_accuracy=attrs.get("best_val_accuracy")
        )
    if last.state == TrialState.PRUNED and rerun >= max_reruns:
        return SeedOutcome(
            "not_converged",
            last.number,
            rerun,
            epoch=attrs.get("epochs_run"),
            val_accuracy=attrs.get("best_val_accuracy"),
        )
    return None


@dataclass
class SearchPlan:
    """What a search still owes, from its stored trials."""

    configurations: int  # configurations in the record
    open: list[OpenConfiguration]  # configurations not told yet, with the seed outcomes already decided
    attempts: list[SeedAttempt]  # attempts owed by the open configurations


def plan_search(config: dict, record_trials: list[FrozenTrial]) -> SearchPlan:
    """Work out, from the record's trials, what each configuration still needs.

    Per seed of an untold configuration: no attempt -> attempt 0; last attempt COMPLETE / FAIL / stopped by
    the scheduler -> decided; PRUNED by the rule -> the next rerun, or not converged once ``max_reruns`` are
    spent; RUNNING -> continued under the same Optuna trial. Attempts a killed driver enqueued but never
    started (:func:`hpo.attempts.is_unstarted`) are ignored.
    """
    from .search_config import seeds

    max_reruns = config["retune"]["max_reruns"]
    configurations = configuration_trials(record_trials)
    attempts_of: dict[tuple[int, int], list[FrozenTrial]] = {}
    for trial in record_trials:
        lineage = trial.user_attrs.get("lineage") or {}
        if "configuration" not in lineage or is_unstarted(trial):
            continue
        attempts_of.setdefault((lineage["configuration"], int(trial.params["seed"])), []).append(trial)

    plan = SearchPlan(len(configurations), [], [])
    for trial in configurations:
        if trial.state != TrialState.RUNNING:
            continue
        index = trial.user_attrs["configuration"]
        open_ = OpenConfiguration(index, trial.number, trial.user_attrs["sampler_trial"], dict(trial.params))
        for seed in seeds(config):
            history = sorted(attempts_of.get((trial.number, seed), []), key=lambda t: t.params.get("rerun", 0))
            first = SeedAttempt(index, trial.number, dict(trial.params), seed)
            if not history:
                plan.attempts.append(first)
                continue
            last = history[-1]
            outcome = _stored_outcome(last, max_reruns)
            rerun = int(last.params.get("rerun", 0))
            if outcome is not None:
                open_.outcomes[seed] = outcome
            elif last.state == TrialState.RUNNING:
                plan.attempts.append(SeedAttempt(index, trial.number, first.params, seed, rerun, last.number))
            else:  # PRUNED by the rule with reruns left
                plan.attempts.append(SeedAttempt(index, trial.number, first.params, seed, rerun + 1))
        plan.open.append(open_)
    return plan


def reconcile(
    config: dict, record: optuna.Study, sampler_study: optuna.Study, dists: dict[str, BaseDistribution]
) -> None:
    """Bring the two studies into agreement after a driver was killed between their writes.

    A sampler trial without a configuration record is adopted (recorded) when its sampling finished and fewer
    than ``n_trials`` configurations exist, else closed as FAIL; a sampler trial still RUNNING whose record
    was told gets the record's outcome.
    """
    configurations = configuration_trials(record.get_trials(deepcopy=False))
    linked = {t.user_attrs["sampler_trial"]: t for t in configurations}
    for trial in sampler_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine = linked.get(trial.number)
        if mine is None and set(trial.params) == set(dists) and len(configurations) < config["search"]["n_trials"]:
            configurations.append(add_configuration(record, len(configurations), trial, dists))
        elif mine is None:
            optuna.Trial(sampler_study, trial._trial_id).set_user_attr("error", UNSAMPLED)
            sampler_study.tell(trial.number, state=TrialState.FAIL)
        elif mine.state.is_finished():
            _tell_sampler(sampler_study, trial.number, mine.state, mine.value, None)


def add_configuration(
    record: optuna.Study, index: int, sampled: FrozenTrial | optuna.Trial, dists: dict[str, BaseDistribution]
) -> FrozenTrial:
    """Record configuration ``index`` (sampled as sampler trial ``sampled``) as a RUNNING record trial."""
    record.add_trial(
        create_trial(
            state=TrialState.RUNNING,
            params=dict(sampled.params),
            distributions=dict(dists),
            user_attrs={
                "kind": CONFIGURATION,
                "configuration": index,
                "sampler_trial": sampled.number,
                "trial_name": f"c{index:03d}",
            },
        )
    )
    created = record.get_trials(deepcopy=False)[-1]  # the driver is the only writer
    assert created.user_attrs.get("sampler_trial") == sampled.number
    return created


def _tell_sampler(
    sampler_study: optuna.Study, number: int, state: TrialState, value: float | None, report: tuple[int, float] | None
) -> None:
    trial = sampler_study.get_trials(deepcopy=False)[number]
    if trial.state.is_finished():
        return
    if report is not None and state == TrialState.PRUNED:
        optuna.Trial(sampler_study, trial._trial_id).report(report[1], report[0])
    sampler_study.tell(number, value if state == TrialState.COMPLETE else None, state=state)


class OptunaSearcher(Searcher):
    """Hands out seed attempts of configurations Optuna's sampler proposes; tells it configuration values.

    Order of work: reruns the retune rule asks for, then the remaining seeds of open configurations, then a
    new configuration (while fewer than ``max_concurrent`` are open and fewer than ``n_trials`` exist).
    """

    def __init__(
        self,
        config: dict,
        dists: dict[str, BaseDistribution],
        record: optuna.Study,
        sampler_study: optuna.Study,
        plan: SearchPlan,
        rule: RetuneRule,
        make_config: Callable[[SeedAttempt], dict],
        trial_number: Callable[[str], int | None],
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(metric="val_accuracy", mode="max")
        self._search = config["search"]
        self._seeds = list(range(self._search["seeds_per_trial"]))
        self._max_reruns = config["retune"]["max_reruns"]
        self._dists = dists
        self._record = record
        self._sampler_study = sampler_study
        self._rule = rule
        self._make_config = make_config
        self._trial_number = trial_number
        self._stream = stream or sys.stdout
        self._created = plan.configurations
        self._open = {c.index: c for c in plan.open}
        self._queue: deque[SeedAttempt] = deque(plan.attempts)
        self._running: dict[str, SeedAttempt] = {}
        for configuration in list(self._open.values()):  # decided before the driver was killed
            if set(configuration.outcomes) == set(self._seeds):
                self._tell(configuration)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its search algorithm with the experiment state; a stream does not pickle.
        return {**self.__dict__, "_stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _stream=sys.stdout)

    # -- Tune events ------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        if (
            not self._queue
            and self._created < self._search["n_trials"]
            and len(self._open) < self._search["max_concurrent"]
        ):
            self._sample()
        if self._queue:
            attempt = self._queue.popleft()
            self._running[trial_id] = attempt
            return self._make_config(attempt)
        # Open configurations with nothing queued or running cannot progress here: --resume picks them up.
        return None if self._running else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        attempt = self._running.pop(trial_id, None)
        if attempt is None:
            return
        number = attempt.optuna_number if attempt.optuna_number is not None else self._trial_number(attempt.name)
        if error:
            outcome = SeedOutcome("failed", number, attempt.rerun)
        elif not result:
            return  # removed before it started (the experiment ended): still owed
        elif self._rule.fails(result) and attempt.rerun < self._max_reruns:
            self._queue.appendleft(attempt.next())
            return
        elif self._rule.fails(result):
            outcome = SeedOutcome(
                "not_converged", number, attempt.rerun, epoch=result["epoch"], val_accuracy=result["best_val_accuracy"]
            )
        elif result.get("finished") and result.get("val_MeanIoU") is None:
            outcome = SeedOutcome("failed", number, attempt.rerun)
        elif result.get("finished"):
            outcome = SeedOutcome(
                "complete", number, attempt.rerun, result["val_MeanIoU"], result.get("test_metrics/dataset/MeanIoU")
            )  # Tune flattens the result
        elif result.get("done"):
            outcome = SeedOutcome(
                "pruned", number, attempt.rerun, epoch=result["epoch"], val_accuracy=result["best_val_accuracy"]
            )
            self._line(f"asha    {attempt.name} stopped by ASHA at epoch {result['epoch']}")
        else:
            return  # stopped with the experiment (driver interrupted): continued on --resume
        configuration = self._open[attempt.configuration]
        configuration.outcomes[attempt.seed] = outcome
        if set(configuration.outcomes) == set(self._seeds):
            self._tell(configuration)

    # -- sampler and record -----------------------------------------------------------------------
    def _sample(self) -> None:
        index = self._created
        self._sampler_study.sampler = make_sampler(self._search, self._dists, index)
        sampled = self._sampler_study.ask(self._dists)
        record = add_configuration(self._record, index, sampled, self._dists)
        self._created += 1
        self._open[index] = OpenConfiguration(index, record.number, sampled.number, dict(sampled.params))
        self._queue.extend(SeedAttempt(index, record.number, dict(sampled.params), seed) for seed in self._seeds)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in sampled.params.items())
        self._line(f"sample  c{index:03d} ({self._search['sampler']}, {index + 1}/{self._search['n_trials']}): {shown}")

    def _tell(self, configuration: OpenConfiguration) -> None:
        state, value, attrs = configuration_outcome(configuration.outcomes)
        record = self._record.get_trials(deepcopy=False)[configuration.record_number]
        handle = optuna.Trial(self._record, record._trial_id)
        for key, val in attrs.items():
            handle.set_user_attr(key, val)
        self._record.tell(configuration.record_number, value, state=state, skip_if_finished=True)
        _tell_sampler(
            self._sampler_study, configuration.sampler_number, state, value, _pruned_report(configuration.outcomes)
        )
        del self._open[configuration.index]
        if state == TrialState.COMPLETE:
            spread = f" ± {attrs['value_std']:.4f} (sd)" if attrs["value_std"] is not None else ""
            told = f"val MeanIoU {value:.4f}{spread} over {attrs['n_seeds']} seed(s)"
        else:
            told = {TrialState.PRUNED: "pruned (not converged, or stopped by ASHA)", TrialState.FAIL: "failed"}[state]
        self._line(f"told    c{configuration.index:03d}: {told}")

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = [
    "CONFIGURATION",
    "SAMPLER_SUFFIX",
    "OpenConfiguration",
    "OptunaSearcher",
    "SearchPlan",
    "SeedAttempt",
    "SeedOutcome",
    "add_configuration",
    "configuration_outcome",
    "configuration_trials",
    "make_sampler",
    "plan_search",
    "reconcile",
    "sampler_study_name",
]
