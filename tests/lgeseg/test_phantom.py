"""The built-in synthetic phantom: deterministic, in the real export format, anatomically plausible."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lgeseg import phantom
from lgeseg.data import load_dataset, split_dataset
from lgeseg.phantom import PHANTOM_VERSION, generate_phantom, phantom_dir

SMALL = 4  # patients: enough for every feature, fast enough for unit tests


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("phantom"), n_patients=SMALL, seed=0)


def _digest(root: Path) -> str:
    """SHA-256 over every file's name and bytes, in sorted order."""
    sha = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        sha.update(path.relative_to(root).as_posix().encode())
        sha.update(path.read_bytes())
    return sha.hexdigest()


def test_same_seed_gives_same_bytes(small, tmp_path):
    again = generate_phantom(tmp_path / "again", n_patients=SMALL, seed=0)
    assert _digest(again) == _digest(small)


def test_other_seed_gives_other_data(small, tmp_path):
    other = load_dataset(generate_phantom(tmp_path / "other", n_patients=SMALL, seed=1))
    first = load_dataset(small)
    assert first.images.shape != other.images.shape or not np.array_equal(first.images, other.images)


def test_folder_format(small):
    assert {p.name for p in small.iterdir()} == {"images", "masks", "manifest.csv", "dataset.json", "README.txt"}
    meta = json.loads((small / "dataset.json").read_text())
    assert meta["labels"] == {"blood_pool": 255, "background": 128, "myocardium": 0}
    assert meta["synthetic"] is True
    assert "SYNTHETIC" in (small / "README.txt").read_text()
    with (small / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"file", "patient", "slice"} <= set(rows[0])
    assert sorted(r["file"] for r in rows) == sorted(p.name for p in (small / "images").iterdir())
    per_patient = {}
    for row in rows:
        per_patient.setdefault(row["patient"], []).append(int(row["slice"]))
    assert len(per_patient) == SMALL
    assert all(10 <= len(s) <= 16 and sorted(s) == list(range(len(s))) for s in per_patient.values())


def test_loads_as_dataset_with_three_classes(small):
    data = load_dataset(small)
    assert data.images.shape[1:] == (128, 128) and data.images.dtype == np.float32
    assert list(data.labels) == ["blood_pool", "background", "myocardium"]
    assert data.patients is not None and len(set(data.patients)) == SMALL
    for mask in data.masks:
        np.testing.assert_array_equal(np.unique(mask), [0, 1, 2])  # every slice has all three regions
    raw = np.stack([np.asarray(Image.open(small / "masks" / f)) for f in data.files])
    assert set(np.unique(raw).tolist()) == {0, 128, 255}


def test_myocardium_is_a_ring_around_the_blood_pool(small):
    data = load_dataset(small)
    blood, background = data.masks == 0, data.masks == 1
    # No blood-pool pixel has a background 4-neighbour: the myocardium separates them everywhere.
    vertical = (blood[:, 1:] & background[:, :-1]) | (blood[:, :-1] & background[:, 1:])
    horizontal = (blood[:, :, 1:] & background[:, :, :-1]) | (blood[:, :, :-1] & background[:, :, 1:])
    assert not vertical.any() and not horizontal.any()
    # The heart lies inside the image: the border is background only.
    masks = data.masks
    border = np.concatenate([masks[:, 0], masks[:, -1], masks[:, :, 0], masks[:, :, -1]], axis=1)
    assert (border == 1).all()


def test_lge_contrast_dark_myocardium_bright_blood_and_infarcts(small):
    data = load_dataset(small)
    with (small / "manifest.csv").open(newline="") as fh:
        scar = {r["file"]: int(r["scar_pixels"]) for r in csv.DictReader(fh)}
    blood = [img[m == 0].mean() for img, m in zip(data.images, data.masks)]
    myo = [img[m == 2].mean() for img, m in zip(data.images, data.masks)]
    healthy = [b > my + 0.2 for b, my, f in zip(blood, myo, data.files) if scar[f] == 0]
    assert all(healthy)
    assert any(scar.values()), "some slices of some patients must show an infarct"
    # Infarcted myocardium is brighter than the blood pool: its brightest ring pixels show it.
    infarcted = [i for i, f in enumerate(data.files) if scar[f] > 30]
    assert infarcted
    assert all(np.percentile(data.images[i][data.masks[i] == 2], 99) > blood[i] for i in infarcted)


def test_split_by_patient(small):
    data = load_dataset(small)
    split = split_dataset(data, train=0.5, val=0.25, test=0.25, seed=0)
    assert split.by == "patient"
    owners = [{data.patients[i] for i in part} for part in (split.train, split.val, split.test)]
    assert all(owners) and sum(map(len, owners)) == SMALL


def test_phantom_dir_generates_once_into_the_cache(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", logger="lgeseg")
    monkeypatch.setenv("LGESEG_CACHE", str(tmp_path))
    calls = []
    real = phantom.generate_phantom
    monkeypatch.setattr(phantom, "generate_phantom", lambda out: calls.append(out) or real(out, n_patients=2, seed=0))
    path = phantom_dir()
    assert path == tmp_path / f"phantom-v{PHANTOM_VERSION}"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and "SYNTHETIC" in notes[0]
    caplog.clear()
    assert phantom_dir() == path and len(calls) == 1  # cached: not generated again
    assert caplog.records == []
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary folder left behind


def test_load_dataset_none_is_the_synthetic_phantom(tmp_path, monkeypatch):
    monkeypatch.setenv("LGESEG_CACHE", str(tmp_path))
    real = phantom.generate_phantom
    monkeypatch.setattr(phantom, "generate_phantom", lambda out: real(out, n_patients=2, seed=0))
    data = load_dataset(None)
    assert data.synthetic is True
    assert data.root == tmp_path / f"phantom-v{PHANTOM_VERSION}"
    assert len(set(data.patients)) == 2


def test_default_phantom_size(tmp_path):
    data = load_dataset(generate_phantom(tmp_path / "full"))
    assert len(set(data.patients)) == 20 and 200 <= len(data.files) <= 320
