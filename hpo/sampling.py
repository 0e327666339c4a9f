"""The study's sampler: Optuna proposes configurations and learns only their values. No Ray.

Every study samples its configurations here, a grid too (Optuna's ``GridSampler`` over its categorical space,
:func:`hpo.study_config.sampler_settings`), as Optuna's own ``study/_optimize.py`` runs one loop for every
sampler. Two Optuna studies share the storage: the **record** (:mod:`hpo.record`: every attempt, plus one
trial per sampled configuration) and the **sampler study** (``<name>/sampler``), where the sampler asks and
learns, so it never sees an attempt, a replicate or a stopped rerun: only configuration values. A
configuration is told when every replicate has ended (:func:`hpo.record.configuration_outcome`).
:class:`Sampling` holds the two jobs the searcher hands it, :meth:`~Sampling.sample` and
:meth:`~Sampling.settle`; :func:`reconcile` repairs the pair after a driver was killed between their writes.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, TextIO

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from lgeseg.tables import fmt, setting

from .record import (
    ATTR,
    CONFIGURATION,
    Attempt,
    ConfigurationPlan,
    Outcome,
    Status,
    configuration_of,
    configuration_outcome,
    configuration_trials,
    plan_study,
    pruned_report,
)
from .study_config import grid_configurations, replicates, sampler_settings, space

#: ``error`` of a sampler trial whose sampling a killed driver interrupted.
UNSAMPLED = "sampling interrupted by a killed driver; not a configuration"


def make_sampler(search: dict, dists: dict[str, BaseDistribution], index: int) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for configuration ``index`` of a search.

    TPE, random, GP and CMA-ES are stateless between asks (their history is the sampler study; CMA-ES keeps
    its state in the trials), so each ask gets a fresh sampler seeded from ``(seed, index)``: a resumed search
    neither replays the random draws of the configurations it already has nor depends on where it was killed.
    QMC and grid walk one fixed sequence, so they keep ``seed`` (the grid sampler runs its points in an order
    shuffled by it; the closing table and report show them in config order).
    """
    kind, seed = search["sampler"], search["seed"]
    derived = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    startup = {} if search["startup_trials"] is None else {"n_startup_trials": search["startup_trials"]}
    with warnings.catch_warnings():  # QMC and TPE's constant liar are "experimental": nothing to act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
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
            choices = {k: list(d.choices) for k, d in dists.items() if isinstance(d, CategoricalDistribution)}
            return optuna.samplers.GridSampler(choices, seed=seed)
    raise ValueError(f"unknown sampler {kind!r}")


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
                ATTR.KIND: CONFIGURATION,
                ATTR.CONFIGURATION: index,
                ATTR.SAMPLER_TRIAL: sampled.number,
                ATTR.TRIAL_NAME: f"c{index:03d}",
            },
        )
    )
    created = record.get_trials(deepcopy=False)[-1]  # the driver is the only writer
    assert created.user_attrs.get(ATTR.SAMPLER_TRIAL) == sampled.number
    return created


def tell_configuration(
    study: optuna.Study,
    number: int,
    state: TrialState,
    value: float | None,
    report: tuple[int, float] | None = None,
    attrs: dict[str, Any] | None = None,
) -> None:
    """Tell trial ``number`` of the sampler study (or a search's configuration trial in the record) its
    configuration's outcome (once; a PRUNED one with how far it got) and store ``attrs`` (the replicates'
    outcomes) on it."""
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state.is_finished():
        return
    handle = optuna.Trial(study, trial._trial_id)
    for key, val in (attrs or {}).items():
        handle.set_user_attr(key, val)
    if report is not None and state == TrialState.PRUNED:
        handle.report(report[1], report[0])
    # Each ask gets its own sampler (make_sampler), so none learns in after_trial; a grid sampler's there would
    # call study.stop(), which Optuna allows only inside optimize(). (The record never samples: its asks are
    # of enqueued params.)
    study.sampler = optuna.samplers.RandomSampler()
    study.tell(number, value if state == TrialState.COMPLETE else None, state=state)


def plan(
    config: dict, record: optuna.Study, sampler_study: optuna.Study, unsampled: bool = False
) -> list[ConfigurationPlan]:
    """The resume plan (:func:`hpo.record.plan_study`) of every configuration sampled so far, each with its
    sampler trial and whether it was told: a search's from its record configuration trials by index, a grid's
    from its sampler trials (its record keeps only attempts) in config order (L2 slowest). With ``unsampled``
    (the closing table) a grid's points not sampled yet are planned too (``sampler_number`` None), from the
    record alone, so the table shows the whole space."""
    if "grid" in config:
        trials = [t for t in sampler_study.get_trials(deepcopy=False) if set(t.params) == set(space(config))]
        sampled = [(configuration_of(t, True), t.number, t.state.is_finished()) for t in trials]
    else:
        trials = configuration_trials(record.get_trials(deepcopy=False))
        sampled = [(configuration_of(t), t.user_attrs[ATTR.SAMPLER_TRIAL], t.state.is_finished()) for t in trials]
    attempts = record.get_trials(deepcopy=False)
    plans = plan_study([c for c, _, _ in sampled], replicates(config), attempts, config["retune"]["max_reruns"])
    for p, (_, number, told) in zip(plans, sampled):
        p.sampler_number, p.told = number, told
    if "grid" in config:
        order = [c.params for c in grid_configurations(config)]
        if unsampled:
            sampled = {p.configuration.params for p in plans}
            missing = [c for c in grid_configurations(config) if c.params not in sampled]
            plans += plan_study(missing, replicates(config), attempts, config["retune"]["max_reruns"])
        plans.sort(key=lambda p: order.index(p.configuration.params))
    return plans


def reconcile(config: dict, record: optuna.Study, sampler_study: optuna.Study) -> None:
    """Bring the two studies of ``config``'s study into agreement after a driver was killed between their writes.

    A sampler trial whose sampling did not finish is closed as FAIL (a grid's point left unvisited). In a
    search, a sampled one without a configuration record is adopted (recorded) when fewer than ``n_trials``
    configurations exist, else closed as FAIL, and one still RUNNING whose record was told gets the record's
    outcome. (A grid's sampler trial is its configuration: :class:`Sampling` tells it when its replicates
    have ended.)
    """
    n_trials, dists, grid = sampler_settings(config)["n_trials"], space(config), "grid" in config
    configurations = configuration_trials(record.get_trials(deepcopy=False))
    linked = {t.user_attrs[ATTR.SAMPLER_TRIAL]: t for t in configurations}
    for trial in sampler_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine, sampled = linked.get(trial.number), set(trial.params) == set(dists)
        if grid and sampled:
            continue
        if mine is None and sampled and len(configurations) < n_trials:
            configurations.append(add_configuration(record, len(configurations), trial, dists))
        elif mine is None:
            optuna.Trial(sampler_study, trial._trial_id).set_user_attr(ATTR.ERROR, UNSAMPLED)
            if "grid_id" in trial.system_attrs:  # GridSampler counts a finished trial's point as visited:
                # unmark it (no search space of its own), or that point never runs and another runs twice
                sampler_study._storage.set_trial_system_attr(trial._trial_id, "search_space", {})
            sampler_study.tell(trial.number, state=TrialState.FAIL)
        elif mine.state.is_finished():
            tell_configuration(sampler_study, trial.number, mine.state, mine.value)


class Sampling:
    """The sampler's side of a study: new configurations on demand, configuration values when decided.

    ``plans`` are the configurations sampled so far (:func:`plan`); of the open (untold) ones, those whose
    replicates all ended before the driver was killed are told at once. A newly sampled configuration is
    planned from the record too, so a grid recorded before the one flow (attempts, no configuration trials)
    continues where it stopped: a point already trained is told, never run again.
    """

    def __init__(
        self,
        config: dict,
        record: optuna.Study,
        sampler_study: optuna.Study,
        plans: list[ConfigurationPlan],
        stream: TextIO | None = None,
    ) -> None:
        self._search = sampler_settings(config)
        self._grid = "grid" in config
        self._max_reruns = config["retune"]["max_reruns"]
        self._dists = space(config)
        self._record = record
        self._sampler_study = sampler_study
        self._replicates = replicates(config)
        self._created = len(plans)
        self._open = {p.configuration.index: p for p in plans if not p.told}
        self._stream = stream or sys.stdout
        for open_ in list(self._open.values()):
            if len(open_.outcomes) == len(self._replicates):
                self._tell(open_)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its search algorithm (and this with it) with the experiment state; a stream does not.
        return {**self.__dict__, "_stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _stream=sys.stdout)

    def wants_more(self) -> bool:
        """Whether a new configuration may be sampled now (fewer than ``n_trials`` exist, fewer than
        ``max_concurrent`` are open)."""
        return self._created < self._search["n_trials"] and len(self._open) < self._search["max_concurrent"]

    def sample(self) -> list[Attempt]:
        """Ask the sampler for the next configuration, record it, and return what its replicates owe (all
        their first attempts, unless the record already holds some of them)."""
        index = self._created
        self._sampler_study.sampler = make_sampler(self._search, self._dists, index)
        sampled = self._sampler_study.ask(self._dists)
        if self._grid:  # a grid's configuration trial is its sampler trial
            configuration = configuration_of(self._sampler_study.get_trials(deepcopy=False)[sampled.number], True)
        else:
            configuration = configuration_of(add_configuration(self._record, index, sampled, self._dists))
        self._created += 1
        (new,) = plan_study(
            [configuration], self._replicates, self._record.get_trials(deepcopy=False), self._max_reruns
        )
        new.sampler_number = sampled.number
        self._open[configuration.index] = new
        shown = ", ".join(f"{k}={setting(v, 4)}" for k, v in sampled.params.items())
        counted = f"{index + 1}/{self._search['n_trials']}"
        self._line(f"sample  {configuration.label} ({self._search['sampler']}, {counted}): {shown}")
        if len(new.outcomes) == len(self._replicates):
            self._tell(new)
        return new.owed

    def settle(self, attempt: Attempt, outcome: Outcome) -> None:
        """Record how ``attempt``'s replicate ended; tell the configuration once every replicate has."""
        if outcome.status == Status.STOPPED:
            self._line(f"asha    {attempt.name} stopped by ASHA at epoch {outcome.epoch}")
        plan = self._open[attempt.configuration.index]
        plan.replicates[attempt.replicate].outcome = outcome
        if len(plan.outcomes) == len(self._replicates):
            self._tell(plan)

    def _tell(self, plan: ConfigurationPlan) -> None:
        number = plan.configuration.record_number
        state, value, attrs = configuration_outcome(plan.outcomes)
        if number is not None:  # a search's configuration trial in the record
            tell_configuration(self._record, number, state, value, attrs=attrs)
        tell_configuration(self._sampler_study, plan.sampler_number, state, value, pruned_report(plan.outcomes), attrs)
        del self._open[plan.configuration.index]
        if state == TrialState.COMPLETE:
            spread = f" ± {fmt(attrs['value_std'])} (sd)" if attrs["value_std"] is not None else ""
            told = f"val MeanIoU {fmt(value)}{spread} over {attrs.get('n_replicates', attrs['n_seeds'])} replicate(s)"
        else:
            told = {TrialState.PRUNED: "pruned (not converged, or stopped by ASHA)", TrialState.FAIL: "failed"}[state]
        self._line(f"told    {plan.configuration.label}: {told}")

    def _line(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()
