"""The field's segmentation metrics, beside MATLAB's: Dice, HD95, ASSD and NSD per class, image and patient.

Why a second set: MATLAB's ``evaluateSemanticSegmentation`` metrics (:mod:`lgeseg.metrics`, unchanged, the
paper's reproduction) are not what current papers and challenges report. Metrics Reloaded (Maier-Hein et
al., Nature Methods 2024) asks for an overlap metric (Dice) and a boundary metric (NSD at a stated
tolerance, or HD95), per structure and per case, with the empty-reference behaviour defined; EMIDEC 2020
ranked myocardium segmentations by Dice averaged over a case's slices and by the 3-D Hausdorff distance.

Definitions (each class ``c`` is the binary mask ``mask == c``; truth pixels equal to
:data:`~lgeseg.png.IGNORE_INDEX` belong to no class in either mask, as in :func:`lgeseg.metrics.evaluate`):

* **Dice** ``2 |P & T| / (|P| + |T|)`` (pixels or voxels).
* **Surfaces** are MONAI's (``monai.metrics``): the boundary pixels of a mask, ``mask XOR erosion(mask)``
  (scipy's binary erosion, 4- / 6-connected), and the distance of a boundary pixel is the Euclidean
  distance, with the pixel spacing, to the nearest boundary pixel of the other mask (centre to centre).
* **HD95** is ``monai.metrics.compute_hausdorff_distance(..., percentile=95)``: the **maximum of the two
  directed 95th percentiles**, ``max(P95(d(P->T)), P95(d(T->P)))`` (``torch.quantile``, linear
  interpolation); not the 95th percentile of the pooled distances that some other tools report. **HD**
  (EMIDEC's) is the same with the maximum instead of the 95th percentile.
* **ASSD** is ``compute_average_surface_distance(..., symmetric=True)``: the mean of the pooled distances of
  both directions, ``(sum d(P->T) + sum d(T->P)) / (|dP| + |dT|)``.
* **NSD** at tolerance ``tau`` is ``compute_surface_dice(..., class_thresholds=[tau])`` (Nikolov et al.
  2021, counted on boundary pixels): ``(#{p in dP: d(p, dT) <= tau} + #{t in dT: d(t, dP) <= tau}) /
  (|dP| + |dT|)``.
* **Empty masks** (Metrics Reloaded's convention for the two empty cases; never skipped, always counted):
  prediction and reference both empty: Dice 1, NSD 1, distances 0 (a correct "absent"); exactly one
  empty: Dice 0, NSD 0 and every distance the worst value, the diagonal of the image (2-D) or of the
  slice stack (3-D) in the distances' unit. Per class the summary counts ``EmptyBoth``,
  ``EmptyPrediction`` and ``EmptyReference`` cases.

Units: with a known spacing (``dataset.json`` ``"spacing"``, see :func:`read_spacing`) distances and the
NSD tolerance are in mm and volumes in ml; without one they are in pixels (the tolerance
``metrics.nsd_tolerance_mm`` is then taken in pixels), 3-D distances and volumes are None, and the result
says so in ``unit`` and ``note``. A patient's slices are stacked in ``slice`` order (the manifest's
``slice`` column, else file-name order) as contiguous slices ``slice_mm`` apart; a patient whose slice
numbers have gaps is counted in ``slice_gaps``.

Per patient: the 2-D metrics averaged over the patient's slices (``Dice``, ``HD95``, ``ASSD``, ``NSD``;
the mean of per-slice Dice is EMIDEC's case Dice) and the 3-D ones over the stack (``Dice3D``,
``HD95_3D``, ``HD_3D``, ``ASSD_3D``, ``NSD_3D``), the reference and predicted class volumes and the
volume error ``VolumeError_ml = predicted - reference`` (ml). Without patients each image is its own case.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import FIELD_METRICS, check_metrics_config  # noqa: F401  (their home: the config's checks)
from .errors import ConfigError, DataError
from .png import IGNORE_INDEX

#: Default NSD tolerance (``metrics.nsd_tolerance_mm``), mm (pixels without a spacing).
DEFAULT_NSD_TOLERANCE_MM = 2.0
#: Percentile of the Hausdorff distance reported as HD95.
HD_PERCENTILE = 95.0
#: Per-image keys of each class, and the per-patient 2-D means of them.
IMAGE_KEYS: tuple[str, ...] = ("Dice", "HD95", "ASSD", "NSD")
#: Per-patient 3-D keys (distances need the slice thickness).
VOLUME_KEYS: tuple[str, ...] = ("Dice3D", "HD95_3D", "HD_3D", "ASSD_3D", "NSD_3D")
#: Per-patient volume keys (need the full spacing), ml.
ML_KEYS: tuple[str, ...] = ("Volume_ml", "PredVolume_ml", "VolumeError_ml")
#: Every per-patient metric a report may compare (:func:`parse_metric`).
PATIENT_METRICS: tuple[str, ...] = IMAGE_KEYS + VOLUME_KEYS + ML_KEYS
#: Named published protocols and what they report per case (see :func:`protocol`).
PROTOCOLS: dict[str, dict[str, str]] = {
    # EMIDEC 2020 (Lalande et al., Data 2020; challenge results 2022): per case, Dice averaged over the
    # case's slices and the 3-D Hausdorff distance (mm) of the myocardium.
    "emidec": {"Dice": "Dice", "Hausdorff": "HD_3D"},
}


@dataclass(frozen=True)
class Spacing:
    """Pixel and slice spacing of one patient, mm (``slice_mm`` None: slice thickness unknown)."""

    row_mm: float
    col_mm: float
    slice_mm: float | None = None


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _spacing_from(value: Any, where: str) -> Spacing:
    ok = isinstance(value, list) and len(value) in (2, 3)
    numbers = value if ok else []
    good = all(_positive_number(v) for v in numbers[:2])
    if ok and len(numbers) == 3 and numbers[2] is not None:
        good = good and _positive_number(numbers[2])
    if not (ok and good):
        raise DataError(
            f"{where} must be [row_mm, col_mm] or [row_mm, col_mm, slice_mm] with positive numbers, got {value!r}"
        )
    return Spacing(
        float(numbers[0]), float(numbers[1]), float(numbers[2]) if len(numbers) == 3 and numbers[2] else None
    )


def read_spacing(root: str | Path) -> dict[str, Spacing] | Spacing | None:
    """The ``"spacing"`` of ``root/dataset.json``: one :class:`Spacing`, one per patient, or None.

    ``"spacing": [row_mm, col_mm, slice_mm]`` (``slice_mm`` may be left out or null) holds for every
    image; ``"spacing": {"<patient>": [row_mm, col_mm, slice_mm], ...}`` gives each patient its own (as
    ``import-nifti`` writes when the volumes differ). Rows are the PNG's first axis.

    Raises:
        DataError: the value is not of either form, naming the file.
    """
    meta = Path(root) / "dataset.json"
    if not meta.is_file():
        return None
    try:
        value = json.loads(meta.read_text()).get("spacing")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{meta}: cannot read spacing ({exc})") from None
    if value is None:
        return None
    if isinstance(value, dict):
        return {str(k): _spacing_from(v, f"{meta}: 'spacing' of {k!r}") for k, v in value.items()}
    return _spacing_from(value, f"{meta}: 'spacing'")


def read_slice_numbers(root: str | Path, files: Sequence[str]) -> list[int] | None:
    """Each file's ``slice`` number from ``root/manifest.csv`` (stack order of a patient), else None.

    Raises:
        DataError: a ``slice`` cell that is not an integer, naming the file and line.
    """
    from .data import read_manifest_table

    manifest = Path(root) / "manifest.csv"
    if not manifest.is_file():
        return None
    columns, rows = read_manifest_table(manifest)
    if "slice" not in columns or "file" not in columns:
        return None
    number: dict[str, int] = {}
    for line, row in rows:
        try:
            number[row["file"]] = int(row["slice"])
        except ValueError:
            raise DataError(f"{manifest}: line {line}: slice {row['slice']!r} is not an integer") from None
    if any(f not in number for f in files):
        return None
    return [number[f] for f in files]


def parse_metric(spec: str, classes: Sequence[str]) -> tuple[str, str]:
    """``"myocardium:Dice"`` -> ``("myocardium", "Dice")``: a per-patient metric of one class.

    Args:
        spec: ``CLASS:METRIC`` with METRIC one of :data:`PATIENT_METRICS` (case as written there).
        classes: the data set's class names.

    Raises:
        ConfigError: unknown class or metric, one line naming both the value and the choices.
    """
    cls, sep, metric = spec.partition(":")
    if not sep or cls not in classes:
        raise ConfigError(f"metric {spec!r}: expected CLASS:METRIC with CLASS one of {', '.join(classes)}")
    if metric not in PATIENT_METRICS:
        raise ConfigError(f"metric {spec!r}: unknown metric {metric!r} (known: {', '.join(PATIENT_METRICS)})")
    return cls, metric


def higher_is_better(metric: str) -> bool | None:
    """True for overlap metrics (Dice, NSD), False for distances (HD*, ASSD*); None for volumes (an error's
    sign is not a quality, its size is). For rank-based statistics (Friedman's rank 1 = best)."""
    if metric.startswith(("Dice", "NSD")):
        return True
    if metric.startswith(("HD", "ASSD")):
        return False
    return None


# ------------------------------------------------------------------------------------------- computing


def _diagonal(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The worst distance: the diagonal of the field of view, ``sqrt(sum((n_i s_i)^2))``."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The directed boundary distances ``d(P->T)`` and ``d(T->P)`` of two non-empty binary masks.

    One call of ``monai.metrics.utils.get_edge_surface_distance``, the step that MONAI's
    ``compute_hausdorff_distance``, ``compute_average_surface_distance`` and ``compute_surface_dice`` each
    run first; :func:`directed_summary` then reduces the distances exactly as they do (the tests check it
    against the three functions), so every mask pair costs one edge and distance computation, not three.

    Args:
        pred, truth: boolean arrays of one shape, 2-D (H, W) or 3-D (S, H, W), both with a True pixel.
        spacing: one spacing per axis (mm, or 1 for pixels).

    Returns:
        float64 arrays: the distance of each boundary pixel of ``pred`` to the boundary of ``truth``, and
        the other way round, in the unit of ``spacing``.
    """
    import warnings

    import torch
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal deprecated argument
        warnings.simplefilter("ignore", FutureWarning)
        _, (to_truth, to_pred), _ = get_edge_surface_distance(
            torch.from_numpy(np.ascontiguousarray(pred, bool)),
            torch.from_numpy(np.ascontiguousarray(truth, bool)),
            spacing=[float(x) for x in spacing],
            symmetric=True,
            warn_empty=False,
        )
    return to_truth.double().numpy(), to_pred.double().numpy()


def directed_summary(to_truth: np.ndarray, to_pred: np.ndarray, tolerance: float) -> dict[str, float]:
    """HD95, HD, ASSD and NSD from the directed distances, as MONAI's compute functions reduce them.

    HD95 = max of the two directed 95th percentiles (``torch.quantile``'s linear interpolation, which is
    numpy's default), HD = max of the two maxima, ASSD = mean of the pooled distances, NSD = share of
    pooled distances <= ``tolerance``.
    """
    pooled = np.concatenate([to_truth, to_pred])
    return {
        "HD95": float(max(np.percentile(to_truth, HD_PERCENTILE), np.percentile(to_pred, HD_PERCENTILE))),
        "HD": float(max(to_truth.max(), to_pred.max())),
        "ASSD": float(pooled.mean()),
        "NSD": float((pooled <= tolerance).sum() / pooled.size),
    }


def surface_values(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float],
    tolerance: float,
    which: Sequence[str] = FIELD_METRICS,
    max_distance: bool = False,
) -> list[dict[str, Any]]:
    """Dice, HD95, ASSD and NSD of a batch of binary masks (one class), with the empty-mask rules.

    Args:
        pred, truth: boolean arrays of shape (B, *spatial), spatial 2-D (H, W) or 3-D (S, H, W).
        spacing: one spacing per spatial axis (mm, or 1 for pixels).
        tolerance: NSD tolerance in the unit of ``spacing``, > 0.
        which: the :data:`FIELD_METRICS` to compute; the others are None.
        max_distance: also give ``HD``, the Hausdorff distance (100th percentile).

    Returns:
        One dict per batch item with ``Dice``, ``HD95``, ``ASSD``, ``NSD`` (and ``HD``) and ``empty``:
        None, ``"both"``, ``"prediction"`` or ``"reference"``. Distances in the unit of ``spacing``.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    worst = _diagonal(pred.shape[1:], spacing)
    axes = tuple(range(1, pred.ndim))
    has_pred, has_truth = pred.any(axis=axes), truth.any(axis=axes)
    distances = max_distance or any(name in which for name in FIELD_METRICS[1:])
    rows: list[dict[str, Any]] = []
    for b in range(pred.shape[0]):
        row: dict[str, Any] = {"Dice": _dice(pred[b], truth[b]) if "dice" in which else None}
        if has_pred[b] and has_truth[b] and not distances:
            row.update(empty=None, HD95=None, ASSD=None, NSD=None, HD=None)
        elif has_pred[b] and has_truth[b]:
            row.update(empty=None, **directed_summary(*surface_distances(pred[b], truth[b], spacing), tolerance))
        elif not has_pred[b] and not has_truth[b]:
            row.update(empty="both", HD95=0.0, ASSD=0.0, NSD=1.0, HD=0.0)
        else:
            row.update(empty="prediction" if has_truth[b] else "reference", HD95=worst, ASSD=worst, NSD=0.0, HD=worst)
        rows.append(row)
    for row, name, key in ((r, n, k) for r in rows for n, k in zip(FIELD_METRICS[1:], IMAGE_KEYS[1:])):
        if name not in which:
            row[key] = None
    if not max_distance:
        for row in rows:
            row.pop("HD", None)
    return rows


def _mean(values: Sequence[float | None]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _patient_spacing(spacing: dict[str, Spacing] | Spacing | None, patient: str) -> Spacing | None:
    if isinstance(spacing, dict):
        return spacing.get(patient)
    return spacing


def field_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    classes: Sequence[str],
    files: Sequence[str],
    patients: Sequence[str] | None = None,
    slices: Sequence[int] | None = None,
    spacing: dict[str, Spacing] | Spacing | None = None,
    tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    which: Sequence[str] = FIELD_METRICS,
) -> dict[str, Any]:
    """Dice / HD95 / ASSD / NSD per class, per image and per patient (2-D means and 3-D), see the module doc.

    Args:
        pred: predicted class indices, integer array (N, H, W), values ``0 .. C-1``.
        truth: true class indices, same shape, or :data:`~lgeseg.png.IGNORE_INDEX` for unlabelled pixels.
        classes: the C class names, in class-index order.
        files: the N image names.
        patients: the patient of each image (None: each image is its own case).
        slices: each image's slice number (stack order within a patient; None: file order).
        spacing: one :class:`Spacing` for all, one per patient, or None (pixels; a patient missing from
            the mapping is in pixels too, and the whole result then says ``unit: "pixel"``).
        tolerance_mm: NSD tolerance, mm (pixels without spacing), > 0.
        which: the :data:`FIELD_METRICS` to compute.

    Returns:
        JSON-ready dict: ``unit`` ("mm" or "pixel"), ``volume_unit`` ("ml" or None), ``nsd_tolerance``,
        ``hd_percentile``, ``case_unit`` ("patient" or "image"), ``note``, ``classes``, ``slice_gaps``,
        ``summary`` (class -> mean over cases of each per-case metric, None when undefined everywhere,
        plus ``Cases`` and the ``EmptyBoth`` / ``EmptyPrediction`` / ``EmptyReference`` case counts of the
        3-D stack, and ``EmptySlices`` the per-slice counts), ``protocols`` (name -> class -> value, see
        :data:`PROTOCOLS`), ``patients`` (one dict per case: ``patient``, ``slices``, ``class`` -> metric
        -> value) and ``images`` (one dict per image: ``file``, ``patient``, ``class`` -> ``IMAGE_KEYS``
        and ``empty``).

    Raises:
        ValueError: shapes disagree, or ``files`` / ``patients`` / ``slices`` are not N long, or the
            tolerance is not > 0.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 3:
        raise ValueError(f"field_metrics expects two (N, H, W) stacks of one shape, got {pred.shape}, {truth.shape}")
    n = pred.shape[0]
    for name, seq in (("files", files), ("patients", patients), ("slices", slices)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{len(seq)} {name} for {n} images")
    if not tolerance_mm > 0:
        raise ValueError(f"the NSD tolerance must be > 0, got {tolerance_mm!r}")
    which = tuple(which)
    case_unit = "image" if patients is None else "patient"
    cases = list(files) if patients is None else list(patients)
    members: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        members.setdefault(case, []).append(i)
    for idx in members.values():
        idx.sort(key=lambda i: (slices[i] if slices is not None else 0, files[i]))

    spacings = {case: _patient_spacing(spacing, case) for case in members}
    in_mm = all(s is not None for s in spacings.values())
    full = in_mm and all(s.slice_mm is not None for s in spacings.values())  # type: ignore[union-attr]
    labelled = truth != IGNORE_INDEX
    images: list[dict[str, Any]] = [
        {"file": files[i], "patient": cases[i] if patients is not None else None, "class": {}} for i in range(n)
    ]
    patient_rows: list[dict[str, Any]] = []
    gaps = 0
    for case, idx in members.items():
        s = spacings[case]
        plane = (s.row_mm, s.col_mm) if in_mm and s is not None else (1.0, 1.0)
        numbers = [slices[i] for i in idx] if slices is not None else None
        if numbers is not None and len(numbers) > 1 and max(numbers) - min(numbers) + 1 != len(set(numbers)):
            gaps += 1
        row: dict[str, Any] = {"patient": case, "slices": len(idx), "class": {}}
        for c, name in enumerate(classes):
            p = (pred[idx] == c) & labelled[idx]
            t = truth[idx] == c
            per_slice = surface_values(p, t, plane, tolerance_mm, which)
            for i, values in zip(idx, per_slice):
                images[i]["class"][name] = {k: values[k] for k in (*IMAGE_KEYS, "empty")}
            out: dict[str, Any] = {k: _mean([v[k] for v in per_slice]) for k in IMAGE_KEYS}
            out["EmptySlices"] = {
                kind: sum(v["empty"] == kind for v in per_slice) for kind in ("both", "prediction", "reference")
            }
            out["Dice3D"] = _dice(p, t) if "dice" in which else None
            out["empty"] = surface_values(p[None], t[None], (1.0, 1.0, 1.0), 1.0, ("dice",))[0]["empty"]
            if full:
                volume = surface_values(
                    p[None],
                    t[None],
                    (s.slice_mm, *plane),
                    tolerance_mm,
                    which,
                    max_distance=True,  # type: ignore[union-attr]
                )[0]
                out.update(HD95_3D=volume["HD95"], HD_3D=volume["HD"], ASSD_3D=volume["ASSD"], NSD_3D=volume["NSD"])
                voxel_ml = s.slice_mm * s.row_mm * s.col_mm / 1000.0  # type: ignore[union-attr]
                out.update(
                    Volume_ml=float(t.sum()) * voxel_ml,
                    PredVolume_ml=float(p.sum()) * voxel_ml,
                    VolumeError_ml=float(p.sum() - t.sum()) * voxel_ml,
                )
            else:
                out.update(dict.fromkeys(("HD95_3D", "HD_3D", "ASSD_3D", "NSD_3D", *ML_KEYS)))
            row["class"][name] = out
        patient_rows.append(row)

    summary: dict[str, Any] = {}
    for name in classes:
        values = [r["class"][name] for r in patient_rows]
        summary[name] = {
            **{k: _mean([v[k] for v in values]) for k in PATIENT_METRICS},
            "Cases": len(values),
            "EmptyBoth": sum(v["empty"] == "both" for v in values),
            "EmptyPrediction": sum(v["empty"] == "prediction" for v in values),
            "EmptyReference": sum(v["empty"] == "reference" for v in values),
            "EmptySlices": {
                kind: sum(v["EmptySlices"][kind] for v in values) for kind in ("both", "prediction", "reference")
            },
        }
    note = (
        "distances in mm, volumes in ml"
        if full
        else "distances in mm; no slice thickness, so no 3-D distances or volumes"
        if in_mm
        else "no pixel spacing (dataset.json 'spacing'): distances and the NSD tolerance in pixels, "
        "no 3-D distances or volumes"
    )
    result = {
        "unit": "mm" if in_mm else "pixel",
        "volume_unit": "ml" if full else None,
        "nsd_tolerance": float(tolerance_mm),
        "hd_percentile": HD_PERCENTILE,
        "case_unit": case_unit,
        "note": note,
        "classes": list(classes),
        "metrics": list(which),
        "slice_gaps": gaps,
        "summary": summary,
        "patients": patient_rows,
        "images": images,
    }
    result["protocols"] = {name: protocol(result, name) for name in PROTOCOLS}
    return result


def protocol(result: dict[str, Any], name: str) -> dict[str, dict[str, float | None]]:
    """A named protocol's per-class values (mean over cases) from a :func:`field_metrics` result.

    ``"emidec"``: ``Dice`` = mean over cases of the case's mean per-slice Dice; ``Hausdorff`` = mean over
    cases of the 3-D Hausdorff distance (``HD_3D``, mm; None without slice thickness).

    Raises:
        ConfigError: unknown protocol name (one line, naming the known ones).
    """
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown metrics protocol {name!r} (known: {', '.join(PROTOCOLS)})")
    return {
        cls: {label: result["summary"][cls][key] for label, key in PROTOCOLS[name].items()} for cls in result["classes"]
    }


def patient_table(result: dict[str, Any], cls: str, metric: str) -> dict[str, float]:
    """``{case: value}`` of one class's per-case metric (None left out): the input of the verdicts.

    Raises:
        ConfigError: unknown class or metric (see :func:`parse_metric`).
    """
    parse_metric(f"{cls}:{metric}", result["classes"])
    return {
        row["patient"]: float(row["class"][cls][metric])
        for row in result["patients"]
        if row["class"][cls][metric] is not None
    }


@dataclass(frozen=True)
class FieldUnits:
    """What a data set says about its geometry: spacing (None: pixels) and each file's slice number."""

    spacing: dict[str, Spacing] | Spacing | None
    slices: list[int] | None


def field_units(root: str | Path, files: Sequence[str]) -> FieldUnits:
    """:func:`read_spacing` and :func:`read_slice_numbers` of a data set folder (read before training, so a
    bad ``dataset.json`` spacing is an error before anything is written).

    Raises:
        DataError: a malformed ``spacing`` or ``slice`` value, naming the file.
    """
    return FieldUnits(read_spacing(root), read_slice_numbers(root, files))


def field_section(
    metrics_config: dict,
    files: Sequence[str],
    patients: Sequence[str] | None,
    units: FieldUnits,
    indices: Sequence[int],
    pred: np.ndarray,
    truth: np.ndarray,
    classes: Sequence[str],
) -> dict[str, Any]:
    """``{"field_metrics": field_metrics(...)}`` for the images ``indices`` of a data set, or ``{}`` when
    the config's ``metrics.field`` is empty: the key a run adds to ``metrics.json`` / ``val_metrics.json``.

    Args:
        metrics_config: the ``metrics`` config section (``field``, ``nsd_tolerance_mm``).
        files, patients: the whole data set's file names and patients (None: none).
        units: :func:`field_units` of the data set (``slices`` index the whole data set).
        indices: the images evaluated, in the order of ``pred`` and ``truth``.
        pred, truth: class indices (len(indices), H, W).
        classes: class names in index order.
    """
    if not metrics_config["field"]:
        return {}
    return {
        "field_metrics": field_metrics(
            pred,
            truth,
            classes,
            [files[i] for i in indices],
            None if patients is None else [patients[i] for i in indices],
            None if units.slices is None else [units.slices[i] for i in indices],
            units.spacing,
            metrics_config["nsd_tolerance_mm"],
            metrics_config["field"],
        )
    }


def folder_cases(truth_dir: str | Path, names: Sequence[str]) -> tuple[list[str] | None, FieldUnits]:
    """Patients, slice numbers and spacing for a folder of true masks (``evaluate``).

    The data set root is the folder's parent when it holds ``dataset.json`` or ``manifest.csv`` (the
    ``<root>/masks`` layout), else the folder itself. Patients come from the manifest's ``file`` and
    ``patient`` columns when it lists every name, else None (each image is its own case).

    Raises:
        DataError: a malformed manifest or ``spacing``, naming the file.
    """
    from .data import read_manifest_table

    truth_dir = Path(truth_dir)
    root = next(
        (r for r in (truth_dir.parent, truth_dir) if (r / "dataset.json").is_file() or (r / "manifest.csv").is_file()),
        truth_dir,
    )
    patients = None
    manifest = root / "manifest.csv"
    if manifest.is_file():
        columns, rows = read_manifest_table(manifest)
        if "file" in columns and "patient" in columns:
            patient_of = {row["file"]: row["patient"] for _, row in rows}
            if all(patient_of.get(n) for n in names):
                patients = [patient_of[n] for n in names]
    return patients, field_units(root, names)


def format_field(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`field_metrics` result's summary: one row per class, mean over cases."""
    unit = result["unit"]
    keys = [k for k in PATIENT_METRICS if any(result["summary"][c][k] is not None for c in result["classes"])]
    label = {k: f"{k} ({unit})" if k.startswith(("HD", "ASSD")) else k for k in keys}
    header = ["Class", *(label[k] for k in keys), "Empty pred/ref/both"]
    rows = [header]
    for cls in result["classes"]:
        values = result["summary"][cls]
        empties = values["EmptySlices"]
        rows.append(
            [
                cls,
                *("-" if values[k] is None else f"{values[k]:.4f}" for k in keys),
                f"{empties['prediction']}/{empties['reference']}/{empties['both']} slices",
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows
    ]
    tolerance = f"NSD at {result['nsd_tolerance']:g} {'pixels' if unit == 'pixel' else unit}"
    title = f"Field metrics, mean over {result['summary'][result['classes'][0]]['Cases']} {result['case_unit']}s"
    return f"{title} ({tolerance}; {result['note']}):\n" + "\n".join(lines)


def record_view(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its per-image rows: small enough for an Optuna user attribute."""
    return {k: v for k, v in result.items() if k != "images"}


__all__ = [
    "DEFAULT_NSD_TOLERANCE_MM",
    "FIELD_METRICS",
    "HD_PERCENTILE",
    "PATIENT_METRICS",
    "PROTOCOLS",
    "FieldUnits",
    "Spacing",
    "check_metrics_config",
    "field_section",
    "field_units",
    "folder_cases",
    "higher_is_better",
    "format_field",
    "field_metrics",
    "parse_metric",
    "patient_table",
    "protocol",
    "read_slice_numbers",
    "read_spacing",
    "record_view",
    "surface_values",
]
