"""Datasets without ``manifest.csv``: patients are read from ``<patient>_slice<k>.png`` names (and the
loader says so); where names do not say, the split is by image and a loud warning says so."""

from __future__ import annotations

import csv
import logging

import pytest
from conftest import write_dataset_dir

from lgeseg.data import load_dataset, split_dataset


def _without_manifest(real, tmp_path):
    """The real export as a user may have it: images/ and masks/ only (linked, never copied)."""
    folder = tmp_path / "emidec-no-manifest"
    folder.mkdir()
    for sub in ("images", "masks", "dataset.json"):
        (folder / sub).symlink_to(real / sub)
    return folder


@pytest.mark.realdata
def test_real_slices_without_manifest_are_split_by_patient(real_data_dir, tmp_path, caplog):
    with (real_data_dir / "manifest.csv").open() as fh:
        truth = {row["file"]: row["patient"] for row in csv.DictReader(fh)}
    with caplog.at_level(logging.INFO, logger="lgeseg.data"):
        dataset = load_dataset(_without_manifest(real_data_dir, tmp_path))
    assert dataset.patients == [truth[name] for name in dataset.files]
    notes = [r.getMessage() for r in caplog.records if "no manifest.csv" in r.getMessage()]
    assert len(notes) == 1 and f"({len(set(truth.values()))} patients, {len(truth)} slices)" in notes[0]
    split = split_dataset(dataset, 0.6, 0.2, 0.2, seed=0)
    assert split.by == "patient"
    train = {dataset.patients[i] for i in split.train}
    assert not train & {dataset.patients[i] for i in split.test + split.val}  # no patient leaks


@pytest.mark.parametrize(
    "patient_of",
    [
        {
            "Case_P001_slice000.png": "Case_P001",
            "Case_P001_slice001.png": "Case_P001",
            "Case_N2_slice000.png": "Case_N2",
        },
        {"a_SLICE1.png": "a", "a_slice02.png": "a", "b_slice1.png": "b"},
        {"x_slice1_slice002.png": "x_slice1", "y_slice003.png": "y"},  # the last _slice<k> is the slice
    ],
)
def test_patient_names_are_read_from_slice_names(tmp_path, patient_of):
    root = write_dataset_dir(tmp_path / "d", n_patients=1, slices=len(patient_of), manifest=False)
    for old, new in zip(sorted((root / "images").iterdir()), patient_of):
        old.rename(root / "images" / new)
        (root / "masks" / old.name).rename(root / "masks" / new)
    dataset = load_dataset(root)
    assert dataset.patients == [patient_of[name] for name in dataset.files]
    assert split_dataset(dataset, 0.5, 0.0, 0.5).by == "patient"


@pytest.mark.parametrize("odd", ["all", "one"])
def test_names_that_do_not_say_the_patient_split_by_image_with_a_loud_warning(tmp_path, caplog, odd):
    root = write_dataset_dir(tmp_path / "d", n_patients=2, slices=2, manifest=False)  # p00_s0.png, ...
    if odd == "one":  # all but one name say the patient: still no patient for that one, so by image
        for k, path in enumerate(sorted((root / "images").iterdir())[1:]):
            path.rename(root / "images" / f"p_slice{k}.png")
            (root / "masks" / path.name).rename(root / "masks" / f"p_slice{k}.png")
    with caplog.at_level(logging.WARNING, logger="lgeseg.data"):
        dataset = load_dataset(root)
    assert dataset.patients is None and split_dataset(dataset, 0.5, 0.0, 0.5).by == "image"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "SPLIT BY IMAGE" in warnings[0].getMessage()
    assert "'p00_s0.png'" in warnings[0].getMessage()


def test_a_manifest_still_decides(tmp_path, caplog):
    root = write_dataset_dir(tmp_path / "d", n_patients=2, slices=2)
    # names p00_s0.png say no patient, but the manifest does: no inference, no warning
    with caplog.at_level(logging.INFO, logger="lgeseg.data"):
        dataset = load_dataset(root)
    assert dataset.patients == ["patient00", "patient00", "patient01", "patient01"]
    assert not [r for r in caplog.records if "manifest" in r.getMessage()]
