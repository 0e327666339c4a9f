"""The study's one Ray Tune Searcher and the Stopper of its retune rule: the stopper ends an attempt the moment
:class:`hpo.rule.RetuneRule` fires, the searcher hands out attempts, queues the reruns the rule asks for, and
asks :class:`hpo.sampling.Sampling` for configurations and reports replicates' ends.

Attempts come from the sampler as slots free up (a grid's sampler allows every point at once), plus those a
resumed study still owes. When the retune rule stops an attempt the next one, carrying the next
``retune.adjustments`` entry, goes to the front of the queue at once. What is owed on ``--resume`` is decided
from the Optuna record (:func:`hpo.record.plan_study`), never from Ray's own restore, which loses searcher
state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ray.tune import Stopper
from ray.tune.search import Searcher

from .record import Attempt, TrialReport, reported_outcome
from .rule import RetuneRule
from .sampling import Sampling


class StudySearcher(Searcher):
    """Hands out queued attempts; queues a rerun when :class:`RetuneRule` stopped one.

    Args:
        attempts: the attempts owed when the run starts (the resume plan's).
        rule, max_reruns: the study's retune rule and its rerun budget.
        make_config: the Ray trial config of an attempt (:func:`hpo.study.trial_config`).
        sampling: the study's sampler (None: only ``attempts`` run).
        trial_number: the record number of an attempt by name (the recorder's), for the outcomes.
    """

    def __init__(
        self,
        attempts: Iterable[Attempt],
        rule: RetuneRule,
        max_reruns: int,
        make_config: Callable[[Attempt], dict],
        sampling: Sampling | None = None,
        trial_number: Callable[[str], int | None] = lambda name: None,
    ) -> None:
        super().__init__(metric="val_accuracy", mode="max")
        self._queue: deque[Attempt] = deque(attempts)
        self._running: dict[str, Attempt] = {}
        self._rule = rule
        self._max_reruns = max_reruns
        self._make_config = make_config
        self._sampling = sampling
        self._trial_number = trial_number

    def suggest(self, trial_id: str) -> dict | str | None:
        while not self._queue and self._sampling is not None and self._sampling.wants_more():
            self._queue.extend(self._sampling.sample())  # nothing when the record already has its replicates
        if self._queue:
            attempt = self._queue.popleft()
            self._running[trial_id] = attempt
            return self._make_config(attempt)
        # Configurations with nothing queued or running cannot progress here: --resume picks them up.
        return None if self._running else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        attempt = self._running.pop(trial_id, None)
        if attempt is None or (not error and not result):  # removed before it started: still owed
            return
        report = TrialReport.from_result(result)
        fired = not error and report is not None and self._rule.fails(report.to_result())
        if fired and attempt.rerun < self._max_reruns:
            self._queue.appendleft(attempt.next())  # reruns go before untouched attempts
            return
        outcome = reported_outcome(report, error, self._number(attempt), attempt.rerun, not_converged=fired)
        if outcome is not None and self._sampling is not None:
            self._sampling.settle(attempt, outcome)

    def _number(self, attempt: Attempt) -> int | None:
        return attempt.optuna_number if attempt.optuna_number is not None else self._trial_number(attempt.name)


class RetuneStopper(Stopper):
    """Ray Tune Stopper: ends each trial the moment :class:`RetuneRule` fires for it (the rule itself is Ray-free,
    :mod:`hpo.rule`, so the searcher, the recorder and the report's figures decide the same way)."""

    def __init__(self, rule: RetuneRule) -> None:
        self.rule = rule

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.rule.fails(result)

    def stop_all(self) -> bool:
        return False
