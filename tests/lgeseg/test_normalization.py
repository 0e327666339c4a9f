"""imageInputLayer's normalisations on a small stack, against values worked out by hand.

The stack: two 2x2 grey-level images, in MATLAB's uint8 units A = [0 51; 102 255], B = [102 51; 204 255]
(25.5 x [0 2; 4 10] and 25.5 x [4 2; 8 10]). Channel-wise: mean 25.5 x 5 = 127.5; deviations 25.5 x
(-5, -3, -1, 5, -1, -3, 3, 5), squares summing to 25.5^2 x 104 over 8 values: std 25.5 x sqrt(13); min 0,
max 255. Element-wise: mean [51 51; 153 255], std |A - B| / 2 = [51 0; 51 0], min A, max B.
"""

from __future__ import annotations

import math

import pytest
import torch

from lgeseg.normalization import InputNormalization

A = torch.tensor([[0.0, 51.0], [102.0, 255.0]])
B = torch.tensor([[102.0, 51.0], [204.0, 255.0]])
STACK = torch.stack([A, B])[:, None] / 255  # (2, 1, 2, 2) in [0, 1], as the data loader gives


def normalized(mode: str, dimension: str = "channel", x: torch.Tensor = STACK) -> torch.Tensor:
    layer = InputNormalization(mode, dimension, in_channels=x.shape[1], image_size=tuple(x.shape[2:]))
    layer.fit(STACK if x is STACK else x)
    return layer(x).double()


def test_zerocenter_channel_subtracts_the_scalar_mean():
    assert torch.allclose(normalized("zerocenter")[0, 0], A.double() - 127.5, atol=1e-4)


def test_zerocenter_element_subtracts_the_mean_image():
    mean = torch.tensor([[51.0, 51.0], [153.0, 255.0]], dtype=torch.double)
    out = normalized("zerocenter", "element")
    assert torch.allclose(out[0, 0], A.double() - mean, atol=1e-4)
    assert torch.allclose(out[1, 0], B.double() - mean, atol=1e-4)


def test_zscore_channel_and_element():
    std = 25.5 * math.sqrt(13)
    assert torch.allclose(normalized("zscore")[0, 0], (A.double() - 127.5) / std, atol=1e-5)
    # element-wise: std [51 0; 51 0]; a zero std divides by 1
    out = normalized("zscore", "element")[1, 0]
    expected = torch.tensor([[(102 - 51) / 51, 0.0], [(204 - 153) / 51, 0.0]], dtype=torch.double)
    assert torch.allclose(out, expected, atol=1e-5)


def test_rescale_zero_one_and_symmetric():
    assert torch.allclose(normalized("rescale-zero-one")[0, 0], A.double() / 255, atol=1e-6)
    assert torch.allclose(normalized("rescale-symmetric")[0, 0], 2 * A.double() / 255 - 1, atol=1e-6)
    # element-wise: min A, max B; the pixels where max == min divide by 1 and give 0 (resp. -1)
    assert torch.allclose(
        normalized("rescale-zero-one", "element")[1, 0],
        torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.double),
        atol=1e-6,
    )
    assert torch.allclose(
        normalized("rescale-symmetric", "element")[0, 0], torch.full((2, 2), -1.0, dtype=torch.double), atol=1e-6
    )


def test_none_only_scales_to_uint8_units():
    assert torch.allclose(normalized("none")[0, 0], A.double(), atol=1e-4)


def test_channel_versus_all_on_two_channels():
    x = torch.stack([torch.full((2, 2), 0.2), torch.full((2, 2), 0.6)])[None].repeat(3, 1, 1, 1)
    channel = InputNormalization("zerocenter", "channel", in_channels=2, image_size=(2, 2))
    channel.fit(x)
    every = InputNormalization("zerocenter", "all", in_channels=2, image_size=(2, 2))
    every.fit(x)
    assert channel.mean.flatten().tolist() == pytest.approx([51.0, 153.0])
    assert every.mean.shape == (1, 1, 1, 1) and every.mean.item() == pytest.approx(102.0)
    assert torch.allclose(channel(x), torch.zeros_like(x), atol=1e-4)
    assert torch.allclose(every(x)[:, 0], torch.full((3, 2, 2), -51.0), atol=1e-4)


@pytest.mark.parametrize(
    "mode,buffers",
    [("zerocenter", {"mean"}), ("zscore", {"mean", "std"}), ("rescale-symmetric", {"min", "max"}), ("none", set())],
)
def test_statistics_are_buffers_saved_with_the_model(mode, buffers):
    layer = InputNormalization(mode, "element", image_size=(2, 2))
    layer.fit(STACK)
    state = layer.state_dict()
    assert set(state) == buffers and not list(layer.parameters())
    again = InputNormalization(mode, "element", image_size=(2, 2))
    again.load_state_dict(state)
    assert torch.equal(again(STACK), layer(STACK))


def test_unknown_mode_or_dimension():
    with pytest.raises(ValueError, match="zerocenter"):
        InputNormalization("zcore")
    with pytest.raises(ValueError, match="channel"):
        InputNormalization("zscore", "pixel")
