"""Datasets in the study's export format, and their train/validation/test split.

A dataset folder holds ``images/*.png`` and ``masks/*.png`` paired by file name, an optional
``manifest.csv`` with ``file`` and ``patient`` columns (without it, patients are read from names
``<patient>_slice<k>.png``; where names do not say, the split is by image, with a loud warning), and an
optional ``dataset.json`` whose ``labels`` maps region names to mask pixel values. Masks are turned into
class indices in label-map order. Every problem with the input raises a one-line
:class:`~lgeseg.errors.DataError` naming the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .config import check_split_fractions
from .errors import DataError
from .phantom import phantom_dir
from .png import IGNORE_INDEX, read_image, read_mask, write_mask

__all__ = [
    "DEFAULT_LABELS",
    "IGNORE_INDEX",
    "Dataset",
    "Split",
    "check_ignore",
    "fold_groups",
    "folds_record",
    "ignore_near",
    "label_map_near",
    "load_dataset",
    "pair_mask_files",
    "parse_labels",
    "png_names",
    "read_ignore",
    "read_image",
    "read_label_map",
    "read_mask",
    "read_mask_pairs",
    "read_manifest_column",
    "split_dataset",
    "split_from_config",
    "write_mask",
]

logger = logging.getLogger(__name__)

#: Label map used when a dataset has no ``dataset.json``: the study's white / grey / black regions.
DEFAULT_LABELS: dict[str, int] = {"region1": 255, "region2": 128, "region3": 0}


def read_label_map(root: str | Path) -> dict[str, int]:
    """The ``labels`` of ``root/dataset.json``, else :data:`DEFAULT_LABELS`."""
    meta = Path(root) / "dataset.json"
    if not meta.exists():
        return dict(DEFAULT_LABELS)
    try:
        labels = json.loads(meta.read_text()).get("labels")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{meta}: cannot read label map ({exc})") from None
    if labels is None:
        return dict(DEFAULT_LABELS)
    if (
        not isinstance(labels, dict)
        or len(labels) < 2
        or not all(isinstance(v, int) and 0 <= v <= 255 for v in labels.values())
        or len(set(labels.values())) != len(labels)
    ):
        raise DataError(f"{meta}: 'labels' must map at least two names to distinct pixel values 0-255, got {labels!r}")
    return {str(k): int(v) for k, v in labels.items()}


def read_ignore(root: str | Path, labels: dict[str, int]) -> int | None:
    """The ``ignore`` pixel value of ``root/dataset.json`` (unlabelled pixels), or None.

    Raises:
        DataError: the value is not an integer 0-255, or it is also a label's value.
    """
    meta = Path(root) / "dataset.json"
    if not meta.exists():
        return None
    try:
        value = json.loads(meta.read_text()).get("ignore")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise DataError(f"{meta}: cannot read label map ({exc})") from None
    return check_ignore(value, labels, f"{meta}: 'ignore'")


def check_ignore(value: object, labels: dict[str, int], where: str) -> int | None:
    """``value`` as an ignore pixel value: None, or an integer 0-255 that no label uses."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise DataError(f"{where} must be a pixel value 0-255, got {value!r}")
    taken = [name for name, v in labels.items() if v == value]
    if taken:
        raise DataError(
            f"{where} is {value}, which is also the value of label {taken[0]!r}; "
            f"the ignore value must differ from every label"
        )
    return value


def parse_labels(text: str, option: str = "--labels") -> dict[str, int]:
    """Parse ``name=value,name=value`` (the ``--labels`` option; errors name ``option``)."""
    labels: dict[str, int] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) > 255:
            raise DataError(f"{option}: expected name=value with value 0-255, got {item!r}")
        labels[name.strip()] = int(value)
    if len(labels) < 2 or len(set(labels.values())) != len(labels):
        raise DataError(f"{option}: need at least two names with distinct values, got {text!r}")
    return labels


# --------------------------------------------------------------------------------------------- dataset


@dataclass
class Dataset:
    """A whole dataset in memory: images, masks as class indices, and per-file patient ids."""

    root: Path  #: folder it was read from (the cache folder for the phantom)
    files: list[str]  #: image file names, sorted
    images: np.ndarray  #: float32 (N, H, W) in [0, 1]
    masks: np.ndarray  #: uint8 (N, H, W) class indices in label-map order
    labels: dict[str, int]  #: ordered name -> mask pixel value; position = class index
    patients: list[str] | None  #: per file, from manifest.csv's ``patient`` column, else None
    synthetic: bool  #: True for the built-in phantom
    ignore: int | None = None  #: mask pixel value of unlabelled pixels (``IGNORE_INDEX`` in ``masks``)


def png_names(*folders: Path) -> list[list[str]]:
    """Sorted ``*.png`` file names of each folder, skipping dot-files (``._x.png`` of macOS, ``.DS_Store``).

    Copies made on a Mac carry AppleDouble ``._*`` files that are not PNGs; they are left out, and how
    many were left out is said once, in one logged warning for all ``folders``.
    """
    found, hidden = [], []
    for folder in folders:
        names = []
        for p in folder.iterdir():
            if p.name.startswith("."):
                if p.is_file():
                    hidden.append(f"{folder.name}/{p.name}")
            elif p.suffix.lower() == ".png" and p.is_file():
                names.append(p.name)
        found.append(sorted(names))
    if hidden:
        where = " and ".join(f"{f.name}/" for f in folders)
        logger.warning(
            "%s: skipped %d dot-file(s) in %s (%s)", folders[0].parent, len(hidden), where, _listed(sorted(hidden))
        )
    return found


def _listed(names: list[str], limit: int = 3) -> str:
    """``a.png, b.png, c.png and 4 more``: keeps messages about many files on one short line."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _pair_files(root: Path) -> list[str]:
    """Sorted image names that have a mask of the same name; any unpaired file is an error."""
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    image_dir, mask_dir = root / "images", root / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found; a dataset needs images/*.png and masks/*.png")
    images, masks = png_names(image_dir, mask_dir)
    if not images:
        raise DataError(f"{image_dir}: no PNG images")
    unmasked = sorted(set(images) - set(masks))
    if unmasked:
        raise DataError(
            f"{image_dir / unmasked[0]}: no mask of the same name in {mask_dir} "
            f"({len(unmasked)} image(s) without mask: {_listed(unmasked)})"
        )
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(
            f"{mask_dir / orphans[0]}: no image of the same name in {image_dir} "
            f"({len(orphans)} mask(s) without image: {_listed(orphans)})"
        )
    return images


def read_manifest_table(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and rows of a ``manifest.csv``: BOM tolerated, names and cells stripped.

    Args:
        path: the manifest file.

    Returns:
        (column names in file order, ``[(line number, {column: value}), ...]``); a missing cell is ``""``.

    Raises:
        DataError: the file cannot be read or parsed as CSV.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            # Keys of None collect surplus fields; values of None stand for missing ones.
            rows = [
                (reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None})
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read manifest ({exc})") from None
    return columns, rows


#: File names a patient can be read from when there is no manifest: ``<patient>_slice<k>.png``
#: (what ``import-nifti`` and the EMIDEC export write).
SLICE_NAME = re.compile(r"(?P<patient>.+)_slice(?P<slice>\d+)\.png", re.IGNORECASE)


def infer_patients(root: Path, files: list[str]) -> list[str] | None:
    """Patient id per file from names ``<patient>_slice<k>.png`` (:data:`SLICE_NAME`), for a folder
    without ``manifest.csv``; says so in one log line. None, with a loud warning that the split will be
    by image (slices of one patient in training and test), when any name does not have that form.
    """
    matches = [SLICE_NAME.fullmatch(name) for name in files]
    if files and all(matches):
        patients = [m["patient"] for m in matches]
        logger.info(
            "%s: no manifest.csv: patients read from the file names <patient>_slice<k>.png (%d patients, %d "
            "slices); write manifest.csv to set them otherwise",
            root,
            len(set(patients)),
            len(files),
        )
        return patients
    odd = next(name for name, m in zip(files, matches) if not m) if files else None
    logger.warning(
        "%s: no manifest.csv and file names not of the form <patient>_slice<k>.png (e.g. %r): the data will be "
        "SPLIT BY IMAGE, so slices of one patient can be in training and test and test scores will be too "
        "high; write manifest.csv with file,patient columns",
        root,
        odd,
    )
    return None


def _read_patients(root: Path, files: list[str]) -> list[str] | None:
    """Patient id per file from ``root/manifest.csv``; without a manifest from the file names
    (:func:`infer_patients`), else None (the split is then by image, with a warning).

    The manifest must list exactly the image files, once each, with a non-empty patient.
    """
    manifest = root / "manifest.csv"
    if not manifest.exists():
        return infer_patients(root, files)
    columns, rows = read_manifest_table(manifest)
    missing = [c for c in ("file", "patient") if c not in columns]
    if missing:
        raise DataError(
            f"{manifest}: missing column(s) {', '.join(missing)}; "
            f"expected a header with file,patient (found {','.join(columns) or 'none'})"
        )
    patient_of: dict[str, str] = {}
    for line, row in rows:
        name, patient = row["file"], row["patient"]
        if not patient:
            raise DataError(f"{manifest}: line {line}: empty patient for {name!r}")
        if name in patient_of:
            raise DataError(f"{manifest}: line {line}: {name!r} listed twice")
        patient_of[name] = patient
    absent = sorted(set(patient_of) - set(files))
    if absent:
        raise DataError(f"{manifest}: {len(absent)} row(s) name files not in images/: {_listed(absent)}")
    unlisted = sorted(set(files) - set(patient_of))
    if unlisted:
        raise DataError(f"{manifest}: {len(unlisted)} image(s) not in the manifest: {_listed(unlisted)}")
    return [patient_of[name] for name in files]


def load_dataset(path: str | Path | None, progress: bool = False) -> Dataset:
    """Read a dataset folder into memory, checking it fully; ``None`` means the built-in phantom.

    The phantom is generated into the cache on first use (see :func:`lgeseg.phantom.phantom_dir`).
    ``progress`` shows a tqdm bar while the PNGs are read.
    """
    synthetic = path is None
    if path is None:
        path = phantom_dir()
    root = Path(path).expanduser()
    files = _pair_files(root)
    labels = read_label_map(root)
    ignore = read_ignore(root, labels)
    patients = _read_patients(root, files)
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    for name in tqdm(files, desc=f"reading {root.name}", unit="img", disable=not progress):
        image = read_image(root / "images" / name)
        mask = read_mask(root / "masks" / name, labels, ignore)
        if mask.shape != image.shape:
            raise DataError(f"{root / 'masks' / name}: mask is {_size(mask)} but its image is {_size(image)}")
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{root / 'images' / name}: image is {_size(image)} but {files[0]} is "
                f"{_size(images[0])}; all images must have one size"
            )
        images.append(image)
        masks.append(mask)
    return Dataset(
        root=root,
        files=files,
        images=np.stack(images),
        masks=np.stack(masks),
        labels=labels,
        patients=patients,
        synthetic=synthetic,
        ignore=ignore,
    )


def _size(arr: np.ndarray) -> str:
    """An array's size as printed in every message: ``H x W`` (rows first, as numpy and MATLAB)."""
    return "x".join(str(n) for n in arr.shape)


# -------------------------------------------------------------------------------- mask folders (evaluate)

#: :func:`read_mask_pairs` shows a progress bar only for at least this many pairs.
PROGRESS_MIN_PAIRS = 50


def _meta_near(truth_dir: Path) -> Path | None:
    """The folder whose ``dataset.json`` describes a folder of true masks: its parent (the dataset layout,
    ``<root>/masks``) or the folder itself; None when neither has one."""
    return next((root for root in (truth_dir.parent, truth_dir) if (root / "dataset.json").exists()), None)


def label_map_near(truth_dir: str | Path) -> dict[str, int]:
    """The label map of a folder of true masks: the ``dataset.json`` of its parent (the dataset layout,
    ``<root>/masks``) or of the folder itself, else :data:`DEFAULT_LABELS`."""
    meta = _meta_near(Path(truth_dir))
    return read_label_map(meta) if meta is not None else dict(DEFAULT_LABELS)


def ignore_near(truth_dir: str | Path, labels: dict[str, int]) -> int | None:
    """The ``ignore`` value of the ``dataset.json`` next to a folder of true masks (as
    :func:`label_map_near` finds it), checked against ``labels``; None without one."""
    meta = _meta_near(Path(truth_dir))
    return read_ignore(meta, labels) if meta is not None else None


def _mask_names(pred_dir: Path, truth_dir: Path) -> tuple[set[str], set[str]]:
    """PNG file names of both folders (dot-files skipped, counted once); DataError if a folder is missing
    or holds none."""
    for folder, side in ((pred_dir, "prediction"), (truth_dir, "truth")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {side} folder not found")
    same = pred_dir.resolve() == truth_dir.resolve()
    found = png_names(pred_dir) if same else png_names(pred_dir, truth_dir)
    names = (set(found[0]), set(found[-1]))
    for folder, side, side_names in ((pred_dir, "prediction", names[0]), (truth_dir, "truth", names[1])):
        if not side_names:
            raise DataError(f"{folder}: {side} folder holds no .png masks")
    return names


def pair_mask_files(pred_dir: str | Path, truth_dir: str | Path, predicted_only: bool = False) -> list[str]:
    """Sorted file names present in both folders of masks.

    Args:
        predicted_only: leave out truth masks that have no prediction (a run's ``predictions/`` of its test
            split against a data set's ``masks/``); a prediction without a truth mask is still an error.

    Raises:
        DataError: a folder is missing or holds no PNG, or a file of one side has no namesake on the
            other (naming the first and how many more).
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    pred_names, truth_names = _mask_names(pred_dir, truth_dir)
    sides = [(pred_names, truth_names, "prediction", "truth"), (truth_names, pred_names, "truth", "prediction")]
    for names, other, side, other_side in sides[: 1 if predicted_only else 2]:
        missing = sorted(names - other)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            other_dir = truth_dir if other_side == "truth" else pred_dir
            raise DataError(f"{other_dir / missing[0]}: {other_side} mask missing for {side} mask {missing[0]}{more}")
    return sorted(pred_names)


def read_mask_pairs(
    pred_dir: str | Path,
    truth_dir: str | Path,
    labels: dict[str, int],
    progress: bool = False,
    ignore: int | None = None,
    predicted_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read predicted and true masks of the same file names (:func:`pair_mask_files`, ``predicted_only``
    as there) as class indices.

    Args:
        pred_dir: folder of predicted mask PNGs.
        truth_dir: folder of true mask PNGs.
        labels: ordered region name -> pixel value (:func:`lgeseg.png.read_mask`).
        progress: show a tqdm bar while reading, when there are at least :data:`PROGRESS_MIN_PAIRS` pairs.
        ignore: the truth pixel value of unlabelled pixels (:data:`IGNORE_INDEX` in ``truth``); a
            prediction never holds it, so there it is a value outside the label map.

    Returns:
        ``(pred, truth, files)``: uint8 class indices, each of shape (N, H, W), and the N file names.

    Raises:
        DataError: unpaired or unreadable files, values outside the label map, a prediction whose size
            differs from its truth, or masks of different sizes (sizes given as H x W).
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    names = pair_mask_files(pred_dir, truth_dir, predicted_only)
    preds: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    show = progress and len(names) >= PROGRESS_MIN_PAIRS
    for name in tqdm(names, desc="reading masks", unit="mask", disable=not show):
        truth = read_mask(truth_dir / name, labels, ignore)
        pred = read_mask(pred_dir / name, labels)
        if pred.shape != truth.shape:
            raise DataError(
                f"{pred_dir / name}: prediction size {_size(pred)} differs from truth size "
                f"{_size(truth)} ({truth_dir / name})"
            )
        if truths and truth.shape != truths[0].shape:
            raise DataError(
                f"{truth_dir / name}: size {_size(truth)} differs from {_size(truths[0])} of "
                f"{truth_dir / names[0]}; all masks of a set must have one size"
            )
        preds.append(pred)
        truths.append(truth)
    return np.stack(preds), np.stack(truths), names


# ----------------------------------------------------------------------------------------------- split


@dataclass
class Split:
    """Disjoint train / validation / test indices into :attr:`Dataset.files`, each sorted."""

    train: list[int]
    val: list[int]
    test: list[int]
    by: str  #: "patient" or "image"
    seed: int
    fractions: tuple[float, float, float]
    folds: int | None = None  #: k of a k-fold cross-validation split, None for one split
    fold: int = 0  #: which fold is the test set (0 .. folds - 1)
    stratify: str | None = None  #: manifest column balanced across the folds

    def to_json(self, dataset: Dataset) -> dict:
        """The split as file names, with a hash that identifies it across machines and runs.

        ``hash`` is the first 16 hex digits of the SHA-256 of the JSON text of
        ``[train_files, val_files, test_files]``; a cross-validation split also records ``folds``, ``fold``
        and ``stratify``, and hashes ``{"folds", "fold", "stratify", "parts": [train, val, test]}`` (so the
        folds are part of the split fingerprint; a split without folds is recorded exactly as before).
        """
        lists = [[dataset.files[i] for i in part] for part in (self.train, self.val, self.test)]
        cv = {} if self.folds is None else {"folds": self.folds, "fold": self.fold, "stratify": self.stratify}
        blob = json.dumps(lists) if not cv else json.dumps({**cv, "parts": lists}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return {
            "by": self.by,
            "seed": self.seed,
            "fractions": list(self.fractions),
            **cv,
            "hash": digest,
            "train": lists[0],
            "val": lists[1],
            "test": lists[2],
        }


def _groups(dataset: Dataset) -> tuple[str, dict[str, list[int]]]:
    """``(by, {group: image indices})``: patients when the manifest names them, else single images."""
    by = "image" if dataset.patients is None else "patient"
    keys = dataset.files if dataset.patients is None else dataset.patients
    members: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        members.setdefault(key, []).append(index)
    return by, members


def _by_fractions(
    members: dict[str, list[int]], fractions: tuple[float, float, float], seed: int, where: str, by: str
) -> list[list[int]]:
    """Groups to train / val / test by the fractions rule of :func:`split_dataset` (image-count targets)."""
    groups = sorted(members)
    wanted = [k for k, f in enumerate(fractions) if f > 0]
    if len(groups) < len(wanted):
        shown = "/".join(f"{f:g}" for f in fractions)
        raise DataError(
            f"{where}: {len(groups)} {by}(s) cannot fill {len(wanted)} non-empty splits (fractions {shown}); add data"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    total = sum(len(v) for v in members.values())
    # Splits with fraction 0 get target -inf so that they never look furthest below target.
    targets = np.where(np.array(fractions) > 0, np.array(fractions) * total, -np.inf)
    counts = np.zeros(3)
    parts: list[list[int]] = [[], [], []]
    for rank, g in enumerate(order):
        group = members[groups[g]]
        k = wanted[rank] if rank < len(wanted) else int(np.argmax(targets - counts))
        parts[k].extend(group)
        counts[k] += len(group)
    return parts


def read_manifest_column(root: str | Path, column: str, files: list[str]) -> list[str]:
    """Each file's value in ``column`` of ``root/manifest.csv``.

    Raises:
        DataError: no manifest, no such column (naming it and the columns there), or a file not listed.
    """
    manifest = Path(root) / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest}: not found; split.stratify {column!r} needs a manifest column")
    columns, rows = read_manifest_table(manifest)
    if column not in columns:
        raise DataError(
            f"{manifest}: no column {column!r} for split.stratify (columns: {', '.join(columns) or 'none'})"
        )
    value = {row.get("file", ""): row[column] for _, row in rows}
    missing = [f for f in files if f not in value]
    if missing:
        raise DataError(f"{manifest}: {len(missing)} image(s) not in the manifest: {_listed(missing)}")
    return [value[f] for f in files]


def fold_groups(dataset: Dataset, folds: int, seed: int = 0, stratify: str | None = None) -> list[list[str]]:
    """The k test groups of a patient-wise k-fold split: ``folds`` lists of patients (images without patients).

    scikit-learn's ``StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)`` over the
    images with the patient as group: every patient is in exactly one fold, fold sizes (images) are
    balanced and, with ``stratify``, so is each value of that manifest column (a patient's stratum is its
    first image's value). Deterministic given the seed, the file names and the scikit-learn version (a
    version that assigned folds differently shows as a changed split fingerprint, never silently).

    Raises:
        DataError: ``folds`` exceeds the number of patients, or the stratify column is missing.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    by, members = _groups(dataset)
    if folds > len(members):
        raise DataError(f"{dataset.root}: split.folds is {folds} but there are only {len(members)} {by}s")
    groups = sorted(members)
    strata = read_manifest_column(dataset.root, stratify, dataset.files) if stratify is not None else None
    # One row per group (the image counts enter as the group's weight through repeated rows).
    index = [i for g in groups for i in members[g]]
    group_of = [g for g in groups for _ in members[g]]
    labels = [strata[members[g][0]] if strata is not None else "all" for g in groups for _ in members[g]]
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    import warnings

    with warnings.catch_warnings():  # "least populated class has only n members": a fact of small strata
        warnings.simplefilter("ignore", UserWarning)
        tests = [sorted({group_of[j] for j in test}) for _, test in cv.split(np.zeros(len(index)), labels, group_of)]
    return tests


def split_dataset(
    dataset: Dataset,
    train: float = 0.6,
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
    folds: int | None = None,
    fold: int = 0,
    stratify: str | None = None,
) -> Split:
    """Split by patient when patients are known (slices of one patient are correlated), else by image.

    Groups (patients, or single images) are shuffled with ``numpy.random.default_rng(seed)`` after
    sorting, so the split depends only on the seed and the file names. Each split with a positive
    fraction first gets one group; every further group goes to the split furthest below its target image
    count, so image counts end within one patient of the fractions. A split with fraction 0 stays empty;
    one with a positive fraction that would come out empty is a :class:`DataError`. The fractions follow
    :func:`lgeseg.config.check_split_fractions` (empty splits allowed).

    With ``folds`` = k (cross-validation): the test set is fold ``fold`` of :func:`fold_groups` (``test``
    is not used), and the other patients go to train and validation by the rule above with fractions
    ``train / (train + val)`` and ``val / (train + val)``.

    Raises:
        DataError: too few groups for the splits, ``folds`` above the number of patients, a stratify
            column missing from the manifest, or ``fold`` outside ``0 .. folds - 1``.
    """
    fractions = check_split_fractions(train, val, test, allow_empty=True)
    by, members = _groups(dataset)
    if folds is None:
        parts = _by_fractions(members, fractions, seed, str(dataset.root), by)
        return Split(
            train=sorted(parts[0]), val=sorted(parts[1]), test=sorted(parts[2]), by=by, seed=seed, fractions=fractions
        )
    if not 0 <= fold < folds:
        raise DataError(f"split.fold must be from 0 to {folds - 1}, got {fold}")
    test_groups = set(fold_groups(dataset, folds, seed, stratify)[fold])
    rest = {g: v for g, v in members.items() if g not in test_groups}
    share = fractions[0] + fractions[1]
    parts = _by_fractions(rest, (fractions[0] / share, fractions[1] / share, 0.0), seed, str(dataset.root), by)
    test_idx = [i for g in test_groups for i in members[g]]
    return Split(
        train=sorted(parts[0]),
        val=sorted(parts[1]),
        test=sorted(test_idx),
        by=by,
        seed=seed,
        fractions=fractions,
        folds=folds,
        fold=fold,
        stratify=stratify,
    )


def folds_record(dataset: Dataset, split: dict) -> dict:
    """A whole cross-validation (``split.folds`` = k) as one record: what a study over every fold stores as its
    split fingerprint, so any fold's change shows on ``--resume``.

    Returns ``{"by", "seed", "fractions", "folds", "stratify", "hash", "fold_splits"}`` where
    ``fold_splits[f]`` is fold f's ``Split.to_json`` and ``hash`` the first 16 hex digits of the SHA-256 of
    the JSON list of the folds' hashes.

    Raises:
        DataError: as :func:`split_dataset` (``folds`` above the number of patients, a missing stratify column).
    """
    folds = split["folds"]
    parts = [split_from_config(dataset, {**split, "fold": fold}).to_json(dataset) for fold in range(folds)]
    digest = hashlib.sha256(json.dumps([p["hash"] for p in parts]).encode()).hexdigest()[:16]
    first = parts[0]
    return {
        "by": first["by"],
        "seed": first["seed"],
        "fractions": first["fractions"],
        "folds": folds,
        "stratify": first["stratify"],
        "hash": digest,
        "fold_splits": parts,
    }


def split_from_config(dataset: Dataset, split: dict) -> Split:
    """:func:`split_dataset` with the keys of a config's ``split`` section (``folds`` etc. optional)."""
    return split_dataset(
        dataset,
        split["train"],
        split["val"],
        split["test"],
        seed=split["seed"],
        folds=split.get("folds"),
        fold=split.get("fold", 0),
        stratify=split.get("stratify"),
    )
