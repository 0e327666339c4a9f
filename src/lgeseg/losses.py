"""Training losses (``train.loss``), each keeping ignored pixels out.

* ``cross-entropy`` (the default): MATLAB's pixel classification layer, the cross-entropy summed over the
  labelled pixels and divided by all pixels of the batch (N*H*W), as the study trained.
* ``dice``: :class:`monai.losses.DiceLoss` on the softmax, all classes, over the whole batch (``batch=True``).
* ``dice-ce``: :class:`monai.losses.DiceCELoss`'s sum of that Dice loss and the cross-entropy averaged
  over the labelled pixels.
* ``focal``: :class:`monai.losses.FocalLoss` on the softmax (gamma 2), averaged over labelled pixels and classes.

A pixel whose target is ``ignore_index`` (shifted in by the translation augmentation, or a data set's
ignore label) contributes nothing: for the Dice terms both its predicted probabilities and its one-hot
target are zeroed, which removes it from the true-positive, false-positive and false-negative sums; for
the cross-entropy and focal terms it is masked out of the sum and of the count. So each MONAI loss
equals that loss computed on the labelled pixels alone (tested against ``monai.losses``). MONAI is
imported when a MONAI loss is built.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LOSSES: tuple[str, ...] = ("cross-entropy", "dice-ce", "dice", "focal")

#: A loss maps (N, K, H, W) float logits and (N, H, W) long targets to a scalar.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def matlab_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """MATLAB's pixel classification loss: summed cross-entropy over labelled pixels / (N*H*W).

    Args:
        logits: (N, K, H, W) class scores.
        target: (N, H, W) class indices, ``ignore_index`` where a pixel is not labelled.
        ignore_index: the target value of ignored pixels.
    """
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum") / target.numel()


def _one_hot(target: torch.Tensor, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K, H, W) one-hot target with ignored pixels all zero, and the (N, 1, H, W) labelled mask."""
    labelled = (target != ignore_index).unsqueeze(1)
    classes = torch.where(labelled[:, 0], target, torch.zeros_like(target))
    one_hot = F.one_hot(classes, num_classes).permute(0, 3, 1, 2).to(torch.float32)
    return one_hot * labelled, labelled


def build_loss(name: str, ignore_index: int) -> LossFn:
    """The loss ``train.loss`` names.

    Args:
        name: one of :data:`LOSSES`.
        ignore_index: the target value of pixels to leave out (must not be a class index).

    Returns:
        ``loss(logits, target)`` with logits (N, K, H, W) float and target (N, H, W) long.

    Raises:
        ValueError: for an unknown name (configs are validated before this is reached).
    """
    if name == "cross-entropy":
        return lambda logits, target: matlab_cross_entropy(logits, target, ignore_index)
    if name not in LOSSES:
        raise ValueError(f"train.loss must be one of {', '.join(LOSSES)}, got {name!r}")
    from monai.losses import DiceLoss, FocalLoss

    dice = DiceLoss(include_background=True, batch=True)
    focal = FocalLoss(include_background=True, use_softmax=True, gamma=2.0, reduction="none")

    def dice_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot, labelled = _one_hot(target, logits.shape[1], ignore_index)
        return dice(torch.softmax(logits, 1) * labelled, one_hot)

    def ce_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=ignore_index)  # mean over labelled pixels

    def focal_term(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        one_hot, labelled = _one_hot(target, logits.shape[1], ignore_index)
        per_element = focal(logits, one_hot) * labelled
        return per_element.sum() / (labelled.sum() * logits.shape[1])

    if name == "dice":
        return dice_term
    if name == "dice-ce":
        return lambda logits, target: dice_term(logits, target) + ce_term(logits, target)
    return focal_term


__all__ = ["LOSSES", "LossFn", "build_loss", "matlab_cross_entropy"]
