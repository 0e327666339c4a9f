"""The U-Net of MATLAB R2020b's ``unetLayers`` with its defaults.

Encoder stage: conv3x3-ReLU-conv3x3-ReLU (same padding), then 2x2 max pool, stride 2; dropout 0.5 closes
the last encoder stage and the bridge. Decoder stage: 2x2 stride-2 transposed conv + ReLU, concatenate
the skip, conv-ReLU-conv-ReLU. A 1x1 conv gives the class scores. No batch norm; He-normal weights and
zero biases; the transposed convolutions' biases learn at twice the learning rate
(``BiasLearnRateFactor`` 2, see :meth:`UNet.learn_rate_factors`). The input layer is ``imageInputLayer``'s
normalisation (:class:`~lgeseg.normalization.InputNormalization`; 'zerocenter' by default), whose training
statistics are stored in the model (``normalize.*`` buffers).
"""

from __future__ import annotations

import torch
from torch import nn

from .normalization import InputNormalization


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.ReLU(inplace=True),
    )


def _rename_mean_image(state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints written before :mod:`lgeseg.normalization` kept the zerocenter mean image as ``mean_image``."""
    if prefix + "mean_image" in state_dict:
        state_dict[prefix + "normalize.mean"] = state_dict.pop(prefix + "mean_image")


class UNet(nn.Module):
    """U-Net for ``in_channels`` x H x W images with H and W divisible by ``2**depth``.

    With the defaults (width 64, depth 4, 1 input channel, 3 classes) it has 31,030,723 parameters,
    exactly as MATLAB's ``unetLayers([128 128 1], 3)``.

    Args:
        in_channels: image channels C.
        num_classes: classes of the output scores.
        width: filters of the first encoder stage (doubling per stage; 64 = MATLAB).
        depth: encoder stages (4 = MATLAB).
        image_size: (H, W) of the images, needed by element-wise normalisation statistics.
        input_scale: factor taking the [0, 1] input to MATLAB's uint8 range (255) before normalising.
        normalization: ``imageInputLayer``'s ``Normalization`` (see :mod:`lgeseg.normalization`).
        normalization_dimension: its ``NormalizationDimension``: ``channel``, ``element`` or ``all``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 3,
        width: int = 64,
        depth: int = 4,
        image_size: tuple[int, int] = (128, 128),
        input_scale: float = 255.0,
        normalization: str = "zerocenter",
        normalization_dimension: str = "channel",
    ) -> None:
        super().__init__()
        self.depth = depth
        self.normalize = InputNormalization(
            normalization, normalization_dimension, in_channels, image_size, input_scale
        )
        self._register_load_state_dict_pre_hook(_rename_mean_image)
        widths = [width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            _double_conv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-2], widths[:-1])
        )
        self.pool = nn.MaxPool2d(2, 2)
        self.bridge = _double_conv(widths[-2], widths[-1])
        self.dropout = nn.Dropout(0.5)
        self.upconvs = nn.ModuleList(nn.ConvTranspose2d(c, c // 2, 2, stride=2) for c in widths[:0:-1])
        self.decoders = nn.ModuleList(_double_conv(c, c // 2) for c in widths[:0:-1])
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal weights (fan in, as MATLAB's 'he' initializer) and zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def learn_rate_factors(self) -> dict[str, float]:
        """Per-parameter learning-rate factors other than 1, by parameter name.

        ``unetLayers`` gives each transposed convolution ``BiasLearnRateFactor`` 2: its bias learns at
        twice the global learning rate. :func:`lgeseg.train.build_optimizer` reads this.
        """
        return {f"upconvs.{i}.bias": 2.0 for i in range(len(self.upconvs))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of a batch of images.

        Args:
            x: (N, in_channels, H, W) images in [0, 1] (MATLAB's uint8 range divided by 255), H and W
                divisible by ``2**depth``.

        Returns:
            (N, num_classes, H, W) unnormalised class scores (logits; MATLAB's softmax layer is left to
            the loss).
        """
        x = self.normalize(x)
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x)
            if i == self.depth - 1:
                x = self.dropout(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bridge(x))
        for upconv, decoder, skip in zip(self.upconvs, self.decoders, reversed(skips)):
            x = torch.relu(upconv(x))
            x = decoder(torch.cat([x, skip], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
