"""Signs that a run is not learning, as one-line warnings that name the likely fixes.

Two signs, both cheap to read off a finished run:

- the final network's validation MeanIoU is not clearly above the trivial baseline (the training split's
  majority class predicted everywhere, :func:`lgeseg.metrics.trivial_baseline`): it has not learned to
  segment; "clearly" is :func:`lgeseg.metrics.clearly_above_baseline` (a tenth of the headroom);
- the training loss stalls at the start: over the :data:`STALL_EPOCHS` epochs after the first it never
  falls below ``1 - STALL_FALL`` of epoch 2's value (epoch 1 is skipped: its mean holds the first, steep
  descent from the random start to "background everywhere", where slow runs then sit).

:func:`lgeseg.run.run` records them in ``run.json`` (``warnings``) and logs them; the CLI shows them.
"""

from __future__ import annotations

import math

from .metrics import clearly_above_baseline

#: Epochs after the first over which a stalled training loss is looked for.
STALL_EPOCHS = 5
#: Relative fall of the training loss below which those epochs count as stalled.
STALL_FALL = 0.02


def fixes(config: dict | None = None) -> str:
    """The likely fixes of a network that does not learn; z-score input normalisation only where the run
    (``config``, a run config) does not use it already."""
    rate = "train.learning_rate (e.g. 1.0e-3 for a thin U-Net)"
    if config is not None and config["model"]["normalization"] == "zscore":
        return f"more train.epochs or another {rate}"
    return f"more train.epochs, another {rate}, or model.normalization: zscore"


def below_baseline(val_miou: float | None, baseline_miou: float | None, config: dict | None = None) -> str | None:
    """A warning if the validation MeanIoU is not clearly above the baseline's, else None.

    Args:
        val_miou: the selected network's validation MeanIoU, in [0, 1] (None or NaN: undefined).
        baseline_miou: the majority-class baseline's validation MeanIoU, in [0, 1] (None or NaN: no check).
        config: the run config, for the fixes (:func:`fixes`).

    Returns:
        One line naming both values and the likely fixes, or None.
    """
    if baseline_miou is None or math.isnan(baseline_miou):
        return None
    if clearly_above_baseline(val_miou, baseline_miou):
        return None
    shown = "undefined" if val_miou is None or math.isnan(val_miou) else f"{val_miou:.3f}"
    return (
        f"not learning: validation MeanIoU {shown} is not clearly above the majority-class baseline "
        f"{baseline_miou:.3f}; try {fixes(config)}"
    )


def stalled_loss(train_losses: list[float], config: dict | None = None) -> str | None:
    """A warning if the training loss stopped falling at the start of the run, else None.

    Args:
        train_losses: the mean training loss of each epoch, in order (nats per pixel).
        config: the run config, for the fixes (:func:`fixes`).

    Returns:
        One line naming the epochs and losses and the likely fixes, or None (also for runs shorter than
        ``STALL_EPOCHS + 1`` epochs).
    """
    if len(train_losses) < STALL_EPOCHS + 1:
        return None
    start, window = train_losses[1], train_losses[2 : STALL_EPOCHS + 1]
    if min(window) < (1.0 - STALL_FALL) * start:
        return None
    return (
        f"training loss stalled at the start: {start:.4f} at epoch 2, lowest {min(window):.4f} over epochs "
        f"3-{STALL_EPOCHS + 1} (less than {STALL_FALL:.0%} lower); try {fixes(config)}"
    )


def learning_warnings(
    history: list[dict], val_miou: float | None, baseline_miou: float | None, config: dict | None = None
) -> list[str]:
    """Every warning a finished run deserves.

    Args:
        history: one dict per epoch with at least ``train_loss``.
        val_miou: the selected network's validation MeanIoU.
        baseline_miou: the majority-class baseline's validation MeanIoU.
        config: the run config, for the fixes (:func:`fixes`).

    Returns:
        The warnings, possibly none.
    """
    found = [
        stalled_loss([row["train_loss"] for row in history], config),
        below_baseline(val_miou, baseline_miou, config),
    ]
    return [line for line in found if line is not None]
