"""``train.device: cuda`` with ``resources.gpu: 0`` fails every trial (Ray hides the GPUs from a trial that
reserved none): the driver refuses it in one line before Ray starts (:func:`hpo.cluster.check_device`)."""

from __future__ import annotations

import pytest

import hpo.study
from hpo.cluster import check_device
from hpo.study_config import study_config
from lgeseg.errors import ConfigError


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_per_trial_is_refused(device, monkeypatch):
    monkeypatch.delenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=rf"'train.device' is '{device}' but resources.gpu is 0"):
        check_device({"gpu": 0, "cpu": 1}, device)


@pytest.mark.parametrize(("gpu", "device"), [(0, "cpu"), (0, "auto"), (0.5, "cuda"), (1, "cuda:0"), (1, "cpu")])
def test_other_combinations_pass(gpu, device):
    check_device({"gpu": gpu, "cpu": 1}, device)


def test_ray_told_not_to_hide_gpus_lets_cuda_through(monkeypatch):
    monkeypatch.setenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", "1")
    check_device({"gpu": 0, "cpu": 1}, "cuda")


def test_the_driver_refuses_before_ray_starts(monkeypatch, tiny_data_dir, tmp_path, one_line_error):
    monkeypatch.delenv("RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES", raising=False)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(hpo.study, "start_ray", no_ray)
    config = study_config(
        {
            "data": str(tiny_data_dir),
            "model": {"width": 4, "depth": 2},
            "train": {"device": "cuda", "batch_size": 4},
            "resources": {"gpu": 0, "cpu": 1},
        }
    )
    with pytest.raises(ConfigError, match="resources.gpu is 0"):
        hpo.study.run_study(config, out_dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()
    line = one_line_error(
        ["grid", "--data", str(tiny_data_dir), "--out", str(tmp_path / "t"), "--set", "train.device=cuda"]
        + ["--set", "resources.gpu=0", "--set", "model.depth=2", "--set", "train.batch_size=4"]
    )
    assert "'train.device' is 'cuda' but resources.gpu is 0" in line and not (tmp_path / "t").exists()
