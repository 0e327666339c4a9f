"""Fingerprints of a dataset and of its split, so results are never mixed across changed data.

A run or study records the fingerprint of the data it was made from (every image and mask file's name and
content hash, the label map with its ignore value, the manifest) and of its split (the file names of each
part). Whoever continues it (``train`` from a checkpoint, ``grid --resume``) computes them again and
refuses to go on when they differ, naming the first file that differs: metrics of a test split that
changed half-way are not comparable, and nothing in the numbers would show it.

Hashing is cheap: file hashes are cached in ``$LGESEG_CACHE/fingerprints`` (else
``~/.cache/lgeseg/fingerprints``) by (size, mtime_ns), the test ``git`` uses for its index, so a
dataset already seen costs one ``stat`` per file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset
from .errors import DataError

#: Hex digits kept of each file's SHA-256 (40 bits; the whole fingerprint's hash keeps 16). Short, so the
#: fingerprint of the 708-slice EMIDEC set (~40 kB) fits any Optuna storage's user-attribute column.
FILE_DIGITS = 10
#: Entry of the fingerprint holding the label map and the ignore value.
LABEL_ENTRY = "label map"
#: Entry of the fingerprint holding the manifest's hash ("absent" without one).
MANIFEST_ENTRY = "manifest.csv"


def cache_dir() -> Path:
    """``$LGESEG_CACHE/fingerprints`` or ``~/.cache/lgeseg/fingerprints``."""
    root = Path(os.environ.get("LGESEG_CACHE") or Path.home() / ".cache" / "lgeseg").expanduser()
    return root / "fingerprints"


class _HashCache:
    """File hashes of one dataset folder keyed by (size, mtime_ns), kept in one JSON file per folder."""

    def __init__(self, root: Path) -> None:
        key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
        self.path = cache_dir() / f"{key}.json"
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def digest(self, path: Path, name: str) -> str:
        stat = path.stat()
        known = self.entries.get(name)
        if known is not None and known[0] == stat.st_size and known[1] == stat.st_mtime_ns:
            return known[2]
        value = hashlib.sha256(path.read_bytes()).hexdigest()[:FILE_DIGITS]
        self.entries[name] = [stat.st_size, stat.st_mtime_ns, value]
        self.changed = True
        return value

    def save(self) -> None:
        """Write the cache atomically; a cache that cannot be written only costs time next run."""
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w") as handle:
                json.dump(self.entries, handle)
            os.replace(tmp, self.path)
        except OSError:
            pass


def _label_entry(dataset: Dataset) -> str:
    return json.dumps({"labels": dataset.labels, "ignore": dataset.ignore}, sort_keys=False)


def data_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """The fingerprint of a dataset: per-file content hashes, the label map and the manifest.

    Files are hashed as stored (PNG bytes) when ``dataset.root`` holds them; a dataset built in memory
    (no ``images/`` folder) is hashed from its arrays instead.

    Args:
        dataset: a loaded dataset (its ``files`` name both ``images/`` and ``masks/`` files).

    Returns:
        ``{"hash": 16 hex digits, "entries": {"<file>": image hash + mask hash, "label map": JSON of labels
        and ignore, "manifest.csv": hash or "absent"}}``.
    """
    root = Path(dataset.root)
    entries: dict[str, str] = {}
    if (root / "images").is_dir():
        cache = _HashCache(root)
        for name in dataset.files:
            entries[name] = "".join(
                cache.digest(root / folder / name, f"{folder}/{name}") for folder in ("images", "masks")
            )
        manifest = root / "manifest.csv"
        entries[MANIFEST_ENTRY] = cache.digest(manifest, MANIFEST_ENTRY) if manifest.is_file() else "absent"
        cache.save()
    else:
        for name, image, mask in zip(dataset.files, dataset.images, dataset.masks):
            entries[name] = _array_digest(image) + _array_digest(mask)
        entries[MANIFEST_ENTRY] = hashlib.sha256(json.dumps(dataset.patients).encode()).hexdigest()[:FILE_DIGITS]
    entries[LABEL_ENTRY] = _label_entry(dataset)
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True).encode()).hexdigest()[:16]
    return {"hash": digest, "entries": entries}


def _array_digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:FILE_DIGITS]


def data_difference(stored: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first difference between two :func:`data_fingerprint` results, in words; None when equal."""
    if stored.get("hash") == now.get("hash"):
        return None
    old, new = stored.get("entries", {}), now.get("entries", {})
    if old.get(LABEL_ENTRY) != new.get(LABEL_ENTRY):
        return f"the label map changed (was {old.get(LABEL_ENTRY)}, now {new.get(LABEL_ENTRY)})"
    names = sorted((set(old) | set(new)) - {LABEL_ENTRY, MANIFEST_ENTRY}) + [MANIFEST_ENTRY]  # files first
    for name in names:
        shown = name if name == MANIFEST_ENTRY else f"images/{name}"
        if name not in new:
            return f"{shown} is gone"
        if name not in old:
            return f"{shown} is new"
        if old[name] != new[name]:
            if name != MANIFEST_ENTRY and old[name][:FILE_DIGITS] == new[name][:FILE_DIGITS]:
                shown = f"masks/{name}"
            return f"{shown} changed"
    return "the fingerprints differ"  # same entries, another hash: recorded by another version


def split_difference(stored: dict[str, Any], now: dict[str, Any]) -> str | None:
    """The first difference between two split records (``Split.to_json``), in words; None when equal."""
    if stored.get("hash") == now.get("hash"):
        return None
    cv_keys = ("folds", "fold", "stratify")
    if any(stored.get(k) != now.get(k) for k in cv_keys):
        was, is_now = ({k: d.get(k) for k in cv_keys if d.get(k) is not None} or "one split" for d in (stored, now))
        return f"the cross-validation fold changed (was {was}, now {is_now})"
    if "fold_splits" in stored and "fold_splits" in now:  # every fold of a study (lgeseg.data.folds_record)
        for fold, (old, new) in enumerate(zip(stored["fold_splits"], now["fold_splits"])):
            found = split_difference(old, new)
            if found is not None:
                return f"fold {fold}: {found}"
    for part in ("test", "val", "train"):
        old, new = set(stored.get(part) or []), set(now.get(part) or [])
        if old != new:
            moved = min(old ^ new)
            where = "left" if moved in old else "joined"
            return f"{moved} {where} the {part} split"
    return "the split's hash differs"


def recorded_fingerprints(out: Path) -> tuple[str, dict | None, dict | None]:
    """The data and split fingerprints a run folder recorded: ``(where, data, split)``.

    A finished run has them in ``run.json`` (and ``split.json``), a run in progress in ``last.pt``; a
    folder with neither (or written before fingerprints were recorded) gives None for both.

    Raises:
        DataError: ``last.pt`` cannot be read (:func:`lgeseg.checkpoint.read_checkpoint`), naming it.
    """
    info_path, last_path = out / "run.json", out / "last.pt"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
            split = json.loads((out / "split.json").read_text())
        except (OSError, ValueError):
            info, split = {}, None
        return str(info_path), info.get("data_fingerprint"), split
    if last_path.is_file():
        from .checkpoint import RESTART_REMEDY, read_checkpoint

        # mmap: the fingerprints are read without reading the weights.
        ckpt = read_checkpoint(last_path, mmap=True, remedy=RESTART_REMEDY)
        return str(last_path), ckpt.get("data_fingerprint"), ckpt.get("split")
    return str(out), None, None


def check_same(
    what: str, stored_data: dict | None, stored_split: dict | None, data: dict, split: dict, remedy: str
) -> None:
    """Raise :class:`~lgeseg.errors.DataError` when the recorded data or split differ from the present ones.

    Args:
        what: what recorded them, e.g. ``"runs/x/last.pt"`` or ``"study 'paper'"``.
        stored_data, stored_split: the recorded fingerprints (None: not recorded, nothing to compare).
        data, split: the present :func:`data_fingerprint` and ``Split.to_json`` of the dataset.
        remedy: what the user can do, e.g. ``"use a new --out"``.

    Raises:
        DataError: one line naming the first differing file and ``remedy``.
    """
    difference = None
    if stored_data is not None:
        difference = data_difference(stored_data, data)
    if difference is None and stored_split is not None:
        difference = split_difference(stored_split, split)
    if difference is not None:
        raise DataError(
            f"{what} was made from other data ({difference}); its results would not be "
            f"comparable: restore the data or {remedy}"
        )


__all__ = [
    "cache_dir",
    "check_same",
    "data_difference",
    "data_fingerprint",
    "recorded_fingerprints",
    "split_difference",
]
