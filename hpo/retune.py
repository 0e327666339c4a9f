"""The study's one tuning rule, and the Ray Tune Stopper that enforces it.

Rukundo adjusted other hyperparameters only when 10% of the epochs passed before validation accuracy
reached 90%. :class:`RetuneRule` states that rule as a pure function of a trial's reported result, so
the stopper that ends such trials and the searcher that queues their reruns decide the same way without
sharing state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ray.tune import Stopper


@dataclass(frozen=True)
class RetuneRule:
    """Stop a trial whose validation accuracy has not reached ``target_accuracy`` by the check epoch.

    The check epoch is ``ceil(check_fraction * epochs)``. A trial past the check epoch whose best
    validation accuracy is still below target also fails the rule: that is a trial resumed from a
    checkpoint taken after the check, whose verdict was lost with the driver.
    """

    check_fraction: float
    target_accuracy: float

    def check_epoch(self, epochs: int) -> int:
        return max(1, math.ceil(self.check_fraction * epochs - 1e-9))

    def fails(self, result: dict[str, Any]) -> bool:
        """True when ``result`` (an epoch report of a trial) shows the rule has fired."""
        if "epoch" not in result or "epochs" not in result or result.get("finished"):
            return False
        return (result["epoch"] >= self.check_epoch(result["epochs"])
                and result["best_val_accuracy"] < self.target_accuracy)

    def reason(self, result: dict[str, Any]) -> str:
        return (f"validation accuracy {result['best_val_accuracy']:.4f} < {self.target_accuracy:g} "
                f"after {result['epoch']} of {result['epochs']} epochs "
                f"(check epoch {self.check_epoch(result['epochs'])})")

    @classmethod
    def from_config(cls, retune: dict[str, Any]) -> "RetuneRule":
        return cls(retune["check_fraction"], retune["target_accuracy"])


class RetuneStopper(Stopper):
    """Ray Tune Stopper: ends each trial the moment :class:`RetuneRule` fires for it."""

    def __init__(self, rule: RetuneRule) -> None:
        self.rule = rule

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.rule.fails(result)

    def stop_all(self) -> bool:
        return False
