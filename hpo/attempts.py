"""Grid points, their attempts and their names, and where each point stands: no Ray, only Optuna's record.

A grid point is one (L2, seed); an :class:`Attempt` is one try at it (``rerun`` 0 is the protocol itself,
rerun k carries the k-th retune adjustment). Every name of a point or a trial (the Optuna ``trial_name``
attr, the trial folder, the lineage ``point``, ``replaced_by``) comes from :class:`Attempt`, and every
status of a point from :func:`plan_attempts`, so the searcher, the recorder, the grid summary and the
report say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from .config import grid_choices


@dataclass(frozen=True)
class Attempt:
    """One try at a grid point; ``rerun`` 0 is the protocol itself, k > 0 carries adjustment k.

    ``choices`` are the values of the other grid axes (``grid.architecture``, ``grid.loss``) as
    ((axis, value), ...); they join the point and the name only when gridded, so a plain L2 grid keeps
    its names.
    """

    l2: float
    seed: int
    rerun: int = 0
    optuna_number: int | None = None  #: an interrupted Optuna trial this attempt continues
    choices: tuple[tuple[str, str], ...] = ()  #: values of the other gridded axes

    @property
    def point(self) -> str:
        """The grid point's name, ``l2=<L2>,seed=<S>[,<axis>=<value>...]`` (the Optuna lineage ``point``)."""
        return f"l2={self.l2:g},seed={self.seed}" + "".join(f",{k}={v}" for k, v in self.choices)

    @property
    def name(self) -> str:
        """The attempt's name, ``l2=<L2>_seed=<S>[_<axis>=<value>...]_rerun=<k>`` (trial folder and Optuna
        ``trial_name``)."""
        return (
            f"l2={self.l2:g}_seed={self.seed}" + "".join(f"_{k}={v}" for k, v in self.choices) + f"_rerun={self.rerun}"
        )

    def next(self) -> Attempt:
        """The rerun that replaces this attempt when the retune rule stops it."""
        return replace(self, rerun=self.rerun + 1, optuna_number=None)

    def previous(self) -> Attempt | None:
        """The attempt this rerun replaces (None for the protocol's own attempt)."""
        return replace(self, rerun=self.rerun - 1, optuna_number=None) if self.rerun > 0 else None

    def to_config(self) -> dict[str, Any]:
        """The attempt as the plain dict a Ray trial config carries."""
        return {
            "l2": self.l2,
            "seed": self.seed,
            "rerun": self.rerun,
            "optuna_number": self.optuna_number,
            "choices": [list(c) for c in self.choices],
            "point": self.point,
        }

    @classmethod
    def from_config(cls, values: dict[str, Any]) -> Attempt:
        """The attempt of a Ray trial config's ``attempt`` dict (see :meth:`to_config`)."""
        return cls(
            values["l2"],
            values["seed"],
            values["rerun"],
            values.get("optuna_number"),
            tuple((k, v) for k, v in values.get("choices", ())),
        )


def grid_points(config: dict) -> list[Attempt]:
    """The first attempt of every grid point, in (seed, L2, other axes) order."""
    return [
        Attempt(l2, seed, choices=choices)
        for seed in config["seeds"]
        for l2 in config["grid"]["l2"]
        for choices in grid_choices(config)
    ]


def adjustment_for(retune: dict[str, Any], rerun: int) -> dict[str, Any] | None:
    """The hyperparameter changes rerun ``rerun`` carries (None for the protocol's own attempt)."""
    return dict(retune["adjustments"][rerun - 1]) if rerun > 0 else None


class PointStatus:
    """Where a grid point stands: the one vocabulary of the resume plan, the summary and the exit status."""

    PENDING = "pending"  #: no attempt recorded yet, or a rerun is owed
    INTERRUPTED = "interrupted"  #: the last attempt was RUNNING when its driver stopped
    COMPLETE = "complete"  #: the last attempt finished
    NOT_CONVERGED = "not converged"  #: every attempt was stopped by the retune rule, no reruns left
    FAILED = "failed"  #: the last attempt failed (recorded with its error, not retried)

    #: Statuses that ``--resume`` still has work for.
    UNFINISHED = (PENDING, INTERRUPTED)
    #: Statuses that make ``grid`` exit with status 1.
    UNSUCCESSFUL = (PENDING, INTERRUPTED, FAILED)


@dataclass
class PointOutcome:
    """Where one grid point stands in the storage."""

    attempt: Attempt | None  #: what still has to run, or None
    status: str  #: a :class:`PointStatus` value
    l2: float = 0.0
    seed: int = 0
    history: list[FrozenTrial] = field(default_factory=list)  #: its Optuna trials, by rerun
    choices: tuple[tuple[str, str], ...] = ()  #: values of the other gridded axes (see :class:`Attempt`)

    @property
    def last(self) -> FrozenTrial | None:
        """The point's latest attempt in the storage, if any."""
        return self.history[-1] if self.history else None

    @property
    def reruns(self) -> int:
        """Reruns that ran (started) for this point: the rerun number of its latest attempt."""
        return int(self.last.params.get("rerun", 0)) if self.last is not None else 0


#: The ``error`` of a trial a driver enqueued but was killed before starting (see :func:`close_unstarted`).
UNSTARTED = "left unstarted by an interrupted driver"


def close_unstarted(study) -> None:
    """A WAITING trial can only be left by a driver killed between enqueue and ask: close it as FAIL.

    It is marked with :data:`UNSTARTED`, so :func:`plan_attempts` (and the search's plan) treat it as never
    run: the attempt it stood for is owed again, not recorded as a failure of its grid point.
    """
    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        trial.set_user_attr("error", UNSTARTED)
        study.tell(trial, state=TrialState.FAIL)


def is_unstarted(trial: FrozenTrial) -> bool:
    """Whether ``trial`` is an enqueued attempt that never started (WAITING, or closed by :func:`close_unstarted`)."""
    return trial.state == TrialState.WAITING or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("error") == UNSTARTED
    )


def plan_attempts(config: dict, trials: Iterable[FrozenTrial]) -> dict[str, PointOutcome]:
    """Work out, from an Optuna study's trials, what each grid point still needs, in (seed, L2) order.

    No record: attempt 0. COMPLETE: done. PRUNED at rerun k: rerun k+1 unless ``max_reruns`` is spent
    (then not converged). RUNNING: the driver died under it, so it is continued under the same Optuna
    trial from its last checkpoint. FAIL: recorded with its error, not retried.
    """
    by_point: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        lineage = trial.user_attrs.get("lineage")
        if lineage and not is_unstarted(trial):
            by_point.setdefault(lineage["point"], []).append(trial)

    outcomes: dict[str, PointOutcome] = {}
    for first in grid_points(config):
        history = sorted(by_point.get(first.point, []), key=lambda t: t.params.get("rerun", 0))
        outcome = PointOutcome(first, PointStatus.PENDING, first.l2, first.seed, history, first.choices)
        outcomes[first.point] = outcome
        if not history:
            continue
        last = history[-1]
        rerun = int(last.params.get("rerun", 0))
        if last.state == TrialState.COMPLETE:
            outcome.attempt, outcome.status = None, PointStatus.COMPLETE
        elif last.state == TrialState.RUNNING:
            outcome.attempt = replace(first, rerun=rerun, optuna_number=last.number)
            outcome.status = PointStatus.INTERRUPTED
        elif last.state == TrialState.PRUNED and rerun < config["retune"]["max_reruns"]:
            outcome.attempt = replace(first, rerun=rerun + 1)
        elif last.state == TrialState.PRUNED:
            outcome.attempt, outcome.status = None, PointStatus.NOT_CONVERGED
        else:
            outcome.attempt, outcome.status = None, PointStatus.FAILED
    return outcomes
