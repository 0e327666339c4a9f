"""Benchmark :func:`lgeseg.metrics.evaluate` against a straightforward per-image, per-class loop.

Builds deterministic synthetic 128x128 three-class mask pairs (prediction = truth shifted, speckled and with
a region relabelled), checks that both implementations give the same numbers, and reports the times:

    python bench/evaluate.py [--n 717] [--json bench/results/evaluate.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from lgeseg.metrics import evaluate

CLASSES = ["region1", "region2", "region3"]
SIZE = 128


def synthetic_pairs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` truth masks of smooth blobs and their perturbed predictions, uint8 ``(n, 128, 128)``."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(n, SIZE, SIZE)), sigma=(0, 6, 6))
    truth = np.digitize(field, np.quantile(field, [0.3, 0.7])).astype(np.uint8)
    pred = np.empty_like(truth)
    shifts = rng.integers(-2, 3, size=(n, 2))
    for i in range(n):
        pred[i] = np.roll(truth[i], tuple(shifts[i]), axis=(0, 1))
    speckle = rng.random(pred.shape) < 0.01
    pred[speckle] = rng.integers(0, len(CLASSES), size=int(speckle.sum()))
    pred[::7][pred[::7] == 1] = 2  # every seventh prediction misses class 1 entirely
    return pred, truth


def _boundary(mask: np.ndarray) -> np.ndarray:
    cross = ndimage.generate_binary_structure(2, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def _bf(pred: np.ndarray, truth: np.ndarray, theta: float) -> float:
    pb, tb = _boundary(pred), _boundary(truth)
    if not pb.any() or not tb.any():
        return math.nan
    precision = float((ndimage.distance_transform_edt(~tb)[pb] < theta).mean())
    recall = float((ndimage.distance_transform_edt(~pb)[tb] < theta).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def reference(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> dict[str, dict[str, float]]:
    """Data-set and class metrics by a plain loop: per image, per class, one EDT per boundary."""
    n, h, w = pred.shape
    theta = 0.0075 * math.hypot(h, w)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    inter = np.zeros(num_classes)
    union = np.zeros(num_classes)
    bf = np.full((n, num_classes), math.nan)
    for i in range(n):
        for c in range(num_classes):
            p, t = pred[i] == c, truth[i] == c
            for q in range(num_classes):
                cm[c, q] += int(np.sum(t & (pred[i] == q)))
            inter[c] += np.sum(p & t)
            union[c] += np.sum(p | t)
            bf[i, c] = _bf(p, t, theta)
    tp, true_px, pred_px = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    accuracy = tp / true_px
    iou = inter / union
    with np.errstate(all="ignore"):
        image_bf = [np.nanmean(row) for row in bf if not np.isnan(row).all()]
    dataset = {
        "GlobalAccuracy": np.trace(cm) / cm.sum(),
        "MeanAccuracy": accuracy.mean(),
        "MeanIoU": iou.mean(),
        "WeightedIoU": np.nansum(iou * true_px) / cm.sum(),
        "MeanBFScore": float(np.mean(image_bf)),
    }
    classes = {
        c: {
            "Accuracy": accuracy[c],
            "IoU": iou[c],
            "MeanBFScore": float(np.nanmean(bf[:, c])),
            "Dice": 2 * tp[c] / (true_px[c] + pred_px[c]),
        }
        for c in range(num_classes)
    }
    return {
        "dataset": {k: float(v) for k, v in dataset.items()},
        "class": {CLASSES[c]: {k: float(v) for k, v in m.items()} for c, m in classes.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=717, help="number of mask pairs (default: the study's 717)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/evaluate.json"), help="result file")
    args = parser.parse_args()

    pred, truth = synthetic_pairs(args.n)
    files = [f"{i:04d}.png" for i in range(args.n)]

    ours_times = []
    for _ in range(3):
        start = time.perf_counter()
        ours = evaluate(pred, truth, CLASSES, files)
        ours_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    ref = reference(pred, truth, len(CLASSES))
    ref_time = time.perf_counter() - start

    pairs = [(k, ours["dataset"][k], v) for k, v in ref["dataset"].items()]
    pairs += [((c, k), ours["class"][c][k], v) for c in CLASSES for k, v in ref["class"][c].items()]
    for key, mine, theirs in pairs:
        assert math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-12), (key, mine, theirs)

    best = min(ours_times)
    rows = [
        ("reference loop (per image, per class, EDT)", ref_time, 1.0),
        ("lgeseg.metrics.evaluate (vectorised, best of 3)", best, ref_time / best),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{args.n} mask pairs of {SIZE}x{SIZE}, {len(CLASSES)} classes; results agree to 1e-9")
    print(f"{'method'.ljust(width)}  {'seconds':>8}  {'speed-up':>8}")
    for name, seconds, speedup in rows:
        print(f"{name.ljust(width)}  {seconds:8.3f}  {speedup:7.1f}x")
    print("dataset:", {k: round(v, 4) for k, v in ours["dataset"].items()})

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "n": args.n,
                "size": SIZE,
                "classes": len(CLASSES),
                "reference_s": ref_time,
                "ours_best_s": best,
                "ours_runs_s": ours_times,
                "speedup": ref_time / best,
                "dataset": ours["dataset"],
                "machine": platform.processor() or platform.machine(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
