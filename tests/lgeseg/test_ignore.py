"""Masks with an ignore value (unlabelled pixels): read, trained on, and left out of every metric."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import trial_record
from PIL import Image

from lgeseg.data import IGNORE_INDEX, load_dataset, read_mask
from lgeseg.errors import DataError
from lgeseg.metrics import evaluate

U = IGNORE_INDEX
#: One 2x4 image, classes a=0 and b=1; three truth pixels unlabelled.
TRUTH = np.array([[[0, 0, U, 1], [0, U, 1, 1]]], np.uint8)
PRED = np.array([[[0, 1, 1, 1], [1, 0, 1, 0]]], np.uint8)


def test_metrics_leave_out_unlabelled_truth_pixels():
    """Hand-computed on the 6 labelled pixels: confusion [[1, 2], [1, 2]] (rows truth a, b)."""
    result = evaluate(PRED, TRUTH, ["a", "b"], ["x.png"])
    assert result["confusion_matrix"] == [[1, 2], [1, 2]]
    d, c = result["dataset"], result["class"]
    assert d["GlobalAccuracy"] == pytest.approx(3 / 6)
    assert c["a"]["Accuracy"] == pytest.approx(1 / 3) and c["b"]["Accuracy"] == pytest.approx(2 / 3)
    assert c["a"]["IoU"] == pytest.approx(1 / 4) and c["b"]["IoU"] == pytest.approx(2 / 5)
    assert d["MeanIoU"] == pytest.approx(0.325) and d["WeightedIoU"] == pytest.approx((3 * 0.25 + 3 * 0.4) / 6)
    assert c["a"]["Dice"] == pytest.approx(2 / 5) and c["b"]["Dice"] == pytest.approx(4 / 7)

    # BF (theta < 1 px: exact matches; every pixel of a 2x4 image is on its edge, so all are boundary).
    # a: prediction {(0,0), (1,3)} ((1,1) is unlabelled), truth {(0,0), (0,1), (1,0)}: P 1/2, R 1/3.
    # b: prediction {(0,1), (0,3), (1,0), (1,2)} ((0,2) is unlabelled), truth {(0,3), (1,2), (1,3)}: P 2/4, R 2/3.
    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r)

    assert c["a"]["MeanBFScore"] == pytest.approx(f1(1 / 2, 1 / 3))
    assert c["b"]["MeanBFScore"] == pytest.approx(f1(2 / 4, 2 / 3))
    assert d["MeanBFScore"] == pytest.approx((f1(1 / 2, 1 / 3) + f1(2 / 4, 2 / 3)) / 2)


def test_an_all_unlabelled_image_has_no_metrics():
    truth = np.full((1, 4, 4), U, np.uint8)
    result = evaluate(np.zeros((1, 4, 4), np.uint8), truth, ["a", "b"], ["x.png"])
    assert result["confusion_matrix"] == [[0, 0], [0, 0]]
    assert math.isnan(result["images"][0]["GlobalAccuracy"]) and math.isnan(result["images"][0]["MeanBFScore"])
    assert result["dataset"]["BFScoreImages"] == 0


def _write(folder, name, values):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, np.uint8), mode="L").save(folder / name)


def test_read_mask_maps_the_ignore_value(tmp_path):
    _write(tmp_path, "m.png", [[0, 128, 255, 7]])
    labels = {"r1": 255, "r2": 128, "r3": 0}
    assert read_mask(tmp_path / "m.png", labels, ignore=7).tolist() == [[2, 1, 0, U]]
    with pytest.raises(DataError, match=r"m\.png: mask values outside the label map .*: 7 \(1 px\)"):
        read_mask(tmp_path / "m.png", labels)


@pytest.mark.parametrize(
    ("ignore", "message"),
    [
        (
            128,
            (
                "'ignore' is 128, which is also the value of label 'region2'; the ignore value must differ from "
                "every label"
            ),
        ),
        (300, "'ignore' must be a pixel value 0-255, got 300"),
        ("x", "'ignore' must be a pixel value 0-255, got 'x'"),
        (True, "'ignore' must be a pixel value 0-255, got True"),
    ],
)
def test_bad_ignore_value_is_one_line(make_dataset_dir, ignore, message):
    root = make_dataset_dir()
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"region1": 255, "region2": 128, "region3": 0}, "ignore": ignore})
    )
    with pytest.raises(DataError) as error:
        load_dataset(root)
    assert str(error.value) == f"{root / 'dataset.json'}: {message}"


def _with_unlabelled(root, value=7):
    """Mark the top-left 3x3 corner of every mask unlabelled with ``value``."""
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"region1": 255, "region2": 128, "region3": 0}, "ignore": value})
    )
    for path in (root / "masks").glob("*.png"):
        arr = np.asarray(Image.open(path)).copy()
        arr[:3, :3] = value
        Image.fromarray(arr, mode="L").save(path)
    return root


def test_training_and_metrics_leave_out_unlabelled_pixels(make_dataset_dir, tiny_run_config, tmp_path):
    from lgeseg.run import run

    root = _with_unlabelled(make_dataset_dir())
    dataset = load_dataset(root)
    assert dataset.ignore == 7 and (dataset.masks[:, :3, :3] == U).all() and (dataset.masks[:, 3:] != U).all()
    out = tmp_path / "run"
    result = run(tiny_run_config(data=str(root), train__epochs=1), out)
    test_files = json.loads((out / "split.json").read_text())["test"]
    assert np.asarray(result.test_metrics["confusion_matrix"]).sum() == len(test_files) * (16 * 16 - 9)
    for name in test_files:  # a predicted mask never holds the ignore value
        assert set(np.unique(np.asarray(Image.open(out / "predictions" / name)))) <= {0, 128, 255}
    # Validation accuracy counts labelled pixels only: it equals the validation GlobalAccuracy.
    assert result.history[-1]["val_accuracy"] == pytest.approx(result.val_metrics["dataset"]["GlobalAccuracy"])


def test_validation_loss_and_accuracy_skip_ignored_pixels(make_dataset):
    import torch.nn.functional as F

    from lgeseg.train import _validate, predict
    from lgeseg.unet import UNet

    dataset = make_dataset(n=4)
    masks = torch.from_numpy(dataset.masks.copy())
    masks[:, :5] = U
    images = torch.from_numpy(dataset.images).unsqueeze(1)
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, image_size=(16, 16))
    loss, accuracy = _validate(model, images, masks, "fp32")
    pred = predict(model, images, "fp32")  # as _validate above (auto may be bf16 on this CPU)
    labelled = masks != U
    assert accuracy == pytest.approx((pred == masks)[labelled].double().mean().item())
    expected = F.cross_entropy(model(images), masks.long(), ignore_index=U, reduction="sum") / masks.numel()
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_evaluate_cli_ignore_option(tmp_path, capsys, one_line_error):
    from hpo.run import main

    values = np.array([255, 0, 7], np.uint8)  # a, b, ignore
    truth = np.where(TRUTH[0] == U, 2, TRUTH[0])
    _write(tmp_path / "truth", "x.png", values[truth])
    _write(tmp_path / "pred", "x.png", values[PRED[0]])
    argv = [
        "evaluate",
        "--pred",
        str(tmp_path / "pred"),
        "--truth",
        str(tmp_path / "truth"),
        "--labels",
        "a=255,b=0",
        "--json",
        str(tmp_path / "m.json"),
    ]
    assert "mask values outside the label map" in one_line_error(argv)
    assert main([*argv, "--ignore", "7"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["confusion_matrix"] == [[1, 2], [1, 2]]
    assert one_line_error([*argv, "--ignore", "0"]) == (
        "error: --ignore is 0, which is also the value of label 'b'; the ignore value must differ from every label"
    )
    _write(tmp_path / "pred", "x.png", values[np.where(TRUTH[0] == U, 2, PRED[0])])
    assert "pred/x.png: mask values outside the label map" in one_line_error([*argv, "--ignore", "7"])


def test_difference_map_and_figure2_show_unlabelled_pixels(make_dataset_dir, tmp_path):
    """Unlabelled manual pixels are no error in Figure 2: shown with their own value, never as a difference."""
    from dashboards.load import StudyRecord
    from dashboards.masks import difference_map, figure2

    assert difference_map(PRED[0], TRUTH[0]).tolist() == [[0, 1, 0, 0], [1, 0, 0, 2]]
    root = _with_unlabelled(make_dataset_dir())
    preds = tmp_path / "trial" / "predictions"
    preds.mkdir(parents=True)
    files = ["p00_s0.png", "p01_s0.png", "p02_s0.png"]
    for name in files:  # the network predicts class region3 (value 0) where the truth is unlabelled
        arr = np.asarray(Image.open(root / "masks" / name)).copy()
        arr[arr == 7] = 0
        Image.fromarray(arr, mode="L").save(preds / name)
    metrics = {
        "dataset": {},
        "class": {},
        "images": [{"file": f, "MeanIoU": 0.5 + i / 10} for i, f in enumerate(files)],
    }
    trial = trial_record(0, curve={}, test_metrics=metrics, trial_dir=tmp_path / "trial")
    record = StudyRecord(
        name="s",
        storage="sqlite:///x.db",
        config={},
        out_dir=None,
        data_dir=root,
        labels={"region1": 255, "region2": 128, "region3": 0},
        synthetic=False,
        trials=[trial],
    )
    fig = figure2(record)
    manual = [t for t in fig.data if (t.meta or {}).get("source") == "manual"]
    differences = [t for t in fig.data if (t.meta or {}).get("kind") == "difference"]
    assert len(manual) == 3 and len(differences) == 3
    for trace in manual:
        assert (np.asarray(trace.z)[:3, :3] == 7).all()
    for trace in differences:
        assert (np.asarray(trace.z) == 0).all()  # equal elsewhere, unlabelled corner not a difference
