"""The Ray Tune Stopper that enforces the study's retune rule (:class:`hpo.rule.RetuneRule`).

The rule itself lives in :mod:`hpo.rule`, free of Ray, so the searcher that queues reruns, the recorder
and the report's figures decide the same way without sharing state.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Stopper

from .rule import RetuneRule


class RetuneStopper(Stopper):
    """Ray Tune Stopper: ends each trial the moment :class:`RetuneRule` fires for it."""

    def __init__(self, rule: RetuneRule) -> None:
        self.rule = rule

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.rule.fails(result)

    def stop_all(self) -> bool:
        return False
