"""The networks a run can train, built from the config by one factory.

``model.architecture`` picks the network; each one's options live under its own key of ``model``:

* ``matlab-unet`` (the paper's network, the default): :class:`lgeseg.unet.UNet`, options ``model.width``
  and ``model.depth``;
* ``monai-unet``: :class:`monai.networks.nets.UNet`, options under ``model.monai_unet``;
* ``monai-basicunet``: :class:`monai.networks.nets.BasicUNet`, options under ``model.monai_basicunet``;
* ``monai-segresnet``: :class:`monai.networks.nets.SegResNet`, options under ``model.monai_segresnet``.

Every network sits behind the same input normalisation (``model.normalization``, :mod:`lgeseg.normalization`):
the MATLAB U-Net holds the layer itself, the MONAI networks are wrapped in :class:`~lgeseg.normalization.Normalized`.
:func:`build_model` makes a network from a run config; :func:`model_spec` is the plain-data description a
checkpoint stores and :func:`model_from_spec` rebuilds any architecture from it. MONAI is imported only
when one of its networks is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from .errors import ConfigError
from .normalization import InputNormalization, Normalized
from .unet import UNet

ARCHITECTURES: tuple[str, ...] = ("matlab-unet", "monai-unet", "monai-basicunet", "monai-segresnet")

#: Config key (under ``model``) holding each MONAI architecture's options, and their defaults.
#: The defaults are MONAI's own where MONAI has one (channels and strides of ``monai.networks.nets.UNet``
#: have none: these are a 5-level U-Net as in MONAI's 2D tutorials).
MONAI_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "monai-unet": (
        "monai_unet",
        {
            "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
            "norm": "batch",
            "dropout": 0.0,
        },
    ),
    "monai-basicunet": (
        "monai_basicunet",
        {"features": [32, 32, 64, 128, 256, 32], "norm": "instance", "dropout": 0.0},
    ),
    "monai-segresnet": (
        "monai_segresnet",
        {"init_filters": 8, "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "norm": "group", "dropout": 0.0},
    ),
}

#: Normalisation layers each MONAI architecture accepts. ``instance`` has a learnable scale and shift
#: (affine), like ``batch``; ``group`` is 8 groups (SegResNet's default).
NORMS: dict[str, tuple[str, ...]] = {
    "monai-unet": ("batch", "instance", "none"),
    "monai-basicunet": ("batch", "instance", "none"),
    "monai-segresnet": ("batch", "instance", "group"),
}
_NORM_ARGS: dict[str, Any] = {
    "batch": "batch",
    "instance": ("instance", {"affine": True}),
    "group": ("group", {"num_groups": 8}),
    "none": None,
}

#: The ``model`` section of a run config (merged into :data:`lgeseg.config.RUN_DEFAULTS`).
MODEL_DEFAULTS: dict[str, Any] = {
    "architecture": "matlab-unet",
    "width": 64,
    "depth": 4,
    "pad": False,  # pad images up to multiples of the network's downsampling (lgeseg.padding)
    "normalization": "zerocenter",  # imageInputLayer's Normalization (lgeseg.normalization)
    "normalization_dimension": "channel",  # its NormalizationDimension ('auto' at training time = channel)
    **{key: options for key, options in MONAI_OPTIONS.values()},
}


def _positive_ints(values: Any, key: str, length: int | None = None) -> None:
    if (
        not isinstance(values, list)
        or not values
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)
    ):
        raise ConfigError(f"config key '{key}' must be a non-empty list of integers > 0, got {values!r}")
    if length is not None and len(values) != length:
        raise ConfigError(f"config key '{key}' must have {length} entries, got {len(values)}: {values!r}")


def check_model(model: dict, where: str = "model") -> None:
    """Range checks of the ``model`` section (types are checked by :func:`lgeseg.config.merge`).

    Every architecture's options are checked, chosen or not, so a config that switches architecture
    (a grid over ``grid.architecture``) fails on load, not in a trial.

    Raises:
        ConfigError: one line naming the dotted key and what is wrong.
    """
    if model["architecture"] not in ARCHITECTURES:
        raise ConfigError(
            f"config key '{where}.architecture' must be one of {', '.join(ARCHITECTURES)}, "
            f"got {model['architecture']!r}"
        )
    for architecture, (key, _) in MONAI_OPTIONS.items():
        options, prefix = model[key], f"{where}.{key}"
        if options["norm"] not in NORMS[architecture]:
            raise ConfigError(
                f"config key '{prefix}.norm' must be one of {', '.join(NORMS[architecture])}, got {options['norm']!r}"
            )
        if not 0 <= options["dropout"] < 1:  # NaN fails too
            raise ConfigError(f"config key '{prefix}.dropout' must be in [0, 1), got {options['dropout']!r}")
    unet = model["monai_unet"]
    _positive_ints(unet["channels"], f"{where}.monai_unet.channels")
    if len(unet["channels"]) < 2:
        raise ConfigError(
            f"config key '{where}.monai_unet.channels' needs at least 2 entries, got {unet['channels']!r}"
        )
    _positive_ints(unet["strides"], f"{where}.monai_unet.strides", len(unet["channels"]) - 1)
    if any(s not in (1, 2) for s in unet["strides"]):
        raise ConfigError(f"config key '{where}.monai_unet.strides' must be 1s and 2s, got {unet['strides']!r}")
    if unet["num_res_units"] < 0:
        raise ConfigError(f"config key '{where}.monai_unet.num_res_units' must be >= 0, got {unet['num_res_units']!r}")
    _positive_ints(model["monai_basicunet"]["features"], f"{where}.monai_basicunet.features", 6)
    seg = model["monai_segresnet"]
    if seg["init_filters"] <= 0:
        raise ConfigError(f"config key '{where}.monai_segresnet.init_filters' must be > 0, got {seg['init_filters']!r}")
    if seg["norm"] == "group" and seg["init_filters"] % 8:
        raise ConfigError(
            f"config key '{where}.monai_segresnet.init_filters' must be a multiple of 8 with "
            f"norm group (8 groups), got {seg['init_filters']!r}"
        )
    _positive_ints(seg["blocks_down"], f"{where}.monai_segresnet.blocks_down")
    _positive_ints(seg["blocks_up"], f"{where}.monai_segresnet.blocks_up", len(seg["blocks_down"]) - 1)


def model_spec(config: dict, in_channels: int, num_classes: int, image_size: Sequence[int]) -> dict[str, Any]:
    """What a checkpoint stores to rebuild the network: plain data (JSON- and ``weights_only``-safe).

    Args:
        config: a validated run config (its ``model`` section is read).
        in_channels: image channels.
        num_classes: K, the number of output class scores.
        image_size: (H, W) of the training images.
    """
    model = config["model"]
    architecture = model["architecture"]
    if architecture == "matlab-unet":
        options = {"width": model["width"], "depth": model["depth"]}
    else:
        options = dict(model[MONAI_OPTIONS[architecture][0]])
    return {
        "architecture": architecture,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": [int(s) for s in image_size],
        "normalization": model["normalization"],
        "normalization_dimension": model["normalization_dimension"],
        "options": options,
    }


def downsampling(spec: dict[str, Any]) -> int:
    """The factor image sides must be divisible by for the architecture of ``spec``."""
    options, architecture = spec["options"], spec["architecture"]
    if architecture == "matlab-unet":
        return 2 ** options["depth"]
    if architecture == "monai-unet":
        return math.prod(options["strides"])
    if architecture == "monai-basicunet":
        return 16  # four 2x2 max pools
    return 2 ** (len(options["blocks_down"]) - 1)


def halvings(model: dict) -> int:
    """How many times the network of a ``model`` config section halves the image: H and W must be
    multiples of ``2**halvings`` (:mod:`lgeseg.padding` checks and pads to that)."""
    return downsampling(model_spec({"model": model}, 1, 1, (0, 0))).bit_length() - 1


def _monai_backbone(spec: dict[str, Any]) -> nn.Module:
    from monai.networks import nets

    options, architecture = spec["options"], spec["architecture"]
    common = {"spatial_dims": 2, "in_channels": spec["in_channels"], "out_channels": spec["num_classes"]}
    norm = _NORM_ARGS[options["norm"]]
    if architecture == "monai-unet":
        return nets.UNet(
            **common,
            channels=options["channels"],
            strides=options["strides"],
            num_res_units=options["num_res_units"],
            norm=norm,
            dropout=options["dropout"],
        )
    if architecture == "monai-basicunet":
        return nets.BasicUNet(**common, features=options["features"], norm=norm, dropout=options["dropout"])
    return nets.SegResNet(
        **common,
        init_filters=options["init_filters"],
        blocks_down=tuple(options["blocks_down"]),
        blocks_up=tuple(options["blocks_up"]),
        norm=norm,
        dropout_prob=options["dropout"] or None,
    )


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """The untrained network a :func:`model_spec` describes (also reads the specs of older checkpoints,
    which describe a MATLAB U-Net by ``width`` and ``depth`` at the top level).

    Returns:
        a module mapping (N, C, H, W) images in [0, 1] to (N, K, H, W) class scores, whose
        ``normalize`` attribute is its :class:`~lgeseg.normalization.InputNormalization`.

    Raises:
        ConfigError: when the image sides are not divisible by the architecture's downsampling.
    """
    if "architecture" not in spec:  # a checkpoint written before models.py: a MATLAB U-Net
        # Before model.normalization it subtracted a mean image ('zerocenter' over elements).
        spec = {
            "architecture": "matlab-unet",
            "normalization": spec.get("normalization", "zerocenter"),
            "normalization_dimension": spec.get("normalization_dimension", "element"),
            "options": {"width": spec["width"], "depth": spec["depth"]},
            **{k: spec[k] for k in ("in_channels", "num_classes", "image_size")},
        }
    architecture, image_size = spec["architecture"], tuple(spec["image_size"])
    factor = downsampling(spec)
    if any(side % factor for side in image_size):
        key = "model.depth" if architecture == "matlab-unet" else f"model.{MONAI_OPTIONS[architecture][0]}"
        raise ConfigError(
            f"config key '{key}': {architecture} needs image sides divisible by {factor}, "
            f"the images are {image_size[0]}x{image_size[1]}"
        )
    if spec["options"].get("norm") == "instance" and min(image_size) < 2 * factor:
        raise ConfigError(
            f"config key 'model.{MONAI_OPTIONS[architecture][0]}.norm': instance norm needs more than "
            f"one pixel at the deepest level, so images of at least {2 * factor}x{2 * factor}; "
            f"the images are {image_size[0]}x{image_size[1]}"
        )
    if architecture == "matlab-unet":
        return UNet(
            in_channels=spec["in_channels"],
            num_classes=spec["num_classes"],
            image_size=image_size,
            normalization=spec["normalization"],
            normalization_dimension=spec["normalization_dimension"],
            **spec["options"],
        )
    normalize = InputNormalization(
        spec["normalization"], spec["normalization_dimension"], spec["in_channels"], image_size
    )
    return Normalized(_monai_backbone(spec), normalize)


def build_model(config: dict, in_channels: int, num_classes: int, image_size: Sequence[int]) -> nn.Module:
    """The untrained network of a run config (see :func:`model_spec` for the arguments)."""
    return model_from_spec(model_spec(config, in_channels, num_classes, image_size))


def l2_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split ``model``'s parameters into those that carry L2 and those that do not.

    L2 goes on the weights of convolutions and transposed convolutions only, as MATLAB applies
    L2Regularization; biases, normalisation layers' scale and shift, and PReLU slopes never carry it.
    Selection is by module type, not by parameter name (a BatchNorm scale is also called ``weight``).

    Returns:
        (decayed, not decayed), every parameter exactly once.
    """
    decayed: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd) and module.weight is not None:
            decayed[id(module.weight)] = module.weight
    rest = [p for p in model.parameters() if id(p) not in decayed]
    return list(decayed.values()), rest


__all__ = [
    "ARCHITECTURES",
    "MODEL_DEFAULTS",
    "MONAI_OPTIONS",
    "NORMS",
    "build_model",
    "check_model",
    "downsampling",
    "halvings",
    "l2_parameters",
    "model_from_spec",
    "model_spec",
]
