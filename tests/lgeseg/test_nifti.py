"""``import-nifti``: NIfTI volumes written with nibabel are imported back into the PNG dataset format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from hpo.run import main
from lgeseg.data import load_dataset
from lgeseg.nifti import crop_or_pad, crop_window, resample_in_plane, scale_intensities

#: Mask pixel value -> label value of the volumes built here (the EMIDEC NIfTI convention: 0 = outside).
TO_LABEL = {128: 0, 255: 1, 0: 2}
PATIENTS = ("Case_N037", "Case_P001")


def _plane(png: np.ndarray) -> np.ndarray:
    """Inverse of the importer's slice layout (PNG = ``flipud(plane.T)``)."""
    return np.flipud(png).T


def _save(volume: np.ndarray, path: Path, zooms=(1.25, 1.25, 8.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = (-80.0, -80.0, 10.0)
    nib.save(nib.Nifti1Image(volume, affine), path)


def _real_volumes(real: Path, root: Path, empty_slice: bool = True) -> dict[str, list[str]]:
    """One image and one label volume per patient in EMIDEC's layout; an empty slice ends the first."""
    with (real / "manifest.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["patient"] in PATIENTS]
    files: dict[str, list[str]] = {}
    for patient in PATIENTS:
        names = [r["file"] for r in sorted(rows, key=lambda r: int(r["slice"])) if r["patient"] == patient]
        assert [int(n[-7:-4]) for n in names] == list(range(len(names)))  # slices 0..n-1, as the importer names them
        images = [_plane(np.asarray(Image.open(real / "images" / n))) for n in names]
        labels = [_plane(np.vectorize(TO_LABEL.get)(np.asarray(Image.open(real / "masks" / n)))) for n in names]
        if empty_slice and patient == PATIENTS[0]:
            images.append(np.full_like(images[0], 7))
            labels.append(np.zeros_like(labels[0]))
        _save(np.stack(images, axis=2).astype(np.uint8), root / patient / "Images" / f"{patient}.nii.gz")
        _save(np.stack(labels, axis=2).astype(np.uint8), root / patient / "Contours" / f"{patient}.nii.gz")
        files[patient] = names
    return files


EMIDEC = [
    "--images",
    "*/Images/*.nii.gz",
    "--labels",
    "*/Contours/*.nii.gz",
    "--map",
    "0=128,1=255,2=0",
    "--names",
    "blood_pool=255,background=128,myocardium=0",
]


@pytest.mark.realdata
def test_real_slices_round_trip_exactly(real_data_dir, tmp_path, capsys):
    files = _real_volumes(real_data_dir, tmp_path / "nifti")
    out = tmp_path / "imported"
    assert main(["import-nifti", str(tmp_path / "nifti"), "--out", str(out), *EMIDEC, "--scale", "none"]) == 0
    assert "1 empty slices left out" in capsys.readouterr().out
    expected = [name for patient in PATIENTS for name in files[patient]]
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(expected)
    for name in expected:
        for sub in ("images", "masks"):
            written = Image.open(out / sub / name)
            assert written.mode == "L"
            assert np.array_equal(np.asarray(written), np.asarray(Image.open(real_data_dir / sub / name))), name
    with (out / "manifest.csv").open() as fh:
        manifest = list(csv.DictReader(fh))
    with (real_data_dir / "manifest.csv").open() as fh:
        original = {r["file"]: r for r in csv.DictReader(fh)}
    assert [(r["patient"], r["slice"]) for r in manifest] == [
        (original[r["file"]]["patient"], original[r["file"]]["slice"]) for r in manifest
    ]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == json.loads((real_data_dir / "dataset.json").read_text())["labels"]
    dataset = load_dataset(out)  # the project reads it as any dataset folder
    assert dataset.patients is not None and set(dataset.patients) == set(PATIENTS)

    kept = tmp_path / "kept"
    assert (
        main(["import-nifti", str(tmp_path / "nifti"), "--out", str(kept), *EMIDEC, "--scale", "none", "--keep-empty"])
        == 0
    )
    empty = f"{PATIENTS[0]}_slice{len(files[PATIENTS[0]]):03d}.png"
    assert (np.asarray(Image.open(kept / "images" / empty)) == 7).all()
    assert (np.asarray(Image.open(kept / "masks" / empty)) == 128).all()


@pytest.mark.realdata
def test_real_crop_keeps_the_labelled_region_centred(real_data_dir, tmp_path):
    files = _real_volumes(real_data_dir, tmp_path / "nifti", empty_slice=False)
    out = tmp_path / "cropped"
    size = 96
    assert (
        main(
            [
                "import-nifti",
                str(tmp_path / "nifti"),
                "--out",
                str(out),
                *EMIDEC,
                "--scale",
                "none",
                "--size",
                str(size),
            ]
        )
        == 0
    )
    for patient in PATIENTS:
        masks = np.stack([np.asarray(Image.open(real_data_dir / "masks" / n)) for n in files[patient]])
        rows, cols = np.nonzero((masks != 128).any(axis=0))
        height = masks.shape[1]
        # Window along the first voxel axis (PNG columns) and the second (PNG rows, last index on top).
        c0 = (cols.min() + cols.max() + 1 - size) // 2
        j_low, j_high = height - 1 - rows.max(), height - rows.min()
        j0 = (j_low + j_high - size) // 2
        r0 = height - (j0 + size)
        for name in files[patient]:
            for sub in ("images", "masks"):
                original = np.asarray(Image.open(real_data_dir / sub / name))
                written = np.asarray(Image.open(out / sub / name))
                assert np.array_equal(written, original[r0 : r0 + size, c0 : c0 + size]), (sub, name)
        assert (
            sum((np.asarray(Image.open(out / "masks" / n)) != 128).sum() for n in files[patient])
            == (masks != 128).sum()
        )  # no labelled pixel lost


def test_percentile_scaling_on_hand_values():
    volume = np.arange(101, dtype=np.float32).reshape(101, 1, 1)  # percentiles 10 and 90 are 10 and 90
    scaled = scale_intensities(volume, (10, 90), bits=8).ravel()
    # (v - 10) / 80 * 255, clipped and rounded: 30 -> 63.75, 50 -> 127.5 (rint to even 128), 70 -> 191.25
    assert scaled.dtype == np.uint8
    assert [scaled[v] for v in (0, 10, 30, 50, 70, 90, 100)] == [0, 0, 64, 128, 191, 255, 255]
    wide = scale_intensities(volume, (10, 90), bits=16).ravel()
    assert wide.dtype == np.uint16 and [wide[v] for v in (10, 30, 90)] == [0, 16384, 65535]  # 0.25*65535
    # Defaults on 0..999 plus one hot voxel of 1e6 (1001 values): the 0.5th and 99.5th percentiles sit at
    # sorted positions 5 and 995, i.e. 5 and 995, so 500 -> 495/990*255 = 127.5 -> 128 (min-max would give 0).
    hot = np.concatenate([np.arange(1000.0), [1e6]]).reshape(1001, 1, 1)
    assert scale_intensities(hot).ravel()[[0, 5, 500, 995, 1000]].tolist() == [0, 0, 128, 255, 255]
    assert (scale_intensities(np.full((2, 2, 2), 3.0)) == 0).all()  # a flat volume


def test_crop_pad_and_nearest_resampling_on_hand_values():
    labels = np.zeros((6, 6, 2), np.int64)
    labels[1:3, 3:5, 1] = 1  # bounding box rows 1-2, cols 3-4: centre (2, 4)
    window = crop_window(labels, axis=2, size=4)
    assert window == [(0, 4), (2, 6)]
    assert np.array_equal(crop_or_pad(labels, 2, window)[..., 1], labels[0:4, 2:6, 1])
    padded = crop_or_pad(labels, 2, crop_window(labels, axis=2, size=8))  # window (-2, 6) and (0, 8)
    assert padded.shape == (8, 8, 2) and np.array_equal(padded[2:8, 0:6], labels)
    assert padded[:2].sum() == 0 and padded[:, 6:].sum() == 0
    assert crop_window(np.zeros((6, 6, 2)), 2, 4) == [(1, 5), (1, 5)]  # nothing labelled: the image centre

    image = np.arange(16.0).reshape(4, 4, 1)
    small = np.array([[0, 1], [2, 3]]).reshape(2, 2, 1)
    up_image, up_labels = resample_in_plane(np.ones((2, 2, 1)), small, (2.0, 2.0, 5.0), axis=2, spacing=1.0)
    assert np.array_equal(up_labels[..., 0], np.repeat(np.repeat(small[..., 0], 2, 0), 2, 1))  # nearest only
    assert up_image.shape == (4, 4, 1) and np.allclose(up_image, 1.0)
    down_image, _ = resample_in_plane(image, np.zeros((4, 4, 1), np.int64), (1.0, 1.0, 5.0), axis=2, spacing=2.0)
    assert down_image.shape == (2, 2, 1)


def _volumes(root: Path, image: np.ndarray, labels: np.ndarray, case: str = "c1") -> None:
    _save(image, root / f"{case}_DE.nii.gz")
    _save(labels, root / f"{case}_gd.nii.gz")


def _import(root: Path, out: Path, *extra: str) -> list[str]:
    return ["import-nifti", str(root), "--out", str(out), "--images", "*_DE.nii.gz", "--labels", "*_gd.nii.gz", *extra]


def test_spacing_in_dataset_json(tmp_path):
    """Voxels 1.25 (axis 0) x 1.5 (axis 1) x 8 mm, slices along axis 2: PNG columns follow axis 0 and rows
    axis 1, so the spacing is [rows 1.5, columns 1.25, slices 8]; volumes that differ give one per case;
    resampling in-plane makes the rows and columns the --spacing."""
    image, labels = np.ones((4, 4, 2), np.float32), np.ones((4, 4, 2), np.uint8)
    _save(image, tmp_path / "v" / "c1_DE.nii.gz", zooms=(1.25, 1.5, 8.0))
    _save(labels, tmp_path / "v" / "c1_gd.nii.gz", zooms=(1.25, 1.5, 8.0))
    assert main(_import(tmp_path / "v", tmp_path / "one")) == 0
    assert json.loads((tmp_path / "one" / "dataset.json").read_text())["spacing"] == [1.5, 1.25, 8.0]
    _save(image, tmp_path / "v" / "c2_DE.nii.gz", zooms=(1.0, 1.0, 10.0))
    _save(labels, tmp_path / "v" / "c2_gd.nii.gz", zooms=(1.0, 1.0, 10.0))
    assert main(_import(tmp_path / "v", tmp_path / "two")) == 0
    spacing = json.loads((tmp_path / "two" / "dataset.json").read_text())["spacing"]
    assert spacing == {"c1": [1.5, 1.25, 8.0], "c2": [1.0, 1.0, 10.0]}
    assert main(_import(tmp_path / "v", tmp_path / "three", "--spacing", "2")) == 0
    spacing = json.loads((tmp_path / "three" / "dataset.json").read_text())["spacing"]
    assert spacing == {"c1": [2.0, 2.0, 8.0], "c2": [2.0, 2.0, 10.0]}


def test_percentile_import_and_16_bit_output(tmp_path):
    image = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2) * 10.0
    labels = np.ones((4, 4, 2), np.uint8)
    _volumes(tmp_path / "v", image, labels)
    assert main(_import(tmp_path / "v", tmp_path / "out", "--bits", "16", "--percentiles", "0,100")) == 0
    png = np.asarray(Image.open(tmp_path / "out" / "images" / "c1_slice000.png"))
    assert png.dtype == np.uint16 and png.max() <= 65535
    # Voxel (i, j, 0) holds 20*(4i + j); 0..310 maps to 0..65535; PNG = flipud(plane.T)
    expected = np.rint(image[..., 0] / 310.0 * 65535).astype(np.uint16)
    assert np.array_equal(png, np.flipud(expected.T))
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["labels"] == {"label1": 1}


@pytest.mark.parametrize(
    "case, match",
    [
        ("shape", r"c1_gd\.nii\.gz: label volume shape \(4, 4, 3\) differs from image volume shape \(4, 4, 2\)"),
        ("4d", r"c1_DE\.nii\.gz: volume is 4-D with shape \(4, 4, 2, 2\); expected 3-D"),
        ("outside", r"c1_gd\.nii\.gz: label values \[5\] outside --map 0=128,1=255"),
        ("unpaired", r"c2_DE\.nii\.gz: no label volume for case 'c2'"),
        # 9 labelled voxels, bounding box 3x3: the 2x2 window [0, 2) x [0, 2) keeps 2 + 1 of them
        ("too big", r"c1_gd\.nii\.gz: the labelled region does not fit --size 2 \(6 labelled voxels would be cut"),
        ("float none", r"c1_DE\.nii\.gz: --scale none needs integer intensities in 0-255, found 0\.5 to 0\.5"),
        ("existing", r"images: already holds files"),
        ("nothing", r"no file matches --images '\*_DE\.nii\.gz'"),
        ("names", r"--names a=1,b=2 must name exactly the mask values of --map \[128, 255\]"),
    ],
)
def test_bad_input_is_one_line(tmp_path, one_line_error, case, match):
    root, out = tmp_path / "v", tmp_path / "out"
    image = np.zeros((4, 4, 2), np.uint8)
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[1:3, 1:3, :] = 1
    extra: list[str] = ["--map", "0=128,1=255"]
    if case == "shape":
        _volumes(root, image, np.zeros((4, 4, 3), np.uint8))
    elif case == "4d":
        _volumes(root, np.zeros((4, 4, 2, 2), np.uint8), labels)
    elif case == "outside":
        labels[0, 0, 0] = 5
        _volumes(root, image, labels)
    elif case == "unpaired":
        _volumes(root, image, labels)
        _save(image, root / "c2_DE.nii.gz")
    elif case == "too big":
        labels[0, 0, 0] = 1  # rows 0-2 x cols 0-2 on slice 0 no longer fit 2x2
        _volumes(root, image, labels)
        extra += ["--size", "2"]
    elif case == "float none":
        _volumes(root, np.full((4, 4, 2), 0.5, np.float32), labels)
        extra += ["--scale", "none"]
    elif case == "names":
        _volumes(root, image, labels)
        extra += ["--names", "a=1,b=2"]
    elif case == "existing":
        _volumes(root, image, labels)
        (out / "images").mkdir(parents=True)
        (out / "images" / "old.png").write_bytes(b"kept")
    else:
        root.mkdir()
    line = one_line_error(_import(root, out, *extra))
    assert __import__("re").search(match, line), line
    if case == "existing":
        assert (out / "images" / "old.png").read_bytes() == b"kept"
    else:
        assert not (out / "images").exists()  # nothing written before every volume was checked
