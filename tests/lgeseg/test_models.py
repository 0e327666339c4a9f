"""lgeseg.models: each architecture is MONAI's own network (or MATLAB's U-Net) behind the input layer;
config errors name the key; L2 goes on convolution weights only; checkpoints rebuild any architecture."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lgeseg.config import run_config
from lgeseg.errors import ConfigError
from lgeseg.models import ARCHITECTURES, build_model, halvings, l2_parameters, model_from_spec
from lgeseg.normalization import InputNormalization, Normalized
from lgeseg.run import run
from lgeseg.train import build_optimizer, load_model, predict
from lgeseg.unet import UNet

#: Width-4-ish options of every MONAI architecture for 16x16 images.
TINY_MONAI = {
    "monai_unet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "norm": "batch", "dropout": 0.1},
    "monai_basicunet": {"features": [4, 4, 8, 8, 16, 4], "norm": "batch", "dropout": 0.0},
    "monai_segresnet": {
        "init_filters": 8,
        "blocks_down": [1, 1, 1],
        "blocks_up": [1, 1],
        "norm": "group",
        "dropout": 0.0,
    },
}


def tiny_model_config(architecture: str, **model) -> dict:
    return run_config({"model": {"architecture": architecture, "width": 4, "depth": 2, **TINY_MONAI, **model}})


def monai_reference(architecture: str) -> nn.Module:
    """The same network straight from MONAI's constructor, with MONAI's own argument names."""
    from monai.networks import nets

    if architecture == "monai-unet":
        return nets.UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=3,
            channels=(4, 8, 16),
            strides=(2, 2),
            num_res_units=1,
            norm="batch",
            dropout=0.1,
        )
    if architecture == "monai-basicunet":
        return nets.BasicUNet(
            spatial_dims=2, in_channels=1, out_channels=3, features=(4, 4, 8, 8, 16, 4), norm="batch", dropout=0.0
        )
    return nets.SegResNet(
        spatial_dims=2,
        init_filters=8,
        in_channels=1,
        out_channels=3,
        blocks_down=(1, 1, 1),
        blocks_up=(1, 1),
        norm=("group", {"num_groups": 8}),
    )


@pytest.mark.parametrize("architecture", ["monai-unet", "monai-basicunet", "monai-segresnet"])
def test_monai_architectures_are_monais_networks(architecture):
    torch.manual_seed(0)
    model = build_model(tiny_model_config(architecture), 1, 3, (16, 16))
    reference = monai_reference(architecture)
    assert isinstance(model, Normalized) and type(model.backbone) is type(reference)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    # the same layers with the same names and shapes: MONAI's weights load strictly into ours
    model.backbone.load_state_dict(reference.state_dict(), strict=True)
    x = torch.rand(2, 1, 16, 16)
    model.eval(), reference.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 3, 16, 16)
        # the input layer is in front: zerocenter with a zero mean image is x * 255
        assert torch.allclose(out, reference(x * 255), rtol=1e-4, atol=1e-4)


def test_matlab_unet_is_the_default_and_unchanged():
    config = run_config({"model": {"width": 4, "depth": 2}})
    assert config["model"]["architecture"] == "matlab-unet"
    torch.manual_seed(0)
    model = build_model(config, 1, 3, (16, 16))
    torch.manual_seed(0)
    plain = UNet(width=4, depth=2, image_size=(16, 16))
    assert type(model) is UNet and model.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
    assert isinstance(model.normalize, InputNormalization)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_normalization_applies_to_every_architecture(architecture):
    """Fitted zscore statistics reach the backbone: the network sees (255 x - mean) / std per channel."""
    model = build_model(tiny_model_config(architecture, normalization="zscore"), 1, 3, (16, 16))
    images = torch.rand(5, 1, 16, 16) * 0.5 + 0.2
    model.normalize.fit(images)
    pixels = (images * 255).flatten().double()
    assert model.normalize.mean.flatten().item() == pytest.approx(pixels.mean().item(), rel=1e-5)
    assert model.normalize.std.flatten().item() == pytest.approx(pixels.std(correction=0).item(), rel=1e-5)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    seen = []
    handle = first.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    model.eval()
    with torch.no_grad():
        model(images)
    handle.remove()
    expected = ((images * 255 - pixels.mean()) / pixels.std(correction=0)).float()
    assert torch.allclose(seen[0], expected, atol=1e-4)
    assert "normalize.mean" in model.state_dict()  # the statistics travel with the weights


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_l2_goes_on_convolution_weights_only(architecture):
    model = build_model(tiny_model_config(architecture), 1, 3, (16, 16))
    optimizer = build_optimizer(model, 1e-3, 5e-4, "coupled")
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay) == len(list(model.parameters()))  # every parameter once
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert {id(m.weight) for m in convs} == {k for k, v in decay.items() if v == 5e-4}
    norms = [
        m
        for m in model.modules()
        if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None
    ]
    assert bool(norms) == (architecture != "matlab-unet")
    for module in norms + [m for m in model.modules() if isinstance(m, nn.PReLU)]:
        for param in module.parameters():  # norm scale and shift, PReLU slopes: named "weight" too
            assert decay[id(param)] == 0.0, module
    for module in convs:
        if module.bias is not None:
            assert decay[id(module.bias)] == 0.0
    weights, rest = l2_parameters(model)
    assert len(weights) == len(convs) and len(weights) + len(rest) == len(decay)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ({"architecture": "resnet"}, "model.architecture"),
        ({"normalization": "minmax"}, "model.normalization"),
        ({"monai_unet": {"strides": [2, 2, 2]}}, "model.monai_unet.strides"),
        ({"monai_unet": {"channels": [8, 0, 16, 32, 64]}}, "model.monai_unet.channels"),
        ({"monai_unet": {"channels": [8]}}, "model.monai_unet.channels"),
        ({"monai_unet": {"norm": "group"}}, "model.monai_unet.norm"),
        ({"monai_unet": {"num_res_units": -1}}, "model.monai_unet.num_res_units"),
        ({"monai_unet": {"dropout": 1.0}}, "model.monai_unet.dropout"),
        ({"monai_unet": {"kernel": 5}}, "model.monai_unet.kernel"),
        ({"monai_basicunet": {"features": [4, 4, 8]}}, "model.monai_basicunet.features"),
        ({"monai_segresnet": {"init_filters": 12}}, "model.monai_segresnet.init_filters"),
        ({"monai_segresnet": {"blocks_up": [1]}}, "model.monai_segresnet.blocks_up"),
        ({"monai_segresnet": {"norm": "none"}}, "model.monai_segresnet.norm"),
    ],
)
def test_bad_model_options_name_the_key(model, key):
    with pytest.raises(ConfigError) as info:
        run_config({"model": model})
    message = str(info.value)
    assert f"'{key}'" in message and "\n" not in message


@pytest.mark.parametrize(
    ("architecture", "key", "factor"),
    [
        ("matlab-unet", "model.depth", 4),
        ("monai-unet", "model.monai_unet", 4),
        ("monai-basicunet", "model.monai_basicunet", 16),
        ("monai-segresnet", "model.monai_segresnet", 4),
    ],
)
def test_image_size_must_fit_the_downsampling(architecture, key, factor):
    with pytest.raises(ConfigError, match=rf"'{key}'.* divisible by {factor}, the images are 18x18"):
        build_model(tiny_model_config(architecture), 1, 3, (18, 18))


def test_instance_norm_needs_more_than_one_pixel_at_the_bottom():
    config = tiny_model_config("monai-basicunet", monai_basicunet={**TINY_MONAI["monai_basicunet"], "norm": "instance"})
    with pytest.raises(ConfigError, match="'model.monai_basicunet.norm': instance norm needs .* 32x32"):
        build_model(config, 1, 3, (16, 16))
    assert build_model(config, 1, 3, (32, 32))(torch.rand(2, 1, 32, 32)).shape == (2, 3, 32, 32)


def test_old_checkpoint_spec_and_state_still_load():
    """A checkpoint written before lgeseg.models and model.normalization: spec without architecture or
    normalisation, the zerocenter mean image stored as ``mean_image`` (one value per pixel)."""
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, image_size=(16, 16), normalization_dimension="element")
    model.normalize.fit(torch.rand(5, 1, 16, 16))
    old = {("mean_image" if k == "normalize.mean" else k): v for k, v in model.state_dict().items()}
    rebuilt = model_from_spec({"in_channels": 1, "num_classes": 3, "width": 4, "depth": 2, "image_size": [16, 16]})
    rebuilt.load_state_dict(old)
    assert torch.equal(rebuilt.normalize.mean, model.normalize.mean)


@pytest.mark.parametrize("architecture", ["monai-unet", "monai-segresnet"])
def test_run_records_and_reloads_any_architecture(architecture, make_dataset, tiny_run_config, tmp_path):
    config = tiny_run_config(model={"architecture": architecture, **TINY_MONAI}, train__epochs=1, train__loss="dice-ce")
    dataset = make_dataset(n=16, size=16)
    result = run(config, tmp_path, dataset=dataset)
    info = json.loads((tmp_path / "run.json").read_text())
    assert (info["architecture"], info["loss"]) == (architecture, "dice-ce")
    model, ckpt = load_model(tmp_path / "last.pt")  # select: final, so the network that made the predictions
    assert ckpt["model_spec"]["architecture"] == architecture and isinstance(model, Normalized)
    assert not torch.equal(model.normalize.mean, torch.zeros_like(model.normalize.mean))
    files = json.loads((tmp_path / "split.json").read_text())["test"]
    index = [dataset.files.index(f) for f in files]
    pred = predict(model, torch.from_numpy(dataset.images[index]).unsqueeze(1), "fp32").numpy()
    values = np.array(list(dataset.labels.values()), np.uint8)
    written = np.stack([np.array(Image.open(tmp_path / "predictions" / f)) for f in files])
    assert result.history and np.array_equal(values[pred], written)


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [("matlab-unet", 2), ("monai-unet", 2), ("monai-basicunet", 4), ("monai-segresnet", 2)],
)
def test_halvings_of_each_architecture(architecture, expected):
    assert halvings(tiny_model_config(architecture)["model"]) == expected


@pytest.mark.parametrize("architecture", ["monai-unet", "monai-segresnet"])
def test_size_check_and_padding_use_the_architectures_halvings(architecture, make_dataset, tiny_run_config, tmp_path):
    """14x14 images: refused without model.pad (sides must be multiples of 4), padded to 16x16 with it."""
    dataset = make_dataset(n=12, size=16)
    odd = dataclasses.replace(
        dataset, images=dataset.images[:, :14, :14].copy(), masks=dataset.masks[:, :14, :14].copy()
    )
    model = {"architecture": architecture, **TINY_MONAI}
    with pytest.raises(ConfigError, match=r"divisible by 2\*\*2"):
        run(tiny_run_config(model=model, train__epochs=1), tmp_path / "refused", dataset=odd)
    result = run(tiny_run_config(model={**model, "pad": True}, train__epochs=1), tmp_path / "padded", dataset=odd)
    assert np.array(Image.open(next((tmp_path / "padded" / "predictions").iterdir()))).shape == (14, 14)
    assert result.history
