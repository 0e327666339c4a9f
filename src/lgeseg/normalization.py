"""MATLAB R2020b's ``imageInputLayer`` normalisation, as a module the network applies first.

``imageInputLayer`` normalises every image it forwards with statistics of the training data that
``trainNetwork`` computes once, before the first epoch, and stores in the layer:

- ``zerocenter``: ``x - Mean`` (the layer's default, and the study's);
- ``zscore``: ``(x - Mean) / StandardDeviation``;
- ``rescale-symmetric``: ``2 (x - Min) / (Max - Min) - 1``, i.e. [Min, Max] -> [-1, 1];
- ``rescale-zero-one``: ``(x - Min) / (Max - Min)``, i.e. [Min, Max] -> [0, 1];
- ``none``: ``x``.

Every architecture applies it first: :class:`lgeseg.unet.UNet` holds the layer itself (``normalize``),
the MONAI networks of :mod:`lgeseg.models` sit behind it in :class:`Normalized`.

``NormalizationDimension`` decides over what the statistics are taken. Its default, ``'auto'``, with
statistics computed at training time (the study's case), is ``'channel'``: one value per channel over all
training images and pixels (a scalar for grey-level images). ``'element'`` keeps one value per pixel and
channel (a mean *image*: what releases before R2019b did), ``'all'`` one scalar over everything.

The statistics are buffers of the module, so they are saved and loaded with the network's ``state_dict``
(``best.pt``, ``last.pt``). Images arrive in [0, 1] here and are first scaled by ``input_scale`` (255) back
to the 0-255 range of the uint8 images MATLAB feeds the network, so the statistics are in those units.
The standard deviation is the population one (normalised by the count, not count - 1); a zero standard
deviation or ``Max == Min`` divides by 1 instead, so constant pixels stay finite.
"""

from __future__ import annotations

import torch
from torch import nn

#: imageInputLayer's Normalization values.
NORMALIZATIONS: tuple[str, ...] = ("zerocenter", "zscore", "rescale-symmetric", "rescale-zero-one", "none")
#: Its NormalizationDimension values; MATLAB's 'auto' with statistics computed at training time is 'channel'.
NORMALIZATION_DIMENSIONS: tuple[str, ...] = ("channel", "element", "all")


class InputNormalization(nn.Module):
    """``imageInputLayer``'s normalisation of (N, C, H, W) images, with statistics from :meth:`fit`.

    Args:
        mode: one of :data:`NORMALIZATIONS`.
        dimension: one of :data:`NORMALIZATION_DIMENSIONS`.
        in_channels: C.
        image_size: (H, W), needed for ``dimension="element"``.
        input_scale: factor applied to the input before normalising (255: [0, 1] images -> MATLAB's uint8 range).

    Raises:
        ValueError: an unknown ``mode`` or ``dimension``.
    """

    def __init__(
        self,
        mode: str = "zerocenter",
        dimension: str = "channel",
        in_channels: int = 1,
        image_size: tuple[int, int] = (128, 128),
        input_scale: float = 255.0,
    ) -> None:
        super().__init__()
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalization {mode!r} is not one of {', '.join(NORMALIZATIONS)}")
        if dimension not in NORMALIZATION_DIMENSIONS:
            raise ValueError(
                f"normalization dimension {dimension!r} is not one of {', '.join(NORMALIZATION_DIMENSIONS)}"
            )
        self.mode, self.dimension, self.input_scale = mode, dimension, input_scale
        shape = {"channel": (1, in_channels, 1, 1), "element": (1, in_channels, *image_size), "all": (1, 1, 1, 1)}[
            dimension
        ]
        # Every statistic the mode reads, and nothing else, so a checkpoint holds exactly what is used.
        names = {
            "zerocenter": ("mean",),
            "zscore": ("mean", "std"),
            "rescale-symmetric": ("min", "max"),
            "rescale-zero-one": ("min", "max"),
            "none": (),
        }[mode]
        for name in names:
            self.register_buffer(name, torch.zeros(shape) if name != "std" else torch.ones(shape))

    def _reduce_dims(self) -> tuple[int, ...]:
        return {"channel": (0, 2, 3), "element": (0,), "all": (0, 1, 2, 3)}[self.dimension]

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Compute and store the statistics of the training images.

        Args:
            images: (N, C, H, W) training images in [0, 1], on any device (statistics in float64).
        """
        x = images.to(torch.float64) * self.input_scale
        dims = self._reduce_dims()
        if self.mode in ("zerocenter", "zscore"):
            self.mean.copy_(x.mean(dims, keepdim=True))
        if self.mode == "zscore":
            self.std.copy_(x.std(dims, correction=0, keepdim=True))
        if self.mode.startswith("rescale"):
            self.min.copy_(x.amin(dims, keepdim=True))
            self.max.copy_(x.amax(dims, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images.

        Args:
            x: (N, C, H, W) images in [0, 1].

        Returns:
            (N, C, H, W) normalised images, the dtype of ``x``.
        """
        x = x * self.input_scale
        if self.mode == "zerocenter":
            return x - self.mean
        if self.mode == "zscore":
            return (x - self.mean) / torch.where(self.std > 0, self.std, torch.ones_like(self.std))
        if self.mode.startswith("rescale"):
            span = self.max - self.min
            unit = (x - self.min) / torch.where(span > 0, span, torch.ones_like(span))
            return unit if self.mode == "rescale-zero-one" else 2 * unit - 1
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, dimension={self.dimension!r}, input_scale={self.input_scale:g}"


class Normalized(nn.Module):
    """``backbone(normalize(x))``: any network behind an :class:`InputNormalization` layer.

    Args:
        backbone: a module mapping (N, C, H, W) inputs to (N, K, H, W) class scores.
        normalize: the input layer, fitted with ``model.normalize.fit(training_images)``.
    """

    def __init__(self, backbone: nn.Module, normalize: InputNormalization) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, K, H, W) class scores."""
        return self.backbone(self.normalize(x))


__all__ = ["NORMALIZATIONS", "NORMALIZATION_DIMENSIONS", "InputNormalization", "Normalized"]
