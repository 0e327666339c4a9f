"""``grid`` under changed data, odd image sizes and failed trials (issue 10, items 1-3), on tiny U-Nets."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import optuna
import pytest
from conftest import tiny_study, write_dataset_dir
from optuna.trial import TrialState

from hpo.closing_table import format_summary
from hpo.study import run_study
from lgeseg.errors import ConfigError, DataError

pytestmark = pytest.mark.slow


#: The study of these tests on top of :func:`conftest.tiny_study`: one epoch of batch 4 at one L2, pinned to fp32 on
#: the CPU, and a retune rule that never fires.
HONEST = {
    "name": "honest",
    "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "precision": "fp32", "channels_last": False},
    "grid": {"l2": [5e-3]},
    "retune": {"check_fraction": 1.0, "target_accuracy": 0.0, "max_reruns": 0, "adjustments": []},
}


def tiny(data_dir: Path, **sections) -> dict:
    return tiny_study(data_dir, HONEST, sections)


def test_nan_loss_error_reaches_record_progress_and_summary(ray_cluster, tmp_path):
    """The trainable's own message, not "see the Ray logs", in the Optuna attr, the progress line, the summary;
    Ray keeps the traceback in the trial's error.txt (not printed: tests/e2e/test_failed_trial_output.py)."""
    data = write_dataset_dir(tmp_path / "data")
    stream = io.StringIO()
    result = run_study(tiny(data, train={"learning_rate": 1e6}), out_dir=tmp_path / "study", stream=stream)
    expected = "loss became nan at epoch 1, batch 2/3; try a smaller train.learning_rate"
    (trial,) = optuna.load_study(study_name="honest", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}").trials
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["error"] == expected
    assert f"error   l2=0.005_seed=0_rerun=0  {expected}" in stream.getvalue()
    assert result.rows[0]["status"] == "failed" and result.rows[0]["error"] == expected
    assert format_summary(result.rows).splitlines()[-1] == f"failed l2=0.005 seed=0: {expected}"
    (error_txt,) = (tmp_path / "study" / "ray").rglob("error.txt")
    assert 'File "' in error_txt.read_text() and expected in error_txt.read_text()  # the frames, kept


def test_resume_on_changed_data_is_refused(ray_cluster, tmp_path):
    """A finished study whose data lose a test patient, then change a mask, refuses --resume each time."""
    data = write_dataset_dir(tmp_path / "data")
    config = tiny(data)
    run_study(config, out_dir=tmp_path / "study", stream=io.StringIO())
    study = optuna.load_study(study_name="honest", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    split = study.user_attrs["split"]
    assert len(study.user_attrs["data_fingerprint"]["entries"]["p00_s0.png"]) == 20  # image and mask hashes
    stored = {t.number: (t.state, dict(t.user_attrs)) for t in study.trials}

    # Same data: resuming works and does nothing.
    again = run_study(config, out_dir=tmp_path / "study", resume=True, stream=io.StringIO())
    assert [r["status"] for r in again.rows] == ["complete"]

    # One test patient's slices and manifest rows deleted from the data folder.
    backup = shutil.copytree(data, tmp_path / "backup")
    patient = split["test"][0].split("_")[0]
    for folder in ("images", "masks"):
        for path in (data / folder).glob(f"{patient}_*.png"):
            path.unlink()
    manifest = data / "manifest.csv"
    manifest.write_text(
        "".join(line for line in manifest.read_text().splitlines(keepends=True) if not line.startswith(patient))
    )
    with pytest.raises(DataError) as refused:
        run_study(config, out_dir=tmp_path / "study", resume=True, stream=io.StringIO())
    message = str(refused.value)
    assert f"images/{patient}_s0.png is gone" in message and "--study-name" in message
    assert "\n" not in message
    shutil.rmtree(data)
    shutil.copytree(backup, data)

    # Same file names, one mask rewritten with other content.
    shutil.copy(data / "masks" / "p01_s1.png", data / "masks" / "p01_s2.png")
    with pytest.raises(DataError, match=r"masks/p01_s2\.png changed"):
        run_study(config, out_dir=tmp_path / "study", resume=True, stream=io.StringIO())
    after = optuna.load_study(study_name="honest", storage=f"sqlite:///{tmp_path / 'study' / 'study.db'}")
    assert {t.number: (t.state, dict(t.user_attrs)) for t in after.trials} == stored  # nothing lost or added


def test_image_size_checked_before_ray_and_storage(tmp_path, monkeypatch):
    """18x14 images with depth 2: one line before Ray starts or anything is stored."""
    import hpo.study

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(hpo.study, "start_ray", no_ray)
    data = write_dataset_dir(tmp_path / "data", size=(18, 14))
    with pytest.raises(
        ConfigError,
        match=r"images are 18x14 \(HxW\) but model.depth 2 needs H and W divisible "
        r"by 2\*\*2 = 4; set model.pad: true \(pads to 20x16\)",
    ):
        run_study(tiny(data), out_dir=tmp_path / "study", stream=io.StringIO())
    assert not (tmp_path / "study").exists()


def test_failure_message_unwraps_and_reads_text() -> None:
    """Ray's wrapper is unwrapped to the trainable's error; a text copy gives its exception line."""
    from ray.exceptions import RayTaskError

    from hpo.failure import UNKNOWN, _text_message, exception_message

    inner = DataError("data/masks/a.png: mask values outside the label map")
    wrapped = RayTaskError("train", "Traceback ...", inner)
    assert exception_message(wrapped) == "data/masks/a.png: mask values outside the label map"
    assert exception_message(ValueError("bad\nsecond line")) == "ValueError: bad"
    text = (
        'Failure # 1 (occurred at 2026-01-01)\nray::ImplicitFunc.train() (pid=1)\n  File "x.py", line 3\n'
        "    raise TrainingError(msg)\nlgeseg.errors.TrainingError: loss became nan at epoch 1\n"
    )
    assert _text_message(text) == "loss became nan at epoch 1"
    assert _text_message("") is None and UNKNOWN.startswith("trial failed")


MONAI_UNET = {
    "channels": [4, 4, 8, 8, 16],
    "strides": [1, 2, 2, 2],
    "num_res_units": 1,
    "norm": "batch",
    "dropout": 0.0,
}


def test_grid_on_a_monai_unet_takes_every_size_the_network_takes(tmp_path, monkeypatch):
    """Strides [1, 2, 2, 2] halve three times, so 24x24 images fit (model.depth 4 would ask for 16): the
    driver checks with lgeseg.models.halvings, as ``train`` does, and every network of the grid must fit."""
    import hpo.study
    from lgeseg.models import halvings

    monkeypatch.setattr(hpo.study, "start_ray", lambda *a, **k: (_ for _ in ()).throw(AssertionError("Ray")))
    data = write_dataset_dir(tmp_path / "data", size=(24, 24))
    monai = tiny(data, model={"architecture": "monai-unet", "depth": 4, "monai_unet": MONAI_UNET})
    assert halvings(monai["model"]) == 3
    assert hpo.study.describe_data(monai)["labels"]  # accepted
    both = tiny(
        data, model={"depth": 3, "monai_unet": MONAI_UNET}, grid={"architecture": ["matlab-unet", "monai-unet"]}
    )
    hpo.study.describe_data(both)  # depth 3 (8) and the MONAI U-Net (8) both take 24x24
    deep = tiny(
        data, model={"depth": 4, "monai_unet": MONAI_UNET}, grid={"architecture": ["matlab-unet", "monai-unet"]}
    )
    with pytest.raises(ConfigError, match=r"images are 24x24 \(HxW\) but model.depth 4 needs"):
        hpo.study.describe_data(deep)  # the MATLAB U-Net of depth 4 in the same grid does not
