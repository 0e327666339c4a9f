"""The U-Net of MATLAB R2020b's ``unetLayers`` with its defaults.

Encoder stage: conv3x3-ReLU-conv3x3-ReLU (same padding), then 2x2 max pool, stride 2; dropout 0.5 closes
the last encoder stage and the bridge. Decoder stage: 2x2 stride-2 transposed conv + ReLU, concatenate
the skip, conv-ReLU-conv-ReLU. A 1x1 conv gives the class scores. No batch norm; He-normal weights and
zero biases. Input normalisation is MATLAB's ``imageInputLayer`` default, 'zerocenter': the training
split's mean image is subtracted, and it is stored in the model (the ``normalization`` layer of
:mod:`lgeseg.normalization`, which the MONAI networks use too). Images arrive in [0, 1] and are first
brought back to the 0-255 range of the uint8 images MATLAB feeds the network (``input_scale``); with
He-initialised weights that range decides how fast the first layers learn.
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


class UNet(nn.Module):
    """U-Net for ``in_channels`` x H x W images with H and W divisible by ``2**depth``.

    With the defaults (width 64, depth 4, 1 input channel, 3 classes) it has 31,030,723 parameters,
    exactly as MATLAB's ``unetLayers([128 128 1], 3)``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 3, width: int = 64, depth: int = 4,
                 image_size: tuple[int, int] = (128, 128), input_scale: float = 255.0,
                 normalization: str = "zerocenter") -> None:
        super().__init__()
        self.depth = depth
        self.input_scale = input_scale
        self.normalization = InputNormalization(normalization, in_channels, tuple(image_size), input_scale)
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

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Checkpoints written before lgeseg.normalization stored the mean image as ``mean_image``.
        if prefix + "mean_image" in state_dict:
            mean = state_dict.pop(prefix + "mean_image")
            state_dict[prefix + "normalization.mean"] = mean
            state_dict[prefix + "normalization.std"] = torch.ones_like(mean)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset_parameters(self) -> None:
        """He-normal weights (fan in, as MATLAB's 'he' initializer) and zero biases."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    @property
    def mean_image(self) -> torch.Tensor:
        """The stored 'zerocenter' mean image (1, C, H, W) in network units (x ``input_scale``)."""
        return self.normalization.mean

    def set_mean_image(self, mean_image: torch.Tensor) -> None:
        """Store the training split's mean image, given in [0, 1] (the 'zerocenter' normalisation)."""
        self.normalization.set_statistics(mean_image.reshape(self.mean_image.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalization(x)
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
