"""Segmentation metrics equal to MATLAB's ``evaluateSemanticSegmentation``.

Everything is computed on the whole ``(N, H, W)`` stack at once, so that evaluating the study's 717 test
masks takes a fraction of a second instead of a per-image, per-class Python loop:

* per-image confusion matrices come from one :func:`numpy.bincount` over ``(image, truth, pred)`` codes,
  and every count-based metric (accuracy, IoU, Dice, global accuracy) is derived from them;
* boundaries come from array shifts on the padded stack;
* BF-score matching ("is there a point of the other boundary closer than theta?") is a dilation of the
  other boundary by the disk of radius theta.  Boundary points lie on the integer grid, so the disk is the
  finite set of integer offsets ``(dy, dx)`` with ``dy**2 + dx**2 < theta**2``; OR-ing the shifted
  boundary over those offsets is exactly "Euclidean distance to the nearest point < theta", image by image,
  with nothing leaking between images.

Conventions (NaN handling) follow the study's definitions; see :func:`evaluate`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .png import IGNORE_INDEX
from .tables import fmt, format_table

#: Matching tolerance of the BF score as a fraction of the image diagonal (MATLAB's default 0.75 %).
BF_THETA_FRACTION = 0.0075

#: Data-set / per-image metric names, in MATLAB's column order.
DATASET_METRICS = ("GlobalAccuracy", "MeanAccuracy", "MeanIoU", "WeightedIoU", "MeanBFScore")
#: Per-class metric names, in MATLAB's column order (plus Dice).
CLASS_METRICS = ("Accuracy", "IoU", "MeanBFScore", "Dice")


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` as float64 with NaN where ``den`` is 0 (and no warnings)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Mean ignoring NaN; NaN (without a warning) where every value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    return _divide(np.where(valid, values, 0.0).sum(axis=axis), valid.sum(axis=axis))


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    return pred, truth


def _image_confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image confusion matrices, int64 ``(N, C, C)``, rows = truth, columns = prediction.

    Pixels whose truth is :data:`IGNORE_INDEX` are counted nowhere (MATLAB leaves out undefined
    ground-truth pixels); a prediction is always a class index.
    """
    n = pred.shape[0]
    pred2 = pred.reshape(n, -1)
    truth2 = truth.reshape(n, -1)
    ignored = truth2 == IGNORE_INDEX
    for name, arr in (("prediction", pred2), ("truth", truth2[~ignored])):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} has class indices outside 0..{num_classes - 1}")
    # A small integer type keeps the code array small; bincount needs non-negative integers only.
    cells = n * num_classes * num_classes
    code_type = np.int32 if cells < 2**31 - 1 else np.int64
    codes = truth2.astype(code_type) * num_classes + pred2.astype(code_type)
    codes += (np.arange(n, dtype=code_type) * (num_classes * num_classes))[:, None]
    codes[ignored] = cells  # one extra bin, dropped below
    counts = np.bincount(codes.ravel(), minlength=cells + 1)[:cells]
    return counts.astype(np.int64).reshape(n, num_classes, num_classes)


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix (int64 ``(C, C)``, rows = truth class, columns = predicted class) of any-shape arrays."""
    pred, truth = _check_pair(pred, truth)
    return _image_confusion(pred.reshape(1, -1), truth.reshape(1, -1), num_classes)[0]


def normalized_confusion_matrix(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by ``max(eps, row sum)``: rows of absent classes stay all zero instead of NaN."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.finfo(np.float64).eps, matrix.sum(axis=1, keepdims=True))


def bf_theta(height: int, width: int) -> float:
    """BF-score distance threshold of an image: 0.75 % of its diagonal."""
    return BF_THETA_FRACTION * math.hypot(height, width)


def _boundaries(masks: np.ndarray) -> np.ndarray:
    """Boundary of each bool ``(N, H, W)`` mask: pixels in the mask with a 4-neighbour outside it.

    The image edge counts as outside, so mask pixels on the edge are boundary.
    """
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), constant_values=False)
    interior = (padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1]) & (padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
    return masks & ~interior


def _disk_offsets(theta: float) -> list[tuple[int, int]]:
    """Integer offsets strictly closer than ``theta`` to the origin (the origin included)."""
    reach = math.ceil(theta)
    return [
        (dy, dx)
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if dy * dy + dx * dx < theta * theta
    ]


def _near(boundary: np.ndarray, theta: float) -> np.ndarray:
    """Bool ``(N, H, W)``: pixels strictly closer than ``theta`` to a point of ``boundary`` in the same image."""
    n, h, w = boundary.shape
    offsets = _disk_offsets(theta)
    reach = max((max(abs(dy), abs(dx)) for dy, dx in offsets), default=0)
    padded = np.pad(boundary, ((0, 0), (reach, reach), (reach, reach)), constant_values=False)
    near = np.zeros_like(boundary)
    for dy, dx in offsets:
        near |= padded[:, reach + dy : reach + dy + h, reach + dx : reach + dx + w]
    return near


def _bf_scores(pred: np.ndarray, truth: np.ndarray, theta: float) -> np.ndarray:
    """BF score per image of bool (N, H, W) masks of one class: float (N,), NaN where a boundary is empty.

    Ignored pixels must already be False in both masks (see :func:`evaluate`).
    """
    pred_edge = _boundaries(pred)
    truth_edge = _boundaries(truth)
    n_pred = pred_edge.sum(axis=(1, 2))
    n_truth = truth_edge.sum(axis=(1, 2))
    precision = _divide((pred_edge & _near(truth_edge, theta)).sum(axis=(1, 2)), n_pred)
    recall = _divide((truth_edge & _near(pred_edge, theta)).sum(axis=(1, 2)), n_truth)
    score = _divide(2 * precision * recall, precision + recall)
    both = (n_pred > 0) & (n_truth > 0)
    # Both boundaries exist but nothing matched (P = R = 0): the score is 0, not 0/0.
    return np.where(both, np.nan_to_num(score, nan=0.0), np.nan)


def bfscore(pred: np.ndarray, truth: np.ndarray, theta: float | None = None) -> float:
    """BF (boundary F1) score of one class in one image, bool ``(H, W)`` masks.

    ``theta`` defaults to 0.75 % of the image diagonal. NaN when either mask has no boundary.
    """
    pred, truth = _check_pair(pred, truth)
    if pred.ndim != 2:
        raise ValueError(f"bfscore expects (H, W) masks, got shape {pred.shape}")
    if theta is None:
        theta = bf_theta(*pred.shape)
    return float(_bf_scores(pred[None].astype(bool), truth[None].astype(bool), theta)[0])


def confusion_summary(confusion: np.ndarray, bf_mean: np.ndarray | float = math.nan) -> dict[str, np.ndarray]:
    """Data-set style metrics of confusion matrices ``(..., C, C)`` (rows = truth, columns = prediction).

    Args:
        confusion: pixel counts, shape ``(..., C, C)``.
        bf_mean: the MeanBFScore column, already reduced (BF scores need the masks, not counts); NaN if unknown.

    Returns:
        ``GlobalAccuracy``, ``MeanAccuracy``, ``MeanIoU``, ``WeightedIoU`` (shape ``(...)``) and ``MeanBFScore``.
    """
    tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    true_px = confusion.sum(axis=-1).astype(np.float64)
    pred_px = confusion.sum(axis=-2).astype(np.float64)
    total = true_px.sum(axis=-1)
    accuracy = _divide(tp, true_px)
    iou = _divide(tp, true_px + pred_px - tp)
    return {
        "GlobalAccuracy": _divide(tp.sum(axis=-1), total),
        "MeanAccuracy": accuracy.mean(axis=-1),
        "MeanIoU": iou.mean(axis=-1),
        "WeightedIoU": _divide(np.where(np.isnan(iou), 0.0, iou * true_px).sum(axis=-1), total),
        "MeanBFScore": bf_mean,
    }


def evaluate(pred: np.ndarray, truth: np.ndarray, classes: list[str], files: list[str]) -> dict[str, Any]:
    """Evaluate predicted against true class-index masks ``(N, H, W)``, as MATLAB's ``evaluateSemanticSegmentation``.

    Per class over the set: Accuracy = TP / true pixels, IoU = TP / union (summed over images),
    MeanBFScore = mean over images of the image's BF score (NaN ignored), Dice = 2 TP / (pred + true pixels).
    Data set: GlobalAccuracy = trace / total; MeanAccuracy and MeanIoU are plain means of the class values (a
    class absent from the set makes them NaN); WeightedIoU weights class IoU by true pixel count, dropping NaN;
    MeanBFScore is the mean over images of each image's NaN-ignoring class mean. Each image gets the same five
    data-set metrics computed from that image alone.

    The means that skip NaN say how many values they used: ``BFScoreImages`` per class (images whose class
    BF score is defined) and for the data set (images with any defined BF score), ``BFScoreClasses`` per
    image. So a class that a network misses on some slices shows a MeanBFScore over fewer images, not a
    silently better one.

    Truth pixels equal to :data:`IGNORE_INDEX` (unlabelled) are left out of everything, as MATLAB leaves
    out undefined ground-truth pixels: they are in no confusion-matrix cell, and for the BF score they
    belong to no class in either mask, so a prediction there neither adds nor misses a boundary point
    (only labelled pixels carry boundary points; the class region of the prediction is cut at the edge of
    the unlabelled area, exactly as the truth's is). A prediction never holds :data:`IGNORE_INDEX`.

    Args:
        pred: predicted class indices, integer array of shape (N, H, W), values in ``0 .. len(classes) - 1``.
        truth: true class indices, same shape and values, or :data:`IGNORE_INDEX` for unlabelled pixels.
        classes: region names in class-index order (C names).
        files: the N image names, in stack order (they label the per-image rows).

    Returns:
        the JSON-ready dict (NaN as ``float('nan')``): ``classes``; ``confusion_matrix`` and
        ``normalized_confusion_matrix`` (C x C, rows = true class, pixel counts / row fractions);
        ``dataset`` (:data:`DATASET_METRICS`); ``class`` (name -> :data:`CLASS_METRICS`); ``images`` (one
        dict per file with ``file``, the :data:`DATASET_METRICS` of that image alone and
        ``BFScoreClasses``); ``dataset`` and each ``class`` also hold ``BFScoreImages``. All metric values
        are unitless fractions in [0, 1]; the BF score's distance tolerance is :func:`bf_theta` pixels.

    Raises:
        ValueError: ``pred`` and ``truth`` differ in shape, are not (N, H, W), or ``files`` is not N long.
    """
    pred, truth = _check_pair(pred, truth)
    if pred.ndim != 3:
        raise ValueError(f"evaluate expects (N, H, W) stacks, got shape {pred.shape}")
    if len(files) != pred.shape[0]:
        raise ValueError(f"{len(files)} file names for {pred.shape[0]} images")
    num_classes = len(classes)
    per_image = _image_confusion(pred, truth, num_classes)
    confusion = per_image.sum(axis=0)

    theta = bf_theta(pred.shape[1], pred.shape[2])
    labelled = truth != IGNORE_INDEX
    bf = np.stack([_bf_scores((pred == c) & labelled, truth == c, theta) for c in range(num_classes)], axis=1)  # (N, C)
    image_bf = _nanmean(bf, axis=1)
    bf_defined = ~np.isnan(bf)

    dataset = confusion_summary(confusion, _nanmean(image_bf))
    images = confusion_summary(per_image, image_bf)

    tp = np.diag(confusion).astype(np.float64)
    true_px = confusion.sum(axis=1)
    pred_px = confusion.sum(axis=0)
    class_values = {
        "Accuracy": _divide(tp, true_px),
        "IoU": _divide(tp, true_px + pred_px - tp),
        "MeanBFScore": _nanmean(bf, axis=0),
        "Dice": _divide(2 * tp, true_px + pred_px),
    }
    return {
        "classes": list(classes),
        "confusion_matrix": confusion.tolist(),
        "normalized_confusion_matrix": normalized_confusion_matrix(confusion).tolist(),
        "dataset": {
            **{name: float(dataset[name]) for name in DATASET_METRICS},
            "BFScoreImages": int((~np.isnan(image_bf)).sum()),
        },
        "class": {
            name: {
                **{metric: float(class_values[metric][c]) for metric in CLASS_METRICS},
                "BFScoreImages": int(bf_defined[:, c].sum()),
            }
            for c, name in enumerate(classes)
        },
        "images": [
            {
                "file": file,
                **{name: float(images[name][i]) for name in DATASET_METRICS},
                "BFScoreClasses": int(bf_defined[i].sum()),
            }
            for i, file in enumerate(files)
        ],
    }


#: A network counts as having learned to segment when its MeanIoU exceeds the trivial baseline's
#: (:func:`trivial_baseline`) by at least this fraction of the headroom ``1 - baseline``. On LGE slices
#: (baseline MeanIoU ~0.29) that is ~0.07: MeanIoU averages C class IoUs, so it asks for at least one
#: non-background region found at IoU >= ~0.2, well above what a network gains by merely tilting the
#: background's border. The run's warning (validation split) and the report's "did not learn" mark
#: (test split) both use it.
LEARN_MARGIN = 0.1


def clearly_above_baseline(miou: float | None, baseline_miou: float | None) -> bool | None:
    """Whether ``miou`` exceeds ``baseline_miou`` by at least :data:`LEARN_MARGIN` of ``1 - baseline_miou``.

    Args:
        miou: a network's MeanIoU on a split, in [0, 1] (None or NaN: undefined).
        baseline_miou: the trivial baseline's MeanIoU on the same split (None or NaN: unknown).

    Returns:
        True or False; None when either value is unknown.
    """
    if miou is None or baseline_miou is None or math.isnan(miou) or math.isnan(baseline_miou):
        return None
    return miou - baseline_miou >= LEARN_MARGIN * (1.0 - baseline_miou)


def majority_class(truth: np.ndarray, num_classes: int) -> int:
    """The most frequent class index of a stack of class-index masks (the lowest index on ties)."""
    counts = np.bincount(np.asarray(truth).ravel(), minlength=num_classes)[:num_classes]
    return int(np.argmax(counts))


def trivial_baseline(truth: np.ndarray, classes: list[str], majority: int) -> dict[str, float]:
    """Data-set metrics of the trivial segmentation that predicts class ``majority`` at every pixel.

    This is the floor a network must clearly beat to be said to have learned anything: on LGE slices the
    background covers ~88 % of the pixels, so predicting it everywhere already gives GlobalAccuracy ~0.88
    and MeanIoU ~0.88 / C. ``majority`` is normally the training split's most frequent class
    (:func:`majority_class`), i.e. the prior a network starts from.

    Args:
        truth: class-index masks, shape ``(N, H, W)``.
        classes: class names in label-map order (``C`` of them).
        majority: the class index predicted everywhere, ``0 <= majority < C``.

    Returns:
        ``{"majority_class": name, "GlobalAccuracy": x, "MeanAccuracy": x, "MeanIoU": x, "WeightedIoU": x,
        "MeanBFScore": x}``, the :func:`evaluate` data-set metrics of that prediction (NaN kept).

    Raises:
        ValueError: ``majority`` is not a class index, or ``truth`` is not ``(N, H, W)``.
    """
    truth = np.asarray(truth)
    if not 0 <= majority < len(classes):
        raise ValueError(f"majority class {majority} is not an index of {len(classes)} classes")
    pred = np.full(truth.shape, majority, dtype=truth.dtype)
    result = evaluate(pred, truth, classes, [str(i) for i in range(truth.shape[0] if truth.ndim else 0)])
    return {"majority_class": classes[majority], **result["dataset"]}


def json_safe(value: Any) -> Any:
    """Replace NaN and infinities with ``None`` (JSON ``null``) throughout nested dicts and lists."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(result: dict[str, Any], path: str | Path) -> None:
    """Write an :func:`evaluate` result as strict JSON (NaN and infinities become ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")


def _bf_images(counted: int | None, total: int) -> str:
    """``used/total`` images of a NaN-skipping BF mean (``-`` for results written before the count)."""
    return "-" if counted is None else f"{counted}/{total}"


def format_tables(result: dict[str, Any]) -> str:
    """The class table and the data-set table of an :func:`evaluate` result as aligned text.

    The ``BF images`` columns give how many images the NaN-skipping MeanBFScore means used.
    """
    total = len(result["images"])
    class_rows = [
        [
            name,
            *(fmt(result["class"][name][m]) for m in CLASS_METRICS),
            _bf_images(result["class"][name].get("BFScoreImages"), total),
        ]
        for name in result["classes"]
    ]
    dataset_row = [
        [
            f"{total} images",
            *(fmt(result["dataset"][m]) for m in DATASET_METRICS),
            _bf_images(result["dataset"].get("BFScoreImages"), total),
        ]
    ]
    tables = (
        format_table(["Class", *CLASS_METRICS, "BF images"], class_rows)
        + "\n\n"
        + format_table(["Data set", *DATASET_METRICS, "BF images"], dataset_row)
    )
    left_out = total - min(
        [result["dataset"].get("BFScoreImages", total)]
        + [result["class"][n].get("BFScoreImages", total) for n in result["classes"]]
    )
    if left_out:
        tables += (
            f"\n\nMeanBFScore skips images where a class has no boundary in the prediction or the truth "
            f"(up to {left_out} of {total} images left out; see BF images)"
        )
    return tables
