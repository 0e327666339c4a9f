"""``import-nifti`` on messy volumes: NaN/inf voxels and label volumes stored in another orientation or
geometry than their image (real NIfTI files written with nibabel, imported through the command)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, inv_ornt_aff
from PIL import Image

from hpo.run import main

ZOOMS = (1.25, 1.5, 8.0)


def _affine(zooms=ZOOMS, origin=(-80.0, -60.0, 10.0)) -> np.ndarray:
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = origin
    return affine


def _save(volume: np.ndarray, path: Path, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, affine), path)


def _import(root: Path, out: Path, *extra: str) -> list[str]:
    return ["import-nifti", str(root), "--out", str(out), "--images", "*_DE.nii.gz", "--labels", "*_gd.nii.gz", *extra]


def _png(out: Path, folder: str, k: int = 0, case: str = "c1") -> np.ndarray:
    return np.asarray(Image.open(out / folder / f"{case}_slice{k:03d}.png"))


def _labels(shape=(4, 6, 3)) -> np.ndarray:
    """An asymmetric label volume: a flipped or transposed copy never matches it."""
    labels = np.zeros(shape, np.uint8)
    labels[0:2, 0:3, :] = 1
    labels[3, 5, :] = 2
    return labels


# ------------------------------------------------------------------------------------------------ NaN


def test_nan_voxels_are_left_out_of_the_percentiles_written_as_0_and_counted_once(tmp_path, capsys):
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)  # finite values 3..71 once NaN are set
    image[0, 0, :] = np.nan  # values 0, 1, 2
    image[1, 1, 0] = np.inf  # value 21
    _save(image, tmp_path / "v" / "c1_DE.nii.gz", _affine())
    _save(_labels(), tmp_path / "v" / "c1_gd.nii.gz", _affine())
    assert main(_import(tmp_path / "v", tmp_path / "out", "--percentiles", "0,100")) == 0
    out = capsys.readouterr().out
    assert out.count("4 of 72 voxels are NaN or infinite") == 1  # said once for the volume, not per slice
    plane = np.flipud(_png(tmp_path / "out", "images", 0)).T  # back to voxel (i, j) of slice 0
    finite = np.isfinite(image[..., 0])
    # hand computation: finite voxels of the volume run from 3 to 71 -> 0..255
    expected = np.rint((image[..., 0] - 3.0) / (71.0 - 3.0) * 255)
    assert np.array_equal(plane[finite], expected[finite])
    assert plane[0, 0] == 0 and plane[1, 1] == 0 and plane.max() > 0  # not all black


@pytest.mark.parametrize("extra", [["--spacing", "0.75"], ["--bits", "16"], ["--size", "8"]])
def test_nan_voxels_never_blacken_the_volume_with_other_options(tmp_path, extra):
    image = np.linspace(0, 1000, 4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    image[2, 2, 1] = np.nan
    _save(image, tmp_path / "v" / "c1_DE.nii.gz", _affine())
    _save(_labels(), tmp_path / "v" / "c1_gd.nii.gz", _affine())
    assert main(_import(tmp_path / "v", tmp_path / "out", *extra)) == 0
    for k in range(3):
        assert _png(tmp_path / "out", "images", k).max() > 0


def test_nan_with_scale_none_is_written_as_0(tmp_path):
    image = np.full((4, 6, 3), 7.0, np.float32)
    image[0, 0, 0] = np.nan
    _save(image, tmp_path / "v" / "c1_DE.nii.gz", _affine())
    _save(_labels(), tmp_path / "v" / "c1_gd.nii.gz", _affine())
    assert main(_import(tmp_path / "v", tmp_path / "out", "--scale", "none")) == 0
    plane = np.flipud(_png(tmp_path / "out", "images", 0)).T
    assert plane[0, 0] == 0 and (plane[np.isfinite(image[..., 0])] == 7).all()


@pytest.mark.parametrize(
    "which, match",
    [
        ("image", r"c1_DE\.nii\.gz: every voxel is NaN or infinite"),
        ("labels", r"c1_gd\.nii\.gz: label volume holds 1 NaN or infinite values"),
    ],
)
def test_an_all_nan_image_or_nan_labels_are_one_line(tmp_path, one_line_error, which, match):
    image = np.ones((4, 6, 3), np.float32)
    labels = _labels().astype(np.float32)
    if which == "image":
        image[:] = np.nan
    else:
        labels[1, 1, 1] = np.nan
    _save(image, tmp_path / "v" / "c1_DE.nii.gz", _affine())
    _save(labels, tmp_path / "v" / "c1_gd.nii.gz", _affine())
    line = one_line_error(_import(tmp_path / "v", tmp_path / "out"))
    assert re.search(match, line), line
    assert not (tmp_path / "out" / "images").exists()


# ------------------------------------------------------------------------------------------- geometry

#: Orientations a label volume may be stored in (nibabel ornt: output axis, flip), image axes (0, 1, 2).
ORIENTATIONS = {
    "flipped x": [[0, -1], [1, 1], [2, 1]],
    "flipped x and y": [[0, -1], [1, -1], [2, 1]],
    "x and y swapped": [[1, 1], [0, 1], [2, 1]],
    "slice axis first, z flipped": [[1, 1], [2, 1], [0, -1]],
}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_labels_stored_in_another_orientation_are_reoriented_onto_the_image(tmp_path, capsys, name):
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    labels = _labels()
    _save(image, tmp_path / "aligned" / "c1_DE.nii.gz", _affine())
    _save(labels, tmp_path / "aligned" / "c1_gd.nii.gz", _affine())
    assert main(_import(tmp_path / "aligned", tmp_path / "expected")) == 0
    # the same anatomy, stored in another voxel order: data and affine both say so
    ornt = np.array(ORIENTATIONS[name])
    _save(image, tmp_path / "moved" / "c1_DE.nii.gz", _affine())
    _save(
        apply_orientation(labels, ornt),
        tmp_path / "moved" / "c1_gd.nii.gz",
        _affine() @ inv_ornt_aff(ornt, labels.shape),
    )
    capsys.readouterr()
    assert main(_import(tmp_path / "moved", tmp_path / "out")) == 0
    assert "reoriented the labels" in capsys.readouterr().out
    for k in range(3):
        assert np.array_equal(_png(tmp_path / "out", "masks", k), _png(tmp_path / "expected", "masks", k))
        assert np.array_equal(_png(tmp_path / "out", "images", k), _png(tmp_path / "expected", "images", k))


@pytest.mark.parametrize(
    "change, match",
    [
        ("origin", r"c1_gd\.nii\.gz: origin \(-78, -60, 10\) mm differs from the image's \(-80, -60, 10\) mm"),
        ("spacing", r"c1_gd\.nii\.gz: voxel sizes \(1\.25, 1\.5, 6\) mm differ from the image's \(1\.25, 1\.5, 8\) mm"),
        ("rotation", r"c1_gd\.nii\.gz: voxel axis directions differ from the image's"),
        ("shape", r"c1_gd\.nii\.gz: label volume shape \(4, 6, 2\) differs from image volume shape \(4, 6, 3\)"),
        (
            "flipped shape",
            r"c1_gd\.nii\.gz: label volume shape \(6, 4, 2\) \(\(4, 6, 2\) once reoriented to the image's axes\)",
        ),
    ],
)
def test_labels_of_another_geometry_are_refused_in_one_line(tmp_path, one_line_error, change, match):

    labels, affine = _labels(), _affine()
    if change == "origin":
        affine = _affine(origin=(-78.0, -60.0, 10.0))
    elif change == "spacing":
        affine = _affine(zooms=(1.25, 1.5, 6.0))
    elif change == "rotation":
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        affine = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ _affine()  # in world space
    elif change == "shape":
        labels = labels[..., :2]
    else:
        labels = labels[..., :2].transpose(1, 0, 2)
        affine = _affine() @ inv_ornt_aff(np.array([[1, 1], [0, 1], [2, 1]]), (4, 6, 2))
    _save(np.ones((4, 6, 3), np.float32), tmp_path / "v" / "c1_DE.nii.gz", _affine())
    _save(labels, tmp_path / "v" / "c1_gd.nii.gz", affine)
    line = one_line_error(_import(tmp_path / "v", tmp_path / "out"))
    assert re.search(match, line), line
    assert not (tmp_path / "out" / "images").exists()


def test_affines_equal_within_float32_rounding_are_the_same_geometry(tmp_path, capsys):
    _save(np.ones((4, 6, 3), np.float32), tmp_path / "v" / "c1_DE.nii.gz", _affine())
    _save(_labels(), tmp_path / "v" / "c1_gd.nii.gz", _affine(origin=(-80.00001, -60.0, 10.00002)))
    assert main(_import(tmp_path / "v", tmp_path / "out")) == 0
    assert "note:" not in capsys.readouterr().out
