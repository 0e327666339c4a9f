"""The study's one tuning rule, as plain data: no Ray, so the figures use it as the stopper does.

Rukundo adjusted other hyperparameters only when 10% of the epochs passed before validation accuracy
reached 90%. :class:`RetuneRule` states that rule as a pure function of a trial's reported result, so
the stopper that ends such trials and the searcher that queues their reruns (:mod:`hpo.searcher`), the
recorder that writes why, and the report's training curves all decide and draw the same check epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetuneRule:
    """Stop a trial whose validation accuracy has not reached ``target_accuracy`` by the check epoch.

    The check epoch is ``ceil(check_fraction * epochs)`` (at least 1). A trial past the check epoch whose
    best validation accuracy is still below target also fails the rule: that is a trial resumed from a
    checkpoint taken after the check, whose verdict was lost with the driver. ``check_fraction`` 0 switches
    the rule off: it never fires and has no check epoch. ``target_accuracy`` 0 never fires either (no accuracy
    is below 0), but keeps its check epoch, where a run with ``train.validation_frequency`` still validates.
    """

    check_fraction: float
    target_accuracy: float

    @property
    def enabled(self) -> bool:
        """False when ``check_fraction`` is 0: the rule is switched off."""
        return self.check_fraction > 0

    def check_epoch(self, epochs: int) -> int:
        """The epoch after which the rule checks, for a run of ``epochs`` epochs.

        The 1e-9 guard keeps a product that floating point lifts just above an integer on that integer
        (``0.07 * 100`` is ``7.000000000000001``: the check is at epoch 7, not 8).
        """
        return max(1, math.ceil(self.check_fraction * epochs - 1e-9))

    def fails(self, result: dict[str, Any]) -> bool:
        """True when ``result`` (an epoch report of a trial) shows the rule has fired."""
        if not self.enabled or "epoch" not in result or "epochs" not in result or result.get("finished"):
            return False
        return (
            result["epoch"] >= self.check_epoch(result["epochs"]) and result["best_val_accuracy"] < self.target_accuracy
        )

    def reason(self, result: dict[str, Any]) -> str:
        """Why the rule fired for ``result``, in one line."""
        return (
            f"validation accuracy {result['best_val_accuracy']:.4f} < {self.target_accuracy:g} "
            f"after {result['epoch']} of {result['epochs']} epochs "
            f"(check epoch {self.check_epoch(result['epochs'])})"
        )

    @classmethod
    def from_config(cls, retune: dict[str, Any]) -> RetuneRule:
        """The rule of a study config's ``retune`` section."""
        return cls(float(retune["check_fraction"]), float(retune["target_accuracy"]))
