"""One whole run (:func:`lgeseg.run.run`): outputs, selection, read-back and refusal of another config."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import yaml
from conftest import RUN_OUTPUTS

import lgeseg.run as run_mod
from lgeseg.config import config_hash, run_config
from lgeseg.data import load_dataset
from lgeseg.errors import TrainingError
from lgeseg.metrics import evaluate, json_safe
from lgeseg.png import read_mask
from lgeseg.run import run
from lgeseg.train import HISTORY_FIELDS, load_model, predict

HISTORY_HEADER = list(HISTORY_FIELDS)


# -------------------------------------------------------------------------------------------- run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """run() on the session's tiny dataset folder, 3 epochs, select=final; and its inputs."""
    from conftest import tiny_config, write_dataset_dir

    root = tmp_path_factory.mktemp("run")
    data = write_dataset_dir(root / "data", n_patients=8, slices=3, size=16)
    config = tiny_config(data=str(data), train__epochs=3, train__learning_rate=3e-3)
    out = root / "out"
    result = run(config, out)
    return config, out, result


def test_run_writes_all_outputs(finished_run):
    config, out, result = finished_run
    for name in RUN_OUTPUTS:
        assert (out / name).is_file(), name
    assert (out / "predictions").is_dir()
    with (out / "history.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == HISTORY_HEADER and [int(r[0]) for r in rows[1:]] == [1, 2, 3]
    assert yaml.safe_load((out / "config.yaml").read_text()) == run_config(config)


def _check_metrics_shape(metrics: dict, classes: list[str], n_images: int) -> None:
    assert set(metrics) == {
        "classes",
        "confusion_matrix",
        "normalized_confusion_matrix",
        "dataset",
        "class",
        "images",
        "field_metrics",  # lgeseg.field_metrics, beside MATLAB's
    }
    assert metrics["classes"] == classes
    c = len(classes)
    assert np.array(metrics["confusion_matrix"]).shape == (c, c)
    assert np.array(metrics["normalized_confusion_matrix"], dtype=float).shape == (c, c)
    assert list(metrics["dataset"]) == [
        "GlobalAccuracy",
        "MeanAccuracy",
        "MeanIoU",
        "WeightedIoU",
        "MeanBFScore",
        "BFScoreImages",
    ]
    assert list(metrics["class"]) == classes
    assert all(
        list(v) == ["Accuracy", "IoU", "MeanBFScore", "Dice", "BFScoreImages"] for v in metrics["class"].values()
    )
    assert len(metrics["images"]) == n_images
    assert all(list(img) == ["file", *metrics["dataset"]][:-1] + ["BFScoreClasses"] for img in metrics["images"])


def test_run_metrics_equal_evaluate_on_written_predictions(finished_run):
    config, out, result = finished_run
    dataset = load_dataset(config["data"])
    split = json.loads((out / "split.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    classes = list(dataset.labels)
    _check_metrics_shape(metrics, classes, len(split["test"]))
    assert metrics == result.test_metrics
    files = sorted(p.name for p in (out / "predictions").iterdir())
    assert files == sorted(split["test"])
    values = set()
    preds = []
    for name in split["test"]:
        from PIL import Image

        arr = np.asarray(Image.open(out / "predictions" / name))
        assert arr.dtype == np.uint8 and arr.shape == dataset.images.shape[1:]
        values |= set(np.unique(arr).tolist())
        preds.append(read_mask(out / "predictions" / name, dataset.labels))
    assert values <= set(dataset.labels.values())
    truth = np.stack([dataset.masks[dataset.files.index(f)] for f in split["test"]])
    expected = json_safe(evaluate(np.stack(preds), truth, classes, split["test"]))
    test = [dataset.files.index(f) for f in split["test"]]
    expected.update(_field_of(dataset, test, np.stack(preds)))
    assert metrics["confusion_matrix"] == expected["confusion_matrix"]
    _approx_equal(metrics, expected)
    # validation metrics: shape and file list
    val = json.loads((out / "val_metrics.json").read_text())
    _check_metrics_shape(val, classes, len(split["val"]))
    assert [img["file"] for img in val["images"]] == split["val"]


def _approx_equal(a, b, rel=1e-9) -> bool:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_approx_equal(a[k], b[k], rel) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_approx_equal(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-12)
        return True
    assert a == b
    return True


def test_run_split_is_patient_wise(finished_run):
    config, out, _ = finished_run
    dataset = load_dataset(config["data"])
    split = json.loads((out / "split.json").read_text())
    patient = dict(zip(dataset.files, dataset.patients))
    sets = [{patient[f] for f in split[k]} for k in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sorted(split["train"] + split["val"] + split["test"]) == dataset.files
    assert split["by"] == "patient"


def test_run_json(finished_run):
    config, out, result = finished_run
    info = json.loads((out / "run.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert info["finished"] is True
    assert info["seed"] == config["seed"]
    assert info["config_hash"] == config_hash(run_config(config))
    assert info["split_hash"] == split["hash"]
    assert info["device"] == "cpu"
    assert {"lgeseg", "torch", "numpy", "python"} <= set(info["versions"])
    assert info["versions"]["torch"] == torch.__version__
    assert info["epochs_run"] == 3 and info["selected_epoch"] == 3  # select=final
    assert info["l2"] == config["train"]["l2"]
    assert result.info == info


def _test_metrics_of(checkpoint, out, dataset) -> dict:
    """The metrics JSON of the network in ``checkpoint`` on the test split recorded in ``out/split.json``."""
    model, _ = load_model(checkpoint)
    test = [dataset.files.index(f) for f in json.loads((out / "split.json").read_text())["test"]]
    pred = predict(model, torch.from_numpy(dataset.images[test]).unsqueeze(1), "fp32").numpy()
    metrics = json_safe(evaluate(pred, dataset.masks[test], list(dataset.labels), [dataset.files[i] for i in test]))
    return {**metrics, **_field_of(dataset, test, pred)}


def _field_of(dataset, indices: list[int], pred: np.ndarray) -> dict:
    """The ``field_metrics`` entry a run writes (default ``metrics`` section) for these predictions."""
    from lgeseg.config import RUN_DEFAULTS
    from lgeseg.field_metrics import field_section, field_units

    units = field_units(dataset.root, dataset.files)
    section = field_section(
        RUN_DEFAULTS["metrics"],
        dataset.files,
        dataset.patients,
        units,
        indices,
        pred,
        dataset.masks[indices],
        list(dataset.labels),
    )
    return json_safe(section)


def test_run_final_selects_last_network(finished_run):
    config, out, result = finished_run
    _approx_equal(result.test_metrics, _test_metrics_of(out / "last.pt", out, load_dataset(config["data"])))


def test_run_best_val_selects_best_network(tmp_path, tiny_data_dir, tiny_run_config):
    config = tiny_run_config(
        data=str(tiny_data_dir), train__epochs=4, train__learning_rate=3e-3, train__select="best_val"
    )
    result = run(config, tmp_path)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert result.info["selected_epoch"] == result.info["best_epoch"] == best["epoch"]
    dataset = load_dataset(tiny_data_dir)
    _approx_equal(result.test_metrics, _test_metrics_of(tmp_path / "best.pt", tmp_path, dataset))
    model, _ = load_model(tmp_path / "best.pt")
    val = [dataset.files.index(f) for f in json.loads((tmp_path / "split.json").read_text())["val"]]
    val_pred = predict(model, torch.from_numpy(dataset.images[val]).unsqueeze(1), "fp32").numpy()
    assert result.val_metrics["dataset"]["GlobalAccuracy"] == pytest.approx(result.info["best_val_accuracy"])
    assert (val_pred == dataset.masks[val]).mean() == pytest.approx(result.info["best_val_accuracy"])


def test_run_into_finished_folder_does_not_retrain(finished_run, monkeypatch):
    config, out, result = finished_run
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}

    def no_fit(*args, **kwargs):
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(run_mod, "fit", no_fit)
    again = run(config, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == stamps
    assert again.test_metrics == result.test_metrics and again.history == result.history
    assert again.info == result.info


def test_refused_rerun_leaves_folder_consistent(tmp_path, tiny_data_dir, tiny_run_config):
    """Rerunning a folder with another config is refused and must not rewrite the folder's config/split."""
    config = tiny_run_config(data=str(tiny_data_dir), train__epochs=1)
    run(config, tmp_path)
    before = {name: (tmp_path / name).read_text() for name in ("config.yaml", "split.json", "run.json")}
    other = tiny_run_config(
        data=str(tiny_data_dir),
        train__epochs=1,
        train__l2=5e-3,
        split={"train": 0.5, "val": 0.25, "test": 0.25, "seed": 3},
    )
    with pytest.raises(TrainingError, match="another config") as refused:
        run(other, tmp_path)
    after = {name: (tmp_path / name).read_text() for name in before}
    assert after == before
    # the message names the first differing key (sorted, depth first) with both values
    stored = run_config(config)
    first = next(k for k in sorted(stored["split"]) if stored["split"][k] != run_config(other)["split"][k])
    was, now = stored["split"][first], run_config(other)["split"][first]
    assert f"another config (split.{first}: {was!r} there, {now!r} now)" in str(refused.value)


@pytest.mark.realdata
def test_run_on_real_data_smoke(real_data_dir, tmp_path, tiny_run_config):
    """One epoch of a tiny U-Net on a patient subset of the real EMIDEC export, through run()."""
    dataset = load_dataset(real_data_dir)
    keep_patients = sorted(set(dataset.patients))[:12]
    keep = [i for i, p in enumerate(dataset.patients) if p in keep_patients]
    from lgeseg.data import Dataset

    subset = Dataset(
        root=dataset.root,
        files=[dataset.files[i] for i in keep],
        images=dataset.images[keep],
        masks=dataset.masks[keep],
        labels=dataset.labels,
        patients=[dataset.patients[i] for i in keep],
        synthetic=False,
    )
    config = tiny_run_config(data=str(real_data_dir), train__epochs=1, train__batch_size=8, train__learning_rate=1e-3)
    result = run(config, tmp_path, dataset=subset)
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(result.history) == 1 and math.isfinite(result.history[0]["train_loss"])
    assert list(result.test_metrics["classes"]) == list(dataset.labels)
    assert len(list((tmp_path / "predictions").iterdir())) == len(split["test"])
    assert result.info["data_dir"] == str(dataset.root) and result.info["synthetic"] is False
