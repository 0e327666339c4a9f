"""The U-Net matches MATLAB R2020b's ``unetLayers`` defaults: size, layers, init, input normalisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lgeseg.unet import UNet, count_parameters


@pytest.fixture(scope="module")
def full_unet() -> UNet:
    """MATLAB's default network: unetLayers([128 128 1], 3) (31 M parameters; built once)."""
    torch.manual_seed(0)
    return UNet()


def tiny(**kwargs) -> UNet:
    torch.manual_seed(0)
    return UNet(**{"width": 4, "depth": 2, "image_size": (16, 16), **kwargs})


def test_default_parameter_count_is_matlabs(full_unet):
    assert count_parameters(full_unet) == 31_030_723
    assert sum(p.numel() for p in full_unet.parameters()) == 31_030_723  # nothing frozen


def test_default_layer_widths(full_unet):
    convs = [m for m in full_unet.encoders.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [c.out_channels for c in full_unet.bridge if isinstance(c, nn.Conv2d)] == [1024, 1024]
    assert [u.out_channels for u in full_unet.upconvs] == [512, 256, 128, 64]
    assert all(u.kernel_size == (2, 2) and u.stride == (2, 2) for u in full_unet.upconvs)
    assert full_unet.head.kernel_size == (1, 1) and full_unet.head.out_channels == 3
    assert all(
        c.kernel_size == (3, 3) and c.padding == (1, 1)
        for c in full_unet.modules()
        if isinstance(c, nn.Conv2d) and c is not full_unet.head
    )


@pytest.mark.parametrize("width,depth,size,channels,classes", [(4, 2, 16, 1, 3), (2, 3, 32, 1, 2), (4, 1, 8, 2, 4)])
def test_output_shape(width, depth, size, channels, classes):
    model = UNet(in_channels=channels, num_classes=classes, width=width, depth=depth, image_size=(size, size))
    out = model(torch.rand(2, channels, size, size))
    assert out.shape == (2, classes, size, size)
    assert out.dtype == torch.float32


def test_no_normalisation_layers(full_unet):
    banned = (
        nn.modules.batchnorm._BatchNorm,
        nn.GroupNorm,
        nn.LayerNorm,
        nn.modules.instancenorm._InstanceNorm,
        nn.LocalResponseNorm,
    )
    assert not [m for m in full_unet.modules() if isinstance(m, banned)]
    assert not any("running_mean" in k or "num_batches_tracked" in k for k in full_unet.state_dict())


def test_dropout_closes_last_encoder_stage_and_bridge():
    """Dropout 0.5 runs exactly twice per forward: on the last encoder stage's output and on the bridge's."""
    model = tiny(depth=3, image_size=(32, 32))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.5 for m in dropouts)
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append((tuple(inp[0].shape), mod.training)))
        for m in dropouts
    ]
    try:
        model.train()
        model(torch.rand(1, 1, 32, 32))
    finally:
        for h in hooks:
            h.remove()
    # width 4, depth 3: last encoder stage = 16 channels at 8x8 (before its pool); bridge = 32 channels at 4x4
    assert [shape for shape, _ in seen] == [(1, 16, 8, 8), (1, 32, 4, 4)]


def test_dropout_active_in_train_only():
    model = tiny()
    x = torch.rand(2, 1, 16, 16)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    a = model(x)
    b = model(x)
    assert not torch.equal(a, b)


def test_skip_of_last_encoder_stage_is_dropped_out():
    """MATLAB connects 'Encoder-Stage-<depth>-DropOut' to the skip: the concatenated skip shows dropout zeros."""
    model = tiny()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.bias.fill_(1.0)  # every ReLU output positive, so zeros can only come from dropout
                m.weight.abs_()
    captured = []
    h = model.decoders[0].register_forward_pre_hook(lambda mod, inp: captured.append(inp[0].detach().clone()))
    try:
        model.train()
        model(torch.rand(1, 1, 16, 16))
    finally:
        h.remove()
    skip = captured[0][:, model.upconvs[0].out_channels :]
    assert skip.shape[1] == 8  # width 4 * 2**(depth-1)
    frac_zero = (skip == 0).float().mean().item()
    assert 0.3 < frac_zero < 0.7


def test_he_normal_weights_and_zero_biases(full_unet):
    for module in full_unet.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            assert torch.count_nonzero(module.bias) == 0, module
    # Wide convolutions have enough weights for tight statistics: std = sqrt(2 / fan_in), mean 0.
    wide = [full_unet.bridge[0], full_unet.bridge[2], full_unet.encoders[3][2], full_unet.decoders[0][0]]
    for conv in wide:
        w = conv.weight.detach().double()
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = math.sqrt(2.0 / fan_in)
        assert w.std().item() == pytest.approx(expected, rel=0.01), conv
        assert abs(w.mean().item()) < 0.01 * expected
    # a normal, not a uniform, distribution: excess kurtosis ~0 (uniform: -1.2)
    w = full_unet.bridge[2].weight.detach().double().flatten()
    kurtosis = (((w - w.mean()) / w.std()) ** 4).mean().item() - 3
    assert abs(kurtosis) < 0.05


def test_reset_parameters_redraws_he():
    model = tiny()
    before = model.encoders[0][0].weight.detach().clone()
    with torch.no_grad():
        model.encoders[0][0].bias.fill_(3.0)
    model.reset_parameters()
    assert not torch.equal(before, model.encoders[0][0].weight)
    assert torch.count_nonzero(model.encoders[0][0].bias) == 0


def _first_conv_input(model: UNet, x: torch.Tensor) -> torch.Tensor:
    captured = []
    h = model.encoders[0][0].register_forward_pre_hook(lambda mod, inp: captured.append(inp[0].detach().clone()))
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return captured[0]


def test_input_layer_is_zerocenter_channel_in_0_255_scale():
    """MATLAB R2020b default: the first conv sees ``255 * x - mean`` with one mean over the training pixels."""
    model = tiny()
    assert model.normalize.mode == "zerocenter" and model.normalize.dimension == "channel"
    assert "normalize.mean" in model.state_dict() and model.normalize.mean.shape == (1, 1, 1, 1)
    assert not any(name.startswith("normalize") for name, _ in model.named_parameters())
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(_first_conv_input(model, x), 255 * x)  # statistics start at 0
    model.normalize.fit(x)
    assert model.normalize.mean.item() == pytest.approx(255 * x.double().mean().item(), rel=1e-5)
    assert torch.allclose(_first_conv_input(model, x), 255 * x - 255 * x.mean(), atol=1e-3)


def test_normalization_options_reach_the_input_layer():
    model = tiny(normalization="zscore", normalization_dimension="element")
    assert model.normalize.mode == "zscore" and model.normalize.std.shape == (1, 1, 16, 16)


def test_upconv_biases_learn_at_twice_the_rate(full_unet):
    """unetLayers' transposed convolutions: BiasLearnRateFactor 2 (their weights and all else: 1)."""
    factors = full_unet.learn_rate_factors()
    upconv_biases = {f"upconvs.{i}.bias" for i in range(4)}
    assert factors == dict.fromkeys(upconv_biases, 2.0)
    assert upconv_biases <= dict(full_unet.named_parameters()).keys()
