"""Metrics against hand-computed values and against a plain per-image reference implementation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from lgeseg.metrics import (
    bf_theta,
    bfscore,
    confusion_matrix,
    evaluate,
    format_tables,
    normalized_confusion_matrix,
    write_json,
)

nan = float("nan")


def assert_metrics(actual: dict, expected: dict) -> None:
    """Every key of ``expected`` matches ``actual`` to 1e-12, NaN matching NaN only."""
    for key, want in expected.items():
        got = actual[key]
        if math.isnan(want):
            assert math.isnan(got), f"{key}: expected NaN, got {got}"
        else:
            assert got == pytest.approx(want, abs=1e-12), f"{key}: expected {want}, got {got}"


def halves(left: int, right: int, size: int = 4) -> np.ndarray:
    """A size x size image whose left half is class ``left`` and right half class ``right``."""
    img = np.full((size, size), right, dtype=np.uint8)
    img[:, : size // 2] = left
    return img


# --- confusion matrix --------------------------------------------------------------------------------


def test_confusion_matrix_tiny() -> None:
    pred = np.array([[0, 1], [1, 2]])
    truth = np.array([[0, 1], [2, 2]])
    # (truth, pred) pairs: (0,0) (1,1) (2,1) (2,2); class 3 never occurs.
    cm = confusion_matrix(pred, truth, 4)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    # Rows divided by their sums (1, 1, 2); the empty row is divided by eps and stays 0, not NaN.
    assert normalized_confusion_matrix(cm).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 0]]


def test_confusion_matrix_rows_are_truth() -> None:
    # Two true class-0 pixels predicted as 1: the count goes to row 0 (truth), column 1 (prediction).
    cm = confusion_matrix(np.array([1, 1, 1]), np.array([0, 0, 1]), 2)
    assert cm.tolist() == [[0, 2], [0, 1]]


def test_confusion_matrix_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


# --- BF score -------------------------------------------------------------------------------------------


def test_theta_at_128() -> None:
    # 0.0075 * sqrt(128^2 + 128^2) = 0.0075 * 181.019... = 1.357645...
    assert bf_theta(128, 128) == pytest.approx(1.3576450198781713)


def single_pixel(y: int, x: int, size: int = 128) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y, x] = True
    return mask


def test_bf_one_pixel_shift_distance_one_matches() -> None:
    # A one-pixel object is its own boundary; distance 1 < theta 1.3576 -> P = R = 1.
    assert bfscore(single_pixel(60, 60), single_pixel(60, 61)) == 1.0
    assert bfscore(single_pixel(60, 60), single_pixel(61, 60)) == 1.0


def test_bf_diagonal_shift_does_not_match() -> None:
    # Distance sqrt(2) = 1.414 > theta 1.3576 -> P = R = 0 -> score 0 (both boundaries exist).
    assert bfscore(single_pixel(60, 60), single_pixel(61, 61)) == 0.0


def test_bf_square_shifted_one_column() -> None:
    # 40x40 square shifted right by 1: every boundary point of either has one of the other at distance 1.
    truth = np.zeros((128, 128), dtype=bool)
    truth[40:80, 40:80] = True
    pred = np.roll(truth, 1, axis=1)
    assert bfscore(pred, truth) == 1.0
    # ... but with theta = 1 (strictly less than) no shifted side point matches any more.
    assert bfscore(pred, truth, theta=1.0) < 1.0


def test_bf_object_touching_border() -> None:
    # 5x5 image, theta 0.5 so only coinciding points match.
    # truth: 3x3 block in the top-left corner; its boundary, edge pixels counting, is the 8 pixels around (1,1).
    # pred: 3x2 block rows 0-2, cols 0-1; all its 6 pixels are boundary (col 0 and row 0 lie on the edge).
    # Coinciding: (0,0) (0,1) (1,0) (2,0) (2,1) = 5 -> P = 5/6, R = 5/8
    # BF = 2 * 5/6 * 5/8 / (5/6 + 5/8) = (50/48) / (35/24) = 5/7.
    truth = np.zeros((5, 5), dtype=bool)
    truth[:3, :3] = True
    pred = np.zeros((5, 5), dtype=bool)
    pred[:3, :2] = True
    assert bfscore(pred, truth, theta=0.5) == pytest.approx(5 / 7)
    # A mask filling the whole image has the image edge as boundary, so it is not NaN.
    full = np.ones((5, 5), dtype=bool)
    assert bfscore(full, full) == 1.0


def test_bf_nan_when_a_boundary_is_empty() -> None:
    empty = np.zeros((8, 8), dtype=bool)
    assert math.isnan(bfscore(empty, single_pixel(3, 3, 8)))
    assert math.isnan(bfscore(single_pixel(3, 3, 8), empty))
    assert math.isnan(bfscore(empty, empty))


# --- evaluate: hand-computed cases ----------------------------------------------------------------------


def test_perfect_prediction() -> None:
    truth = np.zeros((2, 8, 8), dtype=np.uint8)
    truth[0, 2:5, 2:6] = 1
    truth[0, 6:, :] = 2
    truth[1, :, 4:] = 1
    truth[1, 0, 0] = 2
    result = evaluate(truth.copy(), truth, ["a", "b", "c"], ["x.png", "y.png"])
    for name in "abc":
        assert_metrics(result["class"][name], {"Accuracy": 1, "IoU": 1, "MeanBFScore": 1, "Dice": 1})
    ones = dict.fromkeys(["GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore"], 1.0)
    assert_metrics(result["dataset"], ones)
    assert_metrics(result["images"][0], ones)
    assert [image["file"] for image in result["images"]] == ["x.png", "y.png"]
    counts = np.bincount(truth.ravel(), minlength=3)
    assert result["confusion_matrix"] == np.diag(counts).tolist()
    assert result["normalized_confusion_matrix"] == np.eye(3).tolist()


def test_class_missing_from_prediction() -> None:
    # 4x4 (theta = 0.0075 * sqrt(32) = 0.042: only coinciding boundary points match).
    # truth: left half b (8 px), right half a (8 px); pred: all a.
    truth = halves(1, 0)[None]
    pred = np.zeros_like(truth)
    result = evaluate(pred, truth, ["a", "b"], ["m.png"])
    # Rows truth: a -> 8 predicted a; b -> 8 predicted a.
    assert result["confusion_matrix"] == [[8, 0], [8, 0]]
    assert result["normalized_confusion_matrix"] == [[1, 0], [1, 0]]
    # BF of a: pred boundary = the 12 edge pixels; truth boundary = all 8 pixels of cols 2-3.
    # Coinciding: rows 0 and 3 of col 2, all of col 3 = 6 -> P = 6/12, R = 6/8, BF = 2*.5*.75/1.25 = 0.6.
    # b: no predicted boundary -> NaN.
    assert_metrics(
        result["class"]["a"], {"Accuracy": 8 / 8, "IoU": 8 / (8 + 16 - 8), "MeanBFScore": 0.6, "Dice": 2 * 8 / (16 + 8)}
    )
    assert_metrics(result["class"]["b"], {"Accuracy": 0 / 8, "IoU": 0 / 8, "MeanBFScore": nan, "Dice": 0.0})
    expected = {
        "GlobalAccuracy": 8 / 16,
        "MeanAccuracy": (1 + 0) / 2,
        "MeanIoU": (0.5 + 0) / 2,
        "WeightedIoU": (0.5 * 8 + 0 * 8) / 16,
        "MeanBFScore": 0.6,
    }
    assert_metrics(result["dataset"], expected)
    assert_metrics(result["images"][0], expected)


def test_class_missing_from_truth() -> None:
    # Mirror of the previous case: truth all a, pred left half b.
    pred = halves(1, 0)[None]
    truth = np.zeros_like(pred)
    result = evaluate(pred, truth, ["a", "b"], ["m.png"])
    assert result["confusion_matrix"] == [[8, 8], [0, 0]]
    assert result["normalized_confusion_matrix"] == [[0.5, 0.5], [0, 0]]
    # BF of a: P = 6/8, R = 6/12 -> 0.6 again.  b: no true pixels -> Accuracy NaN; IoU 0/(0+8) = 0.
    assert_metrics(
        result["class"]["a"],
        {"Accuracy": 8 / 16, "IoU": 8 / (16 + 8 - 8), "MeanBFScore": 0.6, "Dice": 2 * 8 / (8 + 16)},
    )
    assert_metrics(result["class"]["b"], {"Accuracy": nan, "IoU": 0.0, "MeanBFScore": nan, "Dice": 0.0})
    # MeanAccuracy keeps the NaN; WeightedIoU = (0.5 * 16 + 0 * 0) / 16.
    expected = {"GlobalAccuracy": 0.5, "MeanAccuracy": nan, "MeanIoU": 0.25, "WeightedIoU": 0.5, "MeanBFScore": 0.6}
    assert_metrics(result["dataset"], expected)
    assert_metrics(result["images"][0], expected)


def test_class_missing_from_both() -> None:
    # Perfect prediction of halves a | b; class c in neither mask.
    truth = halves(0, 1)[None]
    result = evaluate(truth.copy(), truth, ["a", "b", "c"], ["m.png"])
    assert_metrics(result["class"]["c"], {"Accuracy": nan, "IoU": nan, "MeanBFScore": nan, "Dice": nan})
    assert_metrics(result["class"]["a"], {"Accuracy": 1, "IoU": 1, "MeanBFScore": 1, "Dice": 1})
    # Means keep NaN; WeightedIoU = (1*8 + 1*8 + dropped) / 16 = 1; BF mean ignores c.
    expected = {"GlobalAccuracy": 1, "MeanAccuracy": nan, "MeanIoU": nan, "WeightedIoU": 1, "MeanBFScore": 1}
    assert_metrics(result["dataset"], expected)
    assert_metrics(result["images"][0], expected)
    assert result["normalized_confusion_matrix"][2] == [0, 0, 0]


def test_dataset_where_a_class_never_occurs() -> None:
    # Image 1: truth b | a, pred all a (the "missing from prediction" case).  Image 2: truth = pred = all a.
    # Class c occurs nowhere.
    truth = np.stack([halves(1, 0), np.zeros((4, 4), np.uint8)])
    pred = np.zeros_like(truth)
    result = evaluate(pred, truth, ["a", "b", "c"], ["1.png", "2.png"])
    # Truth a: 8 + 16 = 24 px, all predicted a; truth b: 8 px predicted a.
    assert result["confusion_matrix"] == [[24, 0, 0], [8, 0, 0], [0, 0, 0]]
    # BF of a: image 1 0.6 (see above), image 2 1 (identical full-image masks) -> mean 0.8.
    assert_metrics(
        result["class"]["a"],
        {"Accuracy": 1, "IoU": 24 / (24 + 32 - 24), "MeanBFScore": 0.8, "Dice": 2 * 24 / (24 + 32)},
    )
    assert_metrics(result["class"]["b"], {"Accuracy": 0, "IoU": 0, "MeanBFScore": nan, "Dice": 0})
    assert_metrics(result["class"]["c"], {"Accuracy": nan, "IoU": nan, "MeanBFScore": nan, "Dice": nan})
    # WeightedIoU = (0.75 * 24 + 0 * 8) / 32 = 0.5625, finite although MeanIoU is NaN.
    assert_metrics(
        result["dataset"],
        {
            "GlobalAccuracy": 24 / 32,
            "MeanAccuracy": nan,
            "MeanIoU": nan,
            "WeightedIoU": 0.5625,
            "MeanBFScore": (0.6 + 1) / 2,
        },
    )
    assert_metrics(
        result["images"][0],
        {"GlobalAccuracy": 0.5, "MeanAccuracy": nan, "MeanIoU": nan, "WeightedIoU": 0.25, "MeanBFScore": 0.6},
    )
    # Image 2: b and c in neither mask -> NaN class values, kept by the means; WeightedIoU = 1 * 16 / 16.
    assert_metrics(
        result["images"][1],
        {"GlobalAccuracy": 1, "MeanAccuracy": nan, "MeanIoU": nan, "WeightedIoU": 1, "MeanBFScore": 1},
    )


def test_image_mean_bf_ignores_images_without_any_bf() -> None:
    # Image 1: truth all a, pred all b -> BF(a) NaN (no predicted a), BF(b) NaN (no true b): image BF NaN.
    # Image 2: perfect halves -> BF 1.  The data-set mean skips image 1: MeanBFScore = 1, not NaN.
    truth = np.stack([np.zeros((4, 4), np.uint8), halves(0, 1)])
    pred = np.stack([np.ones((4, 4), np.uint8), halves(0, 1)])
    result = evaluate(pred, truth, ["a", "b"], ["1.png", "2.png"])
    assert math.isnan(result["images"][0]["MeanBFScore"])
    assert result["images"][1]["MeanBFScore"] == 1.0
    assert result["dataset"]["MeanBFScore"] == 1.0
    assert result["class"]["a"]["MeanBFScore"] == 1.0


# --- JSON and tables ------------------------------------------------------------------------------------


def test_write_json_null_for_nan(tmp_path) -> None:
    truth = halves(0, 1)[None]
    result = evaluate(truth.copy(), truth, ["a", "b", "c"], ["m.png"])
    path = tmp_path / "out" / "metrics.json"
    write_json(result, path)
    text = path.read_text()
    assert "NaN" not in text
    loaded = json.loads(text)  # strict enough: would parse NaN, hence the check above
    assert loaded["class"]["c"] == {
        "Accuracy": None,
        "IoU": None,
        "MeanBFScore": None,
        "Dice": None,
        "BFScoreImages": 0,
    }
    assert loaded["dataset"]["MeanAccuracy"] is None
    assert loaded["dataset"]["GlobalAccuracy"] == 1.0
    assert list(loaded) == ["classes", "confusion_matrix", "normalized_confusion_matrix", "dataset", "class", "images"]
    assert loaded["images"][0] == {
        "file": "m.png",
        "GlobalAccuracy": 1.0,
        "MeanAccuracy": None,
        "MeanIoU": None,
        "WeightedIoU": 1.0,
        "MeanBFScore": 1.0,
        "BFScoreClasses": 2,
    }
    assert loaded["dataset"]["BFScoreImages"] == 1


def test_format_tables() -> None:
    truth = halves(0, 1)[None]
    text = format_tables(evaluate(truth.copy(), truth, ["a", "b", "c"], ["m.png"]))
    lines = text.splitlines()
    assert lines[0].split() == ["Class", "Accuracy", "IoU", "MeanBFScore", "Dice", "BF", "images"]
    assert lines[1].split() == ["a", "1.0000", "1.0000", "1.0000", "1.0000", "1/1"]
    assert lines[3].split() == ["c", "NaN", "NaN", "NaN", "NaN", "0/1"]
    assert "GlobalAccuracy" in lines[5] and lines[6].split()[-6:] == ["1.0000", "NaN", "NaN", "1.0000", "1.0000", "1/1"]
    assert lines[8] == (
        "MeanBFScore skips images where a class has no boundary in the prediction or the truth "
        "(up to 1 of 1 images left out; see BF images)"
    )
    # Aligned: every row of the class table has the same length as its header.
    assert len({len(line) for line in lines[:4]}) == 1


# --- evaluate against a plain per-image reference -------------------------------------------------------


def reference_boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels removed by a 4-connected erosion with everything outside the image counted as background."""
    cross = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def reference_bf(pred: np.ndarray, truth: np.ndarray, theta: float) -> float:
    """BF score by Euclidean distance transforms of one image, one class."""
    pb, tb = reference_boundary(pred), reference_boundary(truth)
    if not pb.any() or not tb.any():
        return nan
    precision = (ndimage.distance_transform_edt(~tb)[pb] < theta).mean()
    recall = (ndimage.distance_transform_edt(~pb)[tb] < theta).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def reference_evaluate(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict:
    """The definitions written as plain loops over images and classes."""
    n, h, w = pred.shape
    theta = 0.0075 * math.hypot(h, w)
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    bf = np.full((n, num_classes), nan)
    images = []
    for i in range(n):
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        for t in range(num_classes):
            for p in range(num_classes):
                cm[t, p] = np.sum((truth[i] == t) & (pred[i] == p))
        total += cm
        acc, iou, weighted = [], [], 0.0
        for c in range(num_classes):
            p, t = pred[i] == c, truth[i] == c
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
            acc.append((p & t).sum() / t.sum() if t.sum() else nan)
            iou.append((p & t).sum() / (p | t).sum() if (p | t).sum() else nan)
            if not math.isnan(iou[-1]):
                weighted += iou[-1] * t.sum()
            bf[i, c] = reference_bf(p, t, theta)
        valid_bf = [b for b in bf[i] if not math.isnan(b)]
        images.append(
            {
                "GlobalAccuracy": np.trace(cm) / cm.sum(),
                "MeanAccuracy": float(np.mean(acc)),
                "MeanIoU": float(np.mean(iou)),
                "WeightedIoU": weighted / (h * w),
                "MeanBFScore": float(np.mean(valid_bf)) if valid_bf else nan,
            }
        )
    classes = []
    for c in range(num_classes):
        tp, t_px, p_px = total[c, c], total[c].sum(), total[:, c].sum()
        valid = [b for b in bf[:, c] if not math.isnan(b)]
        classes.append(
            {
                "Accuracy": tp / t_px if t_px else nan,
                "IoU": inter[c] / union[c] if union[c] else nan,
                "MeanBFScore": float(np.mean(valid)) if valid else nan,
                "Dice": 2 * tp / (t_px + p_px) if t_px + p_px else nan,
            }
        )
    iou = [m["IoU"] for m in classes]
    image_bf = [m["MeanBFScore"] for m in images if not math.isnan(m["MeanBFScore"])]
    dataset = {
        "GlobalAccuracy": np.trace(total) / total.sum(),
        "MeanAccuracy": float(np.mean([m["Accuracy"] for m in classes])),
        "MeanIoU": float(np.mean(iou)),
        "WeightedIoU": sum(v * total[c].sum() for c, v in enumerate(iou) if not math.isnan(v)) / total.sum(),
        "MeanBFScore": float(np.mean(image_bf)) if image_bf else nan,
    }
    return {"confusion_matrix": total.tolist(), "dataset": dataset, "class": classes, "images": images}


def blobby_masks(rng: np.random.Generator, n: int, h: int, w: int, num_classes: int) -> np.ndarray:
    """Smooth random class regions, some images lacking classes, some with speckle noise."""
    field = ndimage.gaussian_filter(rng.normal(size=(n, h, w)), sigma=(0, 3, 3))
    cuts = np.quantile(field, np.sort(rng.uniform(0, 1, size=num_classes - 1)))
    masks = np.digitize(field, cuts).astype(np.uint8)
    masks[rng.random(masks.shape) < 0.01] = rng.integers(0, num_classes)
    masks[0] = 0  # an image with one class only
    return masks


@pytest.mark.parametrize(("n", "h", "w", "num_classes"), [(12, 32, 32, 3), (6, 128, 128, 3), (4, 200, 310, 4)])
def test_evaluate_matches_reference(n: int, h: int, w: int, num_classes: int) -> None:
    rng = np.random.default_rng(n * h + w)
    truth = blobby_masks(rng, n, h, w, num_classes)
    pred = truth.copy()
    # Perturb: shift some images by a pixel or two, relabel some pixels, wipe a class from one image.
    for i in range(1, n):
        pred[i] = np.roll(pred[i], tuple(rng.integers(-2, 3, size=2)), axis=(0, 1))
    noise = rng.random(pred.shape) < 0.02
    pred[noise] = rng.integers(0, num_classes, size=noise.sum())
    pred[1][pred[1] == 1] = 0
    names = [chr(ord("a") + c) for c in range(num_classes)]
    ours = evaluate(pred, truth, names, [f"{i}.png" for i in range(n)])
    ref = reference_evaluate(pred, truth, num_classes)
    assert ours["confusion_matrix"] == ref["confusion_matrix"]
    assert_metrics(ours["dataset"], ref["dataset"])
    for c, name in enumerate(names):
        assert_metrics(ours["class"][name], ref["class"][c])
    for mine, theirs in zip(ours["images"], ref["images"]):
        assert_metrics(mine, theirs)
    # The perturbation must have left BF values strictly between 0 and 1, so matching really is exercised.
    bf = np.array([ours["class"][name]["MeanBFScore"] for name in names])
    assert np.nanmax(bf) < 1 and np.nanmin(bf) > 0


def test_bfscore_matches_reference_for_random_theta() -> None:
    rng = np.random.default_rng(7)
    masks = blobby_masks(rng, 10, 48, 40, 2).astype(bool)
    for i in range(1, 10):
        pred = np.roll(masks[i], tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
        theta = float(rng.uniform(0.5, 4.0))
        assert bfscore(pred, masks[i], theta) == pytest.approx(reference_bf(pred, masks[i], theta), abs=1e-12)


def test_trivial_baseline_hand_computed():
    # 2 images of 2x2, classes a, b, c; truth pixel counts a=5, b=2, c=1. Predicting 'a' everywhere:
    # GlobalAccuracy 5/8; class Accuracy (1, 0, 0) -> MeanAccuracy 1/3; IoU a = 5/8, b = c = 0 -> MeanIoU 5/24;
    # WeightedIoU = (5 * 5/8) / 8 = 25/64.
    from lgeseg.metrics import majority_class, trivial_baseline

    truth = np.array([[[0, 0], [1, 2]], [[0, 0], [0, 1]]], dtype=np.uint8)
    assert majority_class(truth, 3) == 0
    base = trivial_baseline(truth, ["a", "b", "c"], 0)
    assert base["majority_class"] == "a"
    assert base["GlobalAccuracy"] == pytest.approx(5 / 8)
    assert base["MeanAccuracy"] == pytest.approx(1 / 3)
    assert base["MeanIoU"] == pytest.approx(5 / 24)
    assert base["WeightedIoU"] == pytest.approx(25 / 64)
    with pytest.raises(ValueError, match="not an index"):
        trivial_baseline(truth, ["a", "b", "c"], 3)


def test_clearly_above_baseline_needs_a_tenth_of_the_headroom():
    from lgeseg.metrics import LEARN_MARGIN, clearly_above_baseline

    # baseline 0.3: headroom 0.7, so a network needs MeanIoU >= 0.3 + 0.1 * 0.7 = 0.37
    assert LEARN_MARGIN == 0.1
    assert clearly_above_baseline(0.38, 0.3) is True
    assert clearly_above_baseline(0.36, 0.3) is False
    assert clearly_above_baseline(0.2, 0.3) is False
    # baseline 0.9: headroom 0.1, so 0.91 is enough and 0.905 is not
    assert clearly_above_baseline(0.91, 0.9) is True and clearly_above_baseline(0.905, 0.9) is False
    assert clearly_above_baseline(None, 0.3) is None and clearly_above_baseline(math.nan, 0.3) is None
    assert clearly_above_baseline(0.5, None) is None
