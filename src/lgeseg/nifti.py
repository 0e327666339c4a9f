"""NIfTI image and label volumes in, the project's PNG dataset format out (``python -m hpo.run import-nifti``).

Volumes are read with nibabel. Image and label volumes are found by glob patterns below one folder and
paired by a **case id**, the text the first wildcard of each pattern matched (``*_DE.nii.gz`` and
``*_gd.nii.gz`` pair ``case7_DE.nii.gz`` with ``case7_gd.nii.gz``; ``*/Images/*.nii.gz`` and
``*/Contours/*.nii.gz`` pair the files of one case folder). The case id is the patient of every slice.

Each volume pair goes through these steps, in this order:

0. geometry (:func:`align_labels`): the label volume is brought onto the image volume's voxel grid. Where
   the two affines differ only by axis order or flips (the same anatomy stored in another orientation,
   nibabel's ``io_orientation``/``ornt_transform``), the labels are reoriented to the image's voxel axes
   and a note says so; any other difference (shape, voxel size, axis directions, origin; compared with a
   tolerance of :data:`AFFINE_TOLERANCE_MM`) is refused, naming the file and what differs. Slices are
   always written in the **image volume's own voxel orientation**, as stored;
1. optional in-plane resampling to a pixel spacing (mm): linear interpolation for the image, nearest
   neighbour for the labels (a mask is never interpolated);
2. optional crop or pad of the two in-plane axes to ``size x size`` around the centre of the bounding box
   of the volume's labelled voxels (label != 0), or the image centre when no voxel is labelled; the same
   window for every slice of the case; images are padded with 0, labels with label 0;
3. intensities scaled per volume to 8 bits (or 16 with ``bits=16``): by default the 0.5th and 99.5th
   percentiles of all the volume's voxels (:data:`DEFAULT_PERCENTILES`) map to 0 and the top value, with
   values outside clipped, so a few hot voxels do not darken the whole volume; ``scale="none"`` writes
   integer intensities as they are. Non-finite voxels (NaN, inf) are left out of the percentiles and
   written as 0; their number is said once per volume (a volume with no finite voxel is refused);
4. label values mapped to mask pixel values (``value_map``, e.g. ``{0: 128, 1: 255, 2: 0}``);
5. one PNG pair per slice along ``axis``; slices without any labelled voxel are skipped unless
   ``keep_empty``.

A slice's PNG shows its two in-plane voxel axes as ``imshow(slice.T, origin="lower")`` does: columns
follow the first in-plane axis, rows the second with its last index in the top row.

Every bad input (no or unpaired files, a volume that is not 3-D, image and labels of different geometry,
label values outside the map, non-integer or NaN labels, an image without a finite voxel, a labelled
region larger than ``size``) is a one-line
:class:`~lgeseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError
from .png import DEFAULT_PERCENTILES, write_image

#: Largest difference (mm) allowed between an entry of the image affine and the (reoriented) label affine;
#: float32 headers round affines of a few hundred mm at about 1e-5 mm.
AFFINE_TOLERANCE_MM = 1e-3
#: ``scale`` choices: robust percentiles, or the stored integers unchanged.
SCALES: tuple[str, ...] = ("percentile", "none")


@dataclass
class Case:
    """One image volume and its label volume; ``case_id`` is the patient."""

    case_id: str
    image: Path
    labels: Path


@dataclass
class ImportSummary:
    """What :func:`import_nifti` wrote."""

    out: Path
    cases: int
    slices: int  #: PNG pairs written
    skipped_empty: int  #: slices without a labelled voxel, left out
    labels: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  #: one line per volume the import changed (NaN, orientation)


# ------------------------------------------------------------------------------------------ parsing


def parse_value_map(text: str) -> dict[int, int]:
    """Parse ``--map 0=128,1=255,2=0``: label value -> mask pixel value (0-255)."""
    mapping: dict[int, int] = {}
    for item in text.split(","):
        source, sep, target = (part.strip() for part in item.partition("="))
        if not sep or not source.isdigit() or not target.isdigit() or int(target) > 255:
            raise DataError(f"--map: expected label=value with non-negative integers and value 0-255, got {item!r}")
        if int(source) in mapping:
            raise DataError(f"--map: label {source} mapped twice")
        mapping[int(source)] = int(target)
    return mapping


def _pattern_regex(pattern: str) -> re.Pattern:
    """A glob pattern as a regex with one group per wildcard (``**`` crosses folders, ``*``/``?`` do not)."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    wild = {"**": "(.*)", "*": "([^/]*)", "?": "([^/])"}
    return re.compile("".join(wild.get(p, re.escape(p)) for p in parts) + r"\Z")


def _by_case(root: Path, pattern: str, option: str) -> dict[str, Path]:
    """Files below ``root`` matching ``pattern``, keyed by the text of its first wildcard."""
    regex = _pattern_regex(pattern)
    if regex.groups == 0:
        raise DataError(f"{option} {pattern!r}: the pattern needs a wildcard (* or ?); the first one is the case id")
    found: dict[str, Path] = {}
    for path in sorted(root.glob(pattern)):
        match = regex.match(path.relative_to(root).as_posix())
        if not path.is_file() or match is None:
            continue
        case_id = match.group(1)
        if not case_id:
            raise DataError(f"{path}: empty case id (the first wildcard of {option} {pattern!r} matched nothing)")
        if case_id in found:
            raise DataError(
                f"{path}: case id {case_id!r} also matched by {found[case_id]} ({option} "
                f"{pattern!r}); make the first wildcard unique per case"
            )
        found[case_id] = path
    if not found:
        raise DataError(f"{root}: no file matches {option} {pattern!r}")
    return found


def find_cases(root: str | Path, images: str, labels: str) -> list[Case]:
    """Pair image and label volumes below ``root`` by case id; an image without labels (or the reverse)
    is an error."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    image_files = _by_case(root, images, "--images")
    label_files = _by_case(root, labels, "--labels")
    for case_id, path in image_files.items():
        if case_id not in label_files:
            raise DataError(f"{path}: no label volume for case {case_id!r} (--labels {labels!r})")
    for case_id, path in label_files.items():
        if case_id not in image_files:
            raise DataError(f"{path}: no image volume for case {case_id!r} (--images {images!r})")
    return [Case(case_id, image_files[case_id], label_files[case_id]) for case_id in sorted(image_files)]


# ------------------------------------------------------------------------------------------ volumes


def read_volume(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """A 3-D volume and its voxel sizes (mm); trailing axes of length 1 are dropped."""
    data, _ = read_volume_affine(path)
    return data, tuple(float(z) for z in np.sqrt((_affine_of(path)[:3, :3] ** 2).sum(axis=0)))


def _affine_of(path: Path) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(path).affine, dtype=np.float64)


def read_volume_affine(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 3-D volume and its 4x4 voxel-to-world affine (mm; nibabel's ``img.affine``: the sform when set,
    else the qform); trailing axes of length 1 are dropped.

    Raises:
        DataError: missing or unreadable file, or not 3-D once trailing length-1 axes are dropped.
    """
    import nibabel as nib

    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
        affine = np.asarray(image.affine, dtype=np.float64)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for broken files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable NIfTI ({reason})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: volume is {data.ndim}-D with shape {data.shape}; expected 3-D")
    return data, affine


def voxel_sizes(affine: np.ndarray) -> tuple[float, float, float]:
    """The voxel size (mm) along each voxel axis of a 4x4 affine: the norms of its first three columns."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def align_labels(
    image_affine: np.ndarray, labels: np.ndarray, labels_affine: np.ndarray, image_shape: tuple, path: Path
) -> tuple[np.ndarray, str | None]:
    """The label volume on the image volume's voxel grid.

    Where the affines differ by axis order or flips only, the labels are reoriented (nibabel's
    ``io_orientation``, ``ornt_transform``, ``apply_orientation``, ``inv_ornt_aff``) and the second value
    says so; otherwise it is None.

    Args:
        image_affine, labels_affine: 4x4 voxel-to-world affines (mm).
        labels: the 3-D label volume.
        image_shape: the image volume's shape.
        path: the label file, for messages.

    Raises:
        DataError: one line naming ``path`` and what differs once reoriented: shape, voxel sizes (mm),
            axis directions or origin (mm), beyond :data:`AFFINE_TOLERANCE_MM`.
    """
    from nibabel.orientations import aff2axcodes, apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    labels_affine_stored, stored_shape = labels_affine, labels.shape
    transform = ornt_transform(io_orientation(labels_affine), io_orientation(image_affine))
    moved = not np.array_equal(transform, [[0, 1], [1, 1], [2, 1]])
    if moved:
        labels_affine = labels_affine @ inv_ornt_aff(transform, labels.shape)
        labels = apply_orientation(labels, transform)
    where = " once reoriented to the image's axes" if moved else ""
    if labels.shape != tuple(image_shape):
        shown = f"{stored_shape} ({labels.shape}{where})" if moved else f"{labels.shape}"
        raise DataError(f"{path}: label volume shape {shown} differs from image volume shape {tuple(image_shape)}")
    tol = AFFINE_TOLERANCE_MM
    image_sizes, label_sizes = voxel_sizes(image_affine), voxel_sizes(labels_affine)
    if not np.allclose(image_sizes, label_sizes, rtol=0, atol=tol):
        raise DataError(
            f"{path}: voxel sizes {_fmt(label_sizes)} mm{where} differ from the image's {_fmt(image_sizes)} mm"
        )
    if not np.allclose(image_affine[:3, :3], labels_affine[:3, :3], rtol=0, atol=tol):
        raise DataError(
            f"{path}: voxel axis directions differ from the image's (affines {labels_affine[:3, :3].round(4).tolist()}"
            f" vs {image_affine[:3, :3].round(4).tolist()}): not a reorientation; resample the labels onto the image"
        )
    if not np.allclose(image_affine[:3, 3], labels_affine[:3, 3], rtol=0, atol=tol):
        raise DataError(
            f"{path}: origin {_fmt(labels_affine[:3, 3])} mm{where} differs from the image's "
            f"{_fmt(image_affine[:3, 3])} mm"
        )
    if not moved:
        return labels, None
    image_codes, label_codes = ("".join(aff2axcodes(a)) for a in (image_affine, labels_affine_stored))
    return labels, f"{path}: labels stored in orientation {label_codes}, image in {image_codes}: reoriented the labels"


def finite_voxels(volume: np.ndarray, path: Path) -> tuple[np.ndarray, str | None]:
    """The volume as float64 with non-finite voxels (NaN, inf) kept as NaN, and a note counting them.

    Raises:
        DataError: no voxel is finite.
    """
    values = np.asarray(volume, dtype=np.float64)
    bad = ~np.isfinite(values)
    count = int(bad.sum())
    if count == 0:
        return values, None
    if count == values.size:
        raise DataError(f"{path}: every voxel is NaN or infinite: there is no image in it")
    values = values.copy()
    values[bad] = np.nan
    return values, (
        f"{path}: {count} of {values.size} voxels are NaN or infinite: left out of the intensity "
        f"percentiles and written as 0"
    )


def scale_intensities(
    volume: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, bits: int = 8
) -> np.ndarray:
    """Map the volume's ``percentiles`` (of all voxels) linearly to 0 and ``2**bits - 1``, clip, round.

    Args:
        volume: intensities of any shape and numeric type.
        percentiles: lower and upper percentile in [0, 100], lower < upper (numpy's linear interpolation).
        bits: 8 or 16.

    Returns:
        uint8 or uint16 array of ``volume``'s shape; all 0 when the two percentiles are equal. Non-finite
        voxels (NaN, inf) are left out of the percentiles and written as 0; all 0 when none is finite.
    """
    top = 2**bits - 1
    values = np.asarray(volume, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8 if bits == 8 else np.uint16)
    lo, hi = np.percentile(values[finite], percentiles)
    if hi <= lo:
        return np.zeros(values.shape, np.uint8 if bits == 8 else np.uint16)
    scaled = np.clip((np.where(finite, values, lo) - lo) / (hi - lo), 0.0, 1.0) * top
    return np.rint(scaled).astype(np.uint8 if bits == 8 else np.uint16)


def _stored_integers(volume: np.ndarray, bits: int, path: Path) -> np.ndarray:
    """``scale="none"``: the intensities as they are, which must be integers that fit ``bits``."""
    top = 2**bits - 1
    values = np.asarray(volume)
    if values.dtype.kind == "f":
        values = np.where(np.isfinite(values), values, 0)  # non-finite voxels are written as 0
    if not np.array_equal(values, np.round(values)) or values.min() < 0 or values.max() > top:
        raise DataError(
            f"{path}: --scale none needs integer intensities in 0-{top}, found "
            f"{values.min():g} to {values.max():g}; use --scale percentile"
        )
    return values.astype(np.uint8 if bits == 8 else np.uint16)


def _integer_labels(volume: np.ndarray, path: Path) -> np.ndarray:
    values = np.asarray(volume)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise DataError(
            f"{path}: label volume holds {int((~np.isfinite(values)).sum())} NaN or infinite values; "
            f"expected label numbers"
        )
    if not np.array_equal(values, np.round(values)) or values.min() < 0:
        raise DataError(f"{path}: label volume holds non-integer or negative values; expected label numbers")
    return values.astype(np.int64)


def resample_in_plane(
    image: np.ndarray, labels: np.ndarray, zooms: tuple[float, ...], axis: int, spacing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resample both in-plane axes to ``spacing`` mm: image linearly, labels by nearest neighbour.

    The slice axis is left as it is. Output sizes are ``round(n * zoom / spacing)``.
    """
    from scipy.ndimage import zoom

    factors = [1.0 if a == axis else zooms[a] / spacing for a in range(3)]
    shape = [n if a == axis else max(1, round(n * factors[a])) for a, n in enumerate(image.shape)]
    factors = [s / n for s, n in zip(shape, image.shape)]
    resampled = zoom(image.astype(np.float64), factors, order=1, mode="nearest", grid_mode=True)
    nearest = zoom(labels, factors, order=0, mode="nearest", grid_mode=True)
    return resampled, nearest


def crop_window(labels: np.ndarray, axis: int, size: int) -> list[tuple[int, int]]:
    """Per in-plane axis, the ``[start, stop)`` of a ``size``-long window (may reach outside the volume)
    centred on the labelled voxels' bounding box, or on the volume's centre when none is labelled."""
    in_plane = [a for a in range(3) if a != axis]
    coords = np.nonzero(labels)
    window = []
    for a in in_plane:
        n = labels.shape[a]
        if coords[0].size:
            low, high = int(coords[a].min()), int(coords[a].max()) + 1
        else:
            low, high = 0, n
        start = (low + high - size) // 2
        window.append((start, start + size))
    return window


def crop_or_pad(volume: np.ndarray, axis: int, window: list[tuple[int, int]]) -> np.ndarray:
    """Cut the in-plane ``window`` out of ``volume``, padding with 0 where it reaches outside."""
    in_plane = [a for a in range(3) if a != axis]
    pads = [(0, 0)] * 3
    slices = [slice(None)] * 3
    for a, (start, stop) in zip(in_plane, window):
        n = volume.shape[a]
        pads[a] = (max(0, -start), max(0, stop - n))
        slices[a] = slice(max(0, start), min(n, stop))
    return np.pad(volume[tuple(slices)], pads, constant_values=0)


def slice_to_png(plane: np.ndarray) -> np.ndarray:
    """A 2-D slice as PNG rows: ``imshow(plane.T, origin='lower')`` (see the module docstring)."""
    return np.ascontiguousarray(np.flipud(plane.T))


# -------------------------------------------------------------------------------------------- import


def default_names(value_map: dict[int, int]) -> dict[str, int]:
    """``label<v>=<pixel>`` names for the distinct mask values of ``value_map``, in map order."""
    names: dict[str, int] = {}
    for source, pixel in value_map.items():
        if pixel not in names.values():
            names[f"label{source}"] = pixel
    return names


def import_nifti(
    root: str | Path,
    out: str | Path,
    images: str,
    labels: str,
    *,
    axis: int = 2,
    keep_empty: bool = False,
    value_map: dict[int, int] | None = None,
    names: dict[str, int] | None = None,
    scale: str = "percentile",
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    bits: int = 8,
    size: int | None = None,
    spacing: float | None = None,
) -> ImportSummary:
    """Convert NIfTI volume pairs below ``root`` into a dataset folder ``out`` (see the module docstring).

    Args:
        root: folder the patterns are relative to.
        out: new dataset folder; it must not already hold ``images/`` or ``masks/`` files.
        images, labels: glob patterns of the image and label volumes; the first wildcard is the case id.
        axis: voxel axis (0, 1 or 2) the slices are taken along.
        keep_empty: also write slices without any labelled voxel (label != 0).
        value_map: label value -> mask pixel value; default the identity on the label values found.
        names: ``dataset.json`` label names -> mask pixel values (class order); default
            :func:`default_names`. Must name exactly the mask values of ``value_map``.
        scale: ``"percentile"`` or ``"none"`` (integer intensities written as they are).
        percentiles: lower, upper percentile for ``scale="percentile"``.
        bits: 8 or 16 bits per image pixel (masks are always 8-bit).
        size: crop/pad both in-plane axes to this many pixels, or keep the volume's size.
        spacing: resample in-plane to this pixel spacing (mm) first, or keep the voxel grid.

    Returns:
        An :class:`ImportSummary`.

    Raises:
        DataError: on any bad input, naming the file; nothing is written into ``out`` before every volume
            has been checked.
    """
    if axis not in (0, 1, 2):
        raise DataError(f"--axis must be 0, 1 or 2, got {axis}")
    if scale not in SCALES:
        raise DataError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if bits not in (8, 16):
        raise DataError(f"--bits must be 8 or 16, got {bits}")
    lo, hi = percentiles
    if not 0 <= lo < hi <= 100:
        raise DataError(f"--percentiles must be two values 0 <= low < high <= 100, got {lo:g},{hi:g}")
    if size is not None and size < 1:
        raise DataError(f"--size must be a positive number of pixels, got {size}")
    if spacing is not None and not spacing > 0:
        raise DataError(f"--spacing must be a positive pixel spacing in mm, got {spacing}")
    out = Path(out)
    for sub in ("images", "masks"):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            raise DataError(f"{out / sub}: already holds files; import into a new folder")
    cases = find_cases(root, images, labels)

    volumes = []  # checked and converted first, written after: a bad case leaves nothing half-written
    found_values: set[int] = set()
    spacings: dict[str, list[float]] = {}  # [row_mm, col_mm, slice_mm] of each case's PNGs (dataset.json)
    notes: list[str] = []
    for case in cases:
        pixels, label, zooms = _prepare_case(case, axis, value_map, scale, percentiles, bits, size, spacing, notes)
        found_values.update(np.unique(label).tolist())
        first, second = (a for a in range(3) if a != axis)  # PNG columns follow the first, rows the second
        rows_mm, cols_mm = (spacing, spacing) if spacing is not None else (zooms[second], zooms[first])
        spacings[case.case_id] = [float(rows_mm), float(cols_mm), float(zooms[axis])]
        volumes.append((case, pixels, label))

    if value_map is None:
        outside = sorted(v for v in found_values if v > 255)
        if outside:
            raise DataError(f"label values {outside} do not fit 8-bit masks; give --map")
        value_map = {v: v for v in sorted(found_values | ({0} if size is not None else set()))}
    names = dict(names) if names is not None else default_names(value_map)
    if set(names.values()) != set(value_map.values()):
        raise DataError(
            f"--names {_map_text(names)} must name exactly the mask values of --map {sorted(set(value_map.values()))}"
        )
    lut = np.zeros(max(value_map) + 1, np.uint8)
    for source, pixel in value_map.items():
        lut[source] = pixel

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rows, skipped, shape = [], 0, None
    for case, pixels, label in volumes:
        for k in range(label.shape[axis]):
            plane_labels = np.take(label, k, axis=axis)
            if not keep_empty and not plane_labels.any():
                skipped += 1
                continue
            name = f"{case.case_id}_slice{k:03d}.png"
            image_png = slice_to_png(np.take(pixels, k, axis=axis))
            write_image(out / "images" / name, image_png)
            write_image(out / "masks" / name, slice_to_png(lut[plane_labels]))
            rows.append((name, case.case_id, k))
            shape = image_png.shape
    if not rows:
        raise DataError(
            f"{root}: no slice with a labelled voxel in {len(cases)} case(s); use --keep-empty to import them anyway"
        )
    with (out / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "patient", "slice"))
        writer.writerows(rows)
    meta = {
        "name": out.resolve().name,
        "labels": names,
        "num_images": len(rows),
        "num_patients": len(cases),
        "image_size": list(shape),
        # lgeseg.field_metrics.read_spacing: one [row_mm, col_mm, slice_mm] for all, else one per patient
        "spacing": next(iter(spacings.values())) if len({tuple(v) for v in spacings.values()}) == 1 else spacings,
        "source": {
            "importer": "import-nifti",
            "images": images,
            "labels": labels,
            "axis": axis,
            "map": {str(k): v for k, v in value_map.items()},
            "scale": scale,
            "percentiles": list(percentiles) if scale == "percentile" else None,
            "bits": bits,
            "size": size,
            "spacing_mm": spacing,
        },
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return ImportSummary(out, len(cases), len(rows), skipped, names, notes)


def _prepare_case(
    case: Case,
    axis: int,
    value_map: dict[int, int] | None,
    scale: str,
    percentiles: tuple[float, float],
    bits: int,
    size: int | None,
    spacing: float | None,
    notes: list[str],
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Steps 0-3 of the module docstring for one case: its image pixels and its integer labels, on the
    image's voxel grid, and the image's voxel sizes (mm, before any resampling); appends a note for each
    change the import made. Raises DataError naming the file."""
    image, image_affine = read_volume_affine(case.image)
    zooms = voxel_sizes(image_affine)
    label, label_affine = read_volume_affine(case.labels)
    label, note = align_labels(image_affine, label, label_affine, image.shape, case.labels)
    notes += [note] if note else []
    label = _integer_labels(label, case.labels)
    if value_map is not None:
        outside = sorted(set(np.unique(label).tolist()) - set(value_map))
        if outside:
            raise DataError(f"{case.labels}: label values {outside} outside --map {_map_text(value_map)}")
    if image.dtype.kind == "f" or scale == "percentile":
        image, note = finite_voxels(image, case.image)
        notes += [note] if note else []
    if spacing is not None:
        # NaN would spread through the interpolation: resample with 0 there, then put NaN back where
        # nearest-neighbour resampling of the NaN mask puts it
        bad = np.isnan(image) if image.dtype.kind == "f" else np.zeros(image.shape, bool)
        _, bad = resample_in_plane(bad, bad.astype(np.uint8), zooms, axis, spacing)
        image, label = resample_in_plane(np.where(np.isnan(image), 0.0, image), label, zooms, axis, spacing)
        image[bad > 0] = np.nan
    if scale == "percentile":
        pixels = scale_intensities(image, percentiles, bits)
    else:
        pixels = _stored_integers(image, bits, case.image)
    if size is not None:
        window = crop_window(label, axis, size)
        cropped = crop_or_pad(label, axis, window)
        cut = int(np.count_nonzero(label)) - int(np.count_nonzero(cropped))
        if cut:
            raise DataError(
                f"{case.labels}: the labelled region does not fit --size {size} ({cut} labelled "
                f"voxels would be cut off); use a larger --size or --spacing"
            )
        if value_map is not None and 0 not in value_map and (cropped == 0).any():
            raise DataError(
                f"{case.labels}: padding to --size {size} adds label 0, which --map {_map_text(value_map)} does not map"
            )
        pixels, label = crop_or_pad(pixels, axis, window), cropped
    return pixels, label, zooms


def _map_text(mapping: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in mapping.items())
