"""16-bit PNG images are scaled by the robust percentiles ``import-nifti`` uses, so one hot pixel no
longer darkens a whole slice; the choice is recorded in every run's ``run.json``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lgeseg.png import DEFAULT_PERCENTILES, IMAGE_SCALING, read_image


def _save16(values: np.ndarray, path) -> None:
    Image.fromarray(values.astype(np.uint16)).save(path)


@pytest.mark.parametrize("hot", [65535, 40000, 8000])
def test_one_hot_pixel_does_not_darken_the_slice(tmp_path, hot):
    ramp = (np.arange(400) * 10).reshape(20, 20)  # 12-bit values 0..3990
    _save16(ramp, tmp_path / "clean.png")
    with_hot = ramp.copy()
    with_hot[19, 19] = hot  # replaces the brightest pixel (3990)
    _save16(with_hot, tmp_path / "hot.png")
    clean, hot_image = read_image(tmp_path / "clean.png"), read_image(tmp_path / "hot.png")
    # by hand: the 0.5th percentile sits at rank 1.995 (19.95), the 99.5th at rank 397.005 (3970.05), with or
    # without the hot pixel; every other pixel v maps to (v - 19.95) / 3950.1, clipped
    expected = np.clip((ramp - 19.95) / 3950.1, 0, 1)
    np.testing.assert_allclose(clean, expected, rtol=1e-5)
    np.testing.assert_allclose(hot_image[:19], expected[:19], rtol=1e-5)
    assert hot_image[19, 19] == 1.0
    assert hot_image.mean() == pytest.approx(clean.mean(), rel=1e-4)  # per-image max would divide by 16x more


def test_flat_16bit_images_stay_defined(tmp_path):
    _save16(np.zeros((4, 4)), tmp_path / "zero.png")
    _save16(np.full((4, 4), 700), tmp_path / "flat.png")
    assert (read_image(tmp_path / "zero.png") == 0).all() and (read_image(tmp_path / "flat.png") == 1).all()


def test_the_scaling_is_the_one_import_nifti_uses_and_is_recorded(tmp_path, tiny_data_dir, tiny_run_config):
    from lgeseg.nifti import DEFAULT_PERCENTILES as NIFTI_PERCENTILES
    from lgeseg.run import run

    assert NIFTI_PERCENTILES == DEFAULT_PERCENTILES == (0.5, 99.5)
    run(tiny_run_config(data=str(tiny_data_dir), train__epochs=1), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["image_scaling"] == IMAGE_SCALING
