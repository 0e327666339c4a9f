"""A Ray Tune Searcher that hands out the grid's attempts and the reruns the retune rule asks for.

Each grid point (L2, seed) gets attempt 0; when the retune rule stops an attempt, the next one, carrying
the next entry of ``retune.adjustments``, is queued at once and starts as soon as a slot frees up,
not after the whole round. Which attempts are still owed is decided from the Optuna storage
(:func:`plan_attempts`), never from Ray's own restore, which loses searcher state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from optuna.trial import FrozenTrial, TrialState
from ray.tune.search import Searcher

from .retune import RetuneRule


@dataclass(frozen=True)
class Attempt:
    """One try at a grid point; ``rerun`` 0 is the protocol itself, k > 0 carries adjustment k."""

    l2: float
    seed: int
    rerun: int = 0
    optuna_number: int | None = None  # an interrupted Optuna trial this attempt continues

    @property
    def point(self) -> str:
        return f"l2={self.l2:g},seed={self.seed}"

    @property
    def name(self) -> str:
        return f"l2={self.l2:g}_seed={self.seed}_rerun={self.rerun}"

    def next(self) -> "Attempt":
        return Attempt(self.l2, self.seed, self.rerun + 1)


def adjustment_for(retune: dict[str, Any], rerun: int) -> dict[str, Any] | None:
    """The hyperparameter changes rerun ``rerun`` carries (None for the protocol's own attempt)."""
    return dict(retune["adjustments"][rerun - 1]) if rerun > 0 else None


@dataclass
class PointOutcome:
    """Where one grid point stands in the storage."""

    attempt: Attempt | None  # what still has to run, or None
    status: str  # pending | running | complete | not_converged | failed


def plan_attempts(config: dict, trials: Iterable[FrozenTrial]) -> dict[str, PointOutcome]:
    """Work out, from an Optuna study's trials, what each grid point still needs.

    No record: attempt 0. COMPLETE: done. PRUNED at rerun k: rerun k+1 unless ``max_reruns`` is spent
    (then not converged). RUNNING: the driver died under it, so it is continued under the same Optuna
    trial from its last checkpoint. FAIL: recorded with its error, not retried.
    """
    by_point: dict[str, list[FrozenTrial]] = {}
    for trial in trials:
        lineage = trial.user_attrs.get("lineage")
        if lineage and trial.state != TrialState.WAITING:
            by_point.setdefault(lineage["point"], []).append(trial)

    outcomes: dict[str, PointOutcome] = {}
    for seed in config["seeds"]:
        for l2 in config["grid"]["l2"]:
            first = Attempt(l2, seed)
            history = sorted(by_point.get(first.point, []), key=lambda t: t.params.get("rerun", 0))
            if not history:
                outcomes[first.point] = PointOutcome(first, "pending")
                continue
            last = history[-1]
            rerun = int(last.params.get("rerun", 0))
            if last.state == TrialState.COMPLETE:
                outcomes[first.point] = PointOutcome(None, "complete")
            elif last.state == TrialState.RUNNING:
                outcomes[first.point] = PointOutcome(Attempt(l2, seed, rerun, last.number), "running")
            elif last.state == TrialState.PRUNED and rerun < config["retune"]["max_reruns"]:
                outcomes[first.point] = PointOutcome(Attempt(l2, seed, rerun + 1), "pending")
            elif last.state == TrialState.PRUNED:
                outcomes[first.point] = PointOutcome(None, "not_converged")
            else:
                outcomes[first.point] = PointOutcome(None, "failed")
    return outcomes


class GridSearcher(Searcher):
    """Hands out queued attempts; queues a rerun when :class:`RetuneRule` stopped an attempt."""

    def __init__(self, attempts: Iterable[Attempt], rule: RetuneRule, max_reruns: int,
                 make_config: Callable[[Attempt], dict]) -> None:
        super().__init__(metric="val_accuracy", mode="max")
        self._queue: deque[Attempt] = deque(attempts)
        self._running: dict[str, Attempt] = {}
        self._rule = rule
        self._max_reruns = max_reruns
        self._make_config = make_config

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._queue:
            attempt = self._queue.popleft()
            self._running[trial_id] = attempt
            return self._make_config(attempt)
        return None if self._running else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        attempt = self._running.pop(trial_id, None)
        if attempt is None or error or not result:
            return
        if self._rule.fails(result) and attempt.rerun < self._max_reruns:
            self._queue.appendleft(attempt.next())  # reruns go before untouched grid points


__all__ = ["Attempt", "GridSearcher", "PointOutcome", "adjustment_for", "plan_attempts"]
