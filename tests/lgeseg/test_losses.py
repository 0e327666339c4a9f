"""lgeseg.losses: MATLAB's cross-entropy by hand, the MONAI losses against monai.losses on the labelled
pixels alone, and ignored pixels out of every loss (value and gradient)."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceCELoss, DiceLoss, FocalLoss

from lgeseg.losses import LOSSES, build_loss

IGNORE = 255


def hand_made() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4x4 images, 3 classes; a 'translated-in' border of ignored pixels, every class labelled."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    target = torch.tensor(
        [
            [[0, 0, 1, 2], [0, 1, 1, 2], [2, 2, 1, 0], [1, 0, 2, 2]],
            [[1, 1, 1, 0], [2, 0, 0, 0], [2, 2, 1, 1], [0, 1, 2, 0]],
        ]
    )
    target[0, :, 0] = IGNORE  # image 0 shifted right by one pixel
    target[1, 3, :] = IGNORE  # image 1 shifted up by one pixel
    return logits, target


def labelled_only(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The labelled pixels of the whole batch as one (1, K, P, 1) 'image' and its (1, 1, P, 1) target."""
    keep = target != IGNORE
    return logits.permute(1, 0, 2, 3)[:, keep][None, :, :, None], target[keep][None, None, :, None]


def test_cross_entropy_is_matlabs_by_hand():
    """Zero logits: every labelled pixel costs log 3; 3 labelled of 4 pixels -> 3 log 3 / 4."""
    logits = torch.zeros(1, 3, 2, 2)
    target = torch.tensor([[[0, 1], [IGNORE, 2]]])
    assert build_loss("cross-entropy", IGNORE)(logits, target).item() == pytest.approx(3 * math.log(3) / 4)
    # and on the hand-made case: the summed per-pixel -log softmax of the labelled pixels over N*H*W
    logits, target = hand_made()
    log_p = torch.log_softmax(logits, 1)
    total = sum(
        -log_p[n, target[n, i, j], i, j]
        for n in range(2)
        for i in range(4)
        for j in range(4)
        if target[n, i, j] != IGNORE
    )
    assert build_loss("cross-entropy", IGNORE)(logits, target).item() == pytest.approx(total.item() / 32)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("dice", DiceLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)),
        ("dice-ce", DiceCELoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)),
        ("focal", FocalLoss(include_background=True, to_onehot_y=True, use_softmax=True, gamma=2.0)),
    ],
)
def test_monai_losses_equal_monai_on_the_labelled_pixels(name, reference):
    logits, target = hand_made()
    ours = build_loss(name, IGNORE)(logits, target)
    sub_logits, sub_target = labelled_only(logits, target)
    assert sub_logits.shape == (1, 3, 24, 1)  # 32 pixels, 4 + 4 ignored
    expected = reference(sub_logits, sub_target)
    assert ours.item() == pytest.approx(expected.item(), rel=1e-6)  # MONAI focal computes in float32
    # leaving the ignored pixels in (as class 0) would give another value: the test can tell
    naive = reference(logits, torch.where(target == IGNORE, 0, target)[:, None])
    assert abs(naive.item() - expected.item()) > 1e-3


@pytest.mark.parametrize("name", LOSSES)
def test_ignored_pixels_change_nothing(name):
    """Any logits at ignored pixels give the same loss and get zero gradient."""
    logits, target = hand_made()
    loss = build_loss(name, IGNORE)
    other = logits.clone()
    other[(target == IGNORE)[:, None].expand_as(other)] = 50.0
    assert loss(other, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-12)
    logits.requires_grad_(True)
    loss(logits, target).backward()
    ignored = (target == IGNORE)[:, None].expand_as(logits)
    assert torch.count_nonzero(logits.grad[ignored]) == 0
    assert torch.count_nonzero(logits.grad[~ignored]) > 0
