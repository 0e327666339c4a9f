"""Image sizes the U-Net cannot take: one line before anything is written, or ``model.pad: true``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_train_args
from PIL import Image

from lgeseg.errors import ConfigError
from lgeseg.padding import check_size, crop, pad_dataset, padded_size
from lgeseg.run import run


@pytest.mark.parametrize(
    ("height", "width", "depth", "lower"),
    [
        (18, 14, 2, ", lower model.depth to 1"),
        (120, 100, 4, ", lower model.depth to 2"),
        (128, 100, 3, ", lower model.depth to 2"),
        (17, 16, 2, ""),  # odd: no depth fits
        (16, 24, 4, ", lower model.depth to 3"),
    ],
)
def test_size_not_divisible_is_one_line_naming_size_depth_and_ways_out(height, width, depth, lower):
    ph, pw = padded_size(height, width, depth)
    m = 2**depth
    assert ph % m == 0 and pw % m == 0 and 0 <= ph - height < m and 0 <= pw - width < m
    with pytest.raises(ConfigError) as error:
        check_size(height, width, depth, pad=False)
    assert str(error.value) == (
        f"images are {height}x{width} (HxW) but model.depth {depth} needs H and W divisible "
        f"by 2**{depth} = {m}; set model.pad: true (pads to {ph}x{pw}){lower} or resize "
        f"the images"
    )
    check_size(height, width, depth, pad=True)  # padding accepts any size
    check_size(ph, pw, depth, pad=False)


def test_pad_dataset_pads_images_with_zero_and_masks_with_ignore(make_dataset):
    from lgeseg.data import IGNORE_INDEX

    dataset = make_dataset(n=3, size=16)
    dataset.images, dataset.masks = dataset.images[:, :14, :13], dataset.masks[:, :14, :13]
    padded = pad_dataset(dataset, depth=2)
    assert padded.images.shape == (3, 16, 16) and padded.masks.shape == (3, 16, 16)
    assert np.array_equal(padded.images[:, :14, :13], dataset.images)
    assert (padded.images[:, 14:] == 0).all() and (padded.images[:, :, 13:] == 0).all()
    assert (padded.masks[:, 14:] == IGNORE_INDEX).all() and (padded.masks[:, :, 13:] == IGNORE_INDEX).all()
    assert np.array_equal(crop(padded.masks, 14, 13), dataset.masks)
    assert pad_dataset(padded, depth=2) is padded


def test_train_cli_refuses_odd_size_before_writing(make_dataset_dir, tmp_path, one_line_error):
    data = make_dataset_dir(size=(18, 14))
    out = tmp_path / "out"
    line = one_line_error(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            *tiny_train_args(epochs=1),
        ]
    )
    assert "images are 18x14 (HxW) but model.depth 2 needs H and W divisible by 2**2 = 4" in line
    assert not out.exists()


def test_pad_trains_any_size_and_scores_the_original_pixels(make_dataset_dir, tiny_run_config, tmp_path):
    """18x14 with depth 2: trained on 20x16, predictions and metrics on the 18x14 pixels only."""
    data = make_dataset_dir(size=(18, 14))
    out = tmp_path / "run"
    result = run(tiny_run_config(data=str(data), model={"pad": True}, train__epochs=1), out)
    test_files = json.loads((out / "split.json").read_text())["test"]
    assert len(test_files) == len(result.test_metrics["images"])
    assert np.asarray(result.test_metrics["confusion_matrix"]).sum() == len(test_files) * 18 * 14
    for name in test_files:
        pred = np.asarray(Image.open(out / "predictions" / name))
        assert pred.shape == (18, 14) and set(np.unique(pred)) <= {0, 128, 255}
    import torch

    assert torch.load(out / "best.pt", weights_only=True)["model_spec"]["image_size"] == [20, 16]
