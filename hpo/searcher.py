"""A Ray Tune Searcher that hands out the grid's attempts and the reruns the retune rule asks for.

Each grid point (L2, seed) gets attempt 0; when the retune rule stops an attempt, the next one, carrying
the next entry of ``retune.adjustments``, is queued at once and starts as soon as a slot frees up,
not after the whole round. Which attempts are still owed is decided from the Optuna storage
(:func:`hpo.attempts.plan_attempts`), never from Ray's own restore, which loses searcher state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from ray.tune.search import Searcher

from .attempts import Attempt
from .rule import RetuneRule


class GridSearcher(Searcher):
    """Hands out queued attempts; queues a rerun when :class:`RetuneRule` stopped an attempt."""

    def __init__(
        self, attempts: Iterable[Attempt], rule: RetuneRule, max_reruns: int, make_config: Callable[[Attempt], dict]
    ) -> None:
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
