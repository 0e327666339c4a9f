"""Input normalisation of MATLAB's ``imageInputLayer``, as a layer that any network can sit behind.

The statistics are computed once from the training split (:meth:`InputNormalization.set_statistics`) and
kept as buffers, so they travel in every checkpoint with the weights. Images arrive in [0, 1]; like
MATLAB, which feeds uint8 images unscaled, they are first brought back to the 0-255 range (``scale``).

:class:`Normalized` puts the layer in front of any backbone (the MONAI networks of :mod:`lgeseg.models`);
:class:`lgeseg.unet.UNet` holds the same layer itself. Either way the model's ``normalization``
attribute is the one to fit.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``zerocenter``: subtract the training mean image (MATLAB's default); ``zscore``: subtract the
#: per-channel training mean and divide by the per-channel standard deviation; ``none``: scale only.
MODES: tuple[str, ...] = ("zerocenter", "zscore", "none")


class InputNormalization(nn.Module):
    """MATLAB ``imageInputLayer`` normalisation with the training statistics stored as buffers.

    Args:
        mode: one of :data:`MODES`.
        channels: image channels C.
        image_size: (H, W); the ``zerocenter`` mean image has this size.
        scale: factor applied first (255 turns [0, 1] images back into MATLAB's uint8 range).

    Raises:
        ValueError: for an unknown ``mode``.
    """

    def __init__(self, mode: str = "zerocenter", channels: int = 1, image_size: tuple[int, int] = (128, 128),
                 scale: float = 255.0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"normalization must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.scale = scale
        shape = (1, channels, *image_size) if mode == "zerocenter" else (1, channels, 1, 1)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def set_statistics(self, images: torch.Tensor) -> None:
        """Store the statistics of the training images.

        Args:
            images: (N, C, H, W) training images in [0, 1].
        """
        x = images.to(self.mean.device, torch.float32) * self.scale
        if self.mode == "zerocenter":
            self.mean.copy_(x.mean(0, keepdim=True))
        elif self.mode == "zscore":
            self.mean.copy_(x.mean((0, 2, 3), keepdim=True))
            self.std.copy_(x.std((0, 2, 3), keepdim=True).clamp_min(1e-6))  # a constant channel stays finite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (N, C, H, W) images in [0, 1]; returns the same shape in network units."""
        x = x * self.scale
        if self.mode == "none":
            return x
        if self.mode == "zerocenter":
            return x - self.mean
        return (x - self.mean) / self.std


class Normalized(nn.Module):
    """``backbone(normalization(x))``: a network behind an :class:`InputNormalization` layer.

    Args:
        backbone: any module mapping (N, C, H, W) inputs to (N, K, H, W) class scores.
        normalization: the input layer; fitted with ``model.normalization.set_statistics``.
    """

    def __init__(self, backbone: nn.Module, normalization: InputNormalization) -> None:
        super().__init__()
        self.normalization = normalization
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalization(x))


__all__ = ["MODES", "InputNormalization", "Normalized"]
