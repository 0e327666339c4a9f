"""Did a network learn? Its test MeanIoU against the trivial baseline of predicting one class everywhere.

Each finished trial records (``baseline`` user attribute, from :func:`lgeseg.metrics.trivial_baseline`)
the data-set metrics of predicting the training split's majority class at every pixel. On LGE slices the
background covers ~88% of the pixels, so that "segmentation" already scores GlobalAccuracy ~0.88 and
MeanIoU ~0.88 / 3 ~ 0.29. A network whose test MeanIoU is not clearly above that floor
(:func:`lgeseg.metrics.clearly_above_baseline`: by a tenth of the headroom) is marked "did not learn", and
L2 values are never ranked on such networks: differences between them measure how each failed to leave
the prior, not the effect of L2.

Studies recorded before the baseline existed get it from the test confusion matrix of ``test_metrics``
(the test split's own majority class predicted everywhere; the same class as the training split's
whenever one class dominates, as the background does on LGE slices).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lgeseg.metrics import clearly_above_baseline, confusion_summary
from lgeseg.tables import as_nan

from .load import TrialRecord


def baseline_from_confusion(confusion: list[list[float]]) -> dict[str, float]:
    """GlobalAccuracy and MeanIoU of predicting the most frequent true class everywhere.

    Args:
        confusion: data-set confusion matrix, ``(C, C)`` pixel counts, rows = truth, columns = prediction.

    Returns:
        ``{"majority_class_index": m, "GlobalAccuracy": n_m / N, "MeanIoU": x}`` where class ``m`` has IoU
        ``n_m / N``, every other occurring class IoU 0 and a class absent from the truth IoU NaN (NaN kept
        in the mean, as :func:`lgeseg.metrics.evaluate` does).
    """
    true_px = np.asarray(confusion, dtype=float).sum(axis=1)
    if true_px.sum() == 0:
        return {"majority_class_index": -1, "GlobalAccuracy": math.nan, "MeanIoU": math.nan}
    majority = int(np.argmax(true_px))
    predicted = np.zeros((true_px.size, true_px.size))
    predicted[:, majority] = true_px  # every pixel of every true class predicted as the majority class
    metrics = confusion_summary(predicted)
    return {
        "majority_class_index": majority,
        "GlobalAccuracy": float(metrics["GlobalAccuracy"]),
        "MeanIoU": float(metrics["MeanIoU"]),
    }


def baseline_of(trial: TrialRecord) -> dict[str, Any] | None:
    """The trial's trivial baseline on the test split: recorded, else from its test confusion matrix."""
    recorded = (trial.baseline or {}).get("test")
    if recorded:
        return recorded
    confusion = (trial.test_metrics or {}).get("confusion_matrix")
    return baseline_from_confusion(confusion) if confusion else None


def learning_margin(trial: TrialRecord) -> float:
    """Test MeanIoU minus the baseline's test MeanIoU; NaN when either is unknown."""
    baseline = baseline_of(trial)
    if baseline is None:
        return math.nan
    return as_nan((trial.test_metrics or {}).get("dataset", {}).get("MeanIoU")) - as_nan(baseline.get("MeanIoU"))


def learned(trial: TrialRecord) -> bool | None:
    """True when test MeanIoU is clearly above the baseline's (:func:`lgeseg.metrics.clearly_above_baseline`);
    None when unknown."""
    baseline = baseline_of(trial)
    if baseline is None:
        return None
    miou = as_nan((trial.test_metrics or {}).get("dataset", {}).get("MeanIoU"))
    return clearly_above_baseline(miou, as_nan(baseline.get("MeanIoU")))


#: The words of :func:`learned`'s answers.
LEARNING_LABELS: dict[bool | None, str] = {True: "learned", False: "did not learn", None: "unknown"}
