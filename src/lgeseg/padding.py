"""Image sizes the U-Net can take, and padding for those it cannot.

MATLAB's ``unetLayers`` (and :class:`lgeseg.unet.UNet`) halves the image ``depth`` times, so H and W must
be multiples of ``2**depth``. :func:`check_size` says so in one line before anything is written, and
``model.pad: true`` makes any size trainable: images are padded with 0 and masks with
:data:`~lgeseg.data.IGNORE_INDEX` (left out of the loss and the accuracy) at the bottom and right up to
the next multiple, and predictions are cropped back before they are scored or written.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .data import IGNORE_INDEX, Dataset
from .errors import ConfigError


def multiple(depth: int) -> int:
    """The factor H and W must be divisible by for an encoder of ``depth`` stages: ``2**depth``."""
    return 2**depth


def padded_size(height: int, width: int, depth: int) -> tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``2**depth``."""
    m = multiple(depth)
    return -(-height // m) * m, -(-width // m) * m


def check_size(height: int, width: int, depth: int, pad: bool) -> None:
    """Raise when the network cannot take ``height`` x ``width`` images and padding is off.

    Raises:
        ConfigError: one line naming the size, the depth and the ways out.
    """
    m = multiple(depth)
    if pad or (height % m == 0 and width % m == 0):
        return
    fits = [d for d in range(depth - 1, 0, -1) if height % 2**d == 0 and width % 2**d == 0]
    lower = f", lower model.depth to {fits[0]}" if fits else ""
    ph, pw = padded_size(height, width, depth)
    raise ConfigError(
        f"images are {height}x{width} (HxW) but model.depth {depth} needs H and W divisible by "
        f"2**{depth} = {m}; set model.pad: true (pads to {ph}x{pw}){lower} or resize the images"
    )


def pad_dataset(dataset: Dataset, depth: int) -> Dataset:
    """A copy of ``dataset`` padded at the bottom and right to multiples of ``2**depth`` (itself if it fits).

    Images are padded with 0, masks with :data:`IGNORE_INDEX`.
    """
    height, width = dataset.images.shape[1:]
    ph, pw = padded_size(height, width, depth)
    if (ph, pw) == (height, width):
        return dataset
    spread = ((0, 0), (0, ph - height), (0, pw - width))
    return dataclasses.replace(
        dataset,
        images=np.pad(dataset.images, spread, constant_values=0),
        masks=np.pad(dataset.masks, spread, constant_values=IGNORE_INDEX),
    )


def crop(pred: np.ndarray, height: int, width: int) -> np.ndarray:
    """Predictions ``(N, H', W')`` cropped back to the original ``height`` x ``width``."""
    return pred[:, :height, :width]


__all__ = ["check_size", "crop", "multiple", "pad_dataset", "padded_size"]
