"""Dataset reading, its one-line errors, and the deterministic patient-wise split."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lgeseg.data import DEFAULT_LABELS, Dataset, load_dataset, parse_labels, read_label_map, split_dataset
from lgeseg.errors import ConfigError, DataError
from lgeseg.png import read_image, read_mask, write_mask

REAL_DATA = Path(
    os.environ.get("LGESEG_REAL_DATA") or Path(__file__).resolve().parents[2].parent / "shared/data/emidec-lge-128"
)


def _mask_pixels(size: int = 8) -> np.ndarray:
    """A mask in the default pixel values: white centre, black ring, grey outside."""
    mask = np.full((size, size), 128, dtype=np.uint8)
    mask[1:-1, 1:-1] = 0
    mask[2:-2, 2:-2] = 255
    return mask


def make_dataset(root: Path, n: int = 6, patients: list[str] | None = None, size: int = 8) -> Path:
    """Write ``n`` tiny image/mask pairs (and a manifest when ``patients`` is given) into ``root``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"img{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / "images" / name)
        Image.fromarray(_mask_pixels(size)).save(root / "masks" / name)
    if patients is not None:
        write_manifest(root, [(f"img{i:02d}.png", patients[i]) for i in range(n)])
    return root


def write_manifest(root: Path, rows: list[tuple[str, str]], header: tuple[str, ...] = ("file", "patient")):
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def error_of(path: Path) -> str:
    """The message of the DataError that loading ``path`` raises; it must be one line."""
    with pytest.raises(DataError) as info:
        load_dataset(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------------- PNG IO


def test_read_image_8bit_is_divided_by_255(tmp_path):
    Image.fromarray(np.array([[0, 51], [255, 102]], dtype=np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_image(tmp_path / "a.png"), [[0, 0.2], [1, 0.4]], rtol=1e-6)
    assert read_image(tmp_path / "a.png").dtype == np.float32


def test_read_image_16bit_is_scaled_by_its_robust_percentiles(tmp_path):
    # 12-bit MRI data stored in 16-bit PNG must span [0, 1], not [0, 4095/65535].
    Image.fromarray(np.array([[0, 1000], [4095, 2047]], dtype=np.uint16)).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as img:
        assert img.mode.startswith("I")
    image = read_image(tmp_path / "a.png")
    assert image.dtype == np.float32
    assert image.max() == 1.0 and image.min() == 0.0
    # by hand: sorted 0, 1000, 2047, 4095; 0.5th percentile at rank 0.015 -> 15, 99.5th at rank 2.985 ->
    # 2047 + 0.985 * 2048 = 4064.28; values map by (v - 15) / 4049.28, clipped to [0, 1]
    expected = np.clip((np.array([[0, 1000], [4095, 2047]]) - 15) / 4049.28, 0, 1)
    np.testing.assert_allclose(image, expected, rtol=1e-6)


def test_16bit_dataset_loads_in_unit_range(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    for i, top in enumerate((4095, 1000, 65535)):
        Image.fromarray(np.linspace(0, top, 64).reshape(8, 8).astype(np.uint16)).save(
            root / "images" / f"img{i:02d}.png"
        )
    data = load_dataset(root)
    assert data.images.dtype == np.float32
    np.testing.assert_allclose(data.images.max(axis=(1, 2)), 1.0)


def test_mask_round_trip_and_label_order(tmp_path):
    labels = {"blood_pool": 255, "background": 128, "myocardium": 0}
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", indices, labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), [[255, 128], [0, 128]])
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", labels), indices)


def test_label_map_from_dataset_json_or_default(tmp_path):
    assert read_label_map(tmp_path) == DEFAULT_LABELS
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"a": 0, "b": 255}}))
    assert read_label_map(tmp_path) == {"a": 0, "b": 255}
    assert parse_labels("x=1, y=2") == {"x": 1, "y": 2}


# ---------------------------------------------------------------------------------------- loading


def test_load_dataset_reads_everything(tmp_path):
    root = make_dataset(tmp_path / "d", n=4, patients=["p1", "p1", "p2", "p3"])
    data = load_dataset(root)
    assert isinstance(data, Dataset)
    assert data.root == root and not data.synthetic
    assert data.files == [f"img{i:02d}.png" for i in range(4)]
    assert data.images.shape == (4, 8, 8) and data.images.dtype == np.float32
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert data.masks.dtype == np.uint8
    np.testing.assert_array_equal(np.unique(data.masks), [0, 1, 2])  # 255, 128, 0 in label order
    assert data.masks[0, 4, 4] == 0 and data.masks[0, 1, 1] == 2 and data.masks[0, 0, 0] == 1
    assert data.labels == DEFAULT_LABELS
    assert data.patients == ["p1", "p1", "p2", "p3"]


def test_load_dataset_without_manifest_has_no_patients(tmp_path):
    assert load_dataset(make_dataset(tmp_path / "d", n=3)).patients is None


def test_error_missing_folder(tmp_path):
    assert "dataset folder not found" in error_of(tmp_path / "nowhere")


def test_error_no_images_dir(tmp_path):
    (tmp_path / "masks").mkdir()
    assert "images: folder not found" in error_of(tmp_path)


def test_error_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    assert "no PNG images" in error_of(tmp_path)


def test_error_unreadable_png(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    (root / "images" / "img01.png").write_bytes(b"not a png at all")
    message = error_of(root)
    assert "img01.png" in message and "unreadable" in message


def test_error_truncated_png(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    path = root / "masks" / "img02.png"
    path.write_bytes(path.read_bytes()[:60])
    message = error_of(root)
    assert "img02.png" in message and "truncated" in message


def test_error_image_without_mask(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    (root / "masks" / "img01.png").unlink()
    message = error_of(root)
    assert "img01.png" in message and "no mask" in message


def test_error_mask_without_image(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    (root / "images" / "img02.png").unlink()
    message = error_of(root)
    assert "img02.png" in message and "no image" in message


def test_error_image_and_mask_sizes_differ(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    Image.fromarray(_mask_pixels(10)).save(root / "masks" / "img01.png")
    message = error_of(root)
    assert "img01.png" in message and "10x10" in message and "8x8" in message


def test_error_images_of_different_sizes(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "images" / "img02.png")
    Image.fromarray(_mask_pixels(10)).save(root / "masks" / "img02.png")
    message = error_of(root)
    assert "img02.png" in message and "one size" in message


def test_error_mask_values_outside_label_map(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    mask = _mask_pixels()
    mask[0, :3] = 7
    Image.fromarray(mask).save(root / "masks" / "img00.png")
    message = error_of(root)
    assert "img00.png" in message and "7 (3 px)" in message


def test_error_colour_mask(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    rgb = np.stack([_mask_pixels()] * 3, axis=-1)
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(root / "masks" / "img01.png")
    message = error_of(root)
    assert "img01.png" in message and "colour mask" in message


def test_error_manifest_names_absent_files(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    write_manifest(root, [("img00.png", "a"), ("img01.png", "a"), ("img02.png", "b"), ("ghost.png", "c")])
    message = error_of(root)
    assert "manifest.csv" in message and "ghost.png" in message and "not in images/" in message


def test_error_manifest_missing_columns(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    write_manifest(root, [("img00.png", "a")], header=("file", "subject"))
    message = error_of(root)
    assert "manifest.csv" in message and "missing column(s) patient" in message


def test_error_images_not_in_manifest(tmp_path):
    root = make_dataset(tmp_path / "d", n=3)
    write_manifest(root, [("img00.png", "a"), ("img01.png", "b")])
    message = error_of(root)
    assert "manifest.csv" in message and "img02.png" in message and "not in the manifest" in message


def test_error_split_with_too_few_images(tmp_path):
    data = load_dataset(make_dataset(tmp_path / "d", n=2))
    with pytest.raises(DataError, match=r"2 image\(s\) cannot fill 3 non-empty splits"):
        split_dataset(data)


def test_error_split_with_too_few_patients(tmp_path):
    data = load_dataset(make_dataset(tmp_path / "d", n=6, patients=["a"] * 3 + ["b"] * 3))
    with pytest.raises(DataError, match=r"2 patient\(s\) cannot fill 3 non-empty splits"):
        split_dataset(data)


def test_progress_bar_is_optional(tmp_path, capsys):
    load_dataset(make_dataset(tmp_path / "d", n=3), progress=True)
    assert "3/3" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- split


def _fake_dataset(n_images: int, patients: list[str] | None) -> Dataset:
    return Dataset(
        root=Path("fake"),
        files=[f"f{i:04d}.png" for i in range(n_images)],
        images=np.zeros((n_images, 1, 1), np.float32),
        masks=np.zeros((n_images, 1, 1), np.uint8),
        labels=dict(DEFAULT_LABELS),
        patients=patients,
        synthetic=False,
    )


def test_split_by_patient_keeps_patients_together_and_is_close_to_fractions():
    rng = np.random.default_rng(1)
    patients = [f"p{p:02d}" for p in range(40) for _ in range(int(rng.integers(4, 11)))]
    data = _fake_dataset(len(patients), patients)
    split = split_dataset(data, seed=3)
    assert split.by == "patient" and split.seed == 3 and split.fractions == (0.6, 0.2, 0.2)
    parts = (split.train, split.val, split.test)
    assert sorted(sum(parts, [])) == list(range(len(patients)))
    assert all(part == sorted(part) for part in parts)
    owners = [{patients[i] for i in part} for part in parts]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    for part, fraction in zip(parts, split.fractions):
        assert abs(len(part) - fraction * len(patients)) <= 10  # within one patient


def test_split_is_deterministic_and_depends_on_seed():
    patients = [f"p{p}" for p in range(30) for _ in range(5)]
    data = _fake_dataset(150, patients)
    first, again = split_dataset(data, seed=7), split_dataset(data, seed=7)
    other = split_dataset(data, seed=8)
    assert first == again
    assert first.to_json(data)["hash"] == again.to_json(data)["hash"] != other.to_json(data)["hash"]


def test_split_does_not_depend_on_input_order():
    # Groups are sorted before shuffling, so reordering files (with their patients) changes nothing.
    patients = [f"p{p % 12}" for p in range(36)]
    data = _fake_dataset(36, patients)
    order = np.random.default_rng(0).permutation(36)
    permuted = Dataset(
        root=data.root,
        files=[data.files[i] for i in order],
        images=data.images,
        masks=data.masks,
        labels=data.labels,
        patients=[patients[i] for i in order],
        synthetic=False,
    )
    names = [{data.files[i] for i in part} for part in _parts(split_dataset(data, seed=5))]
    names_permuted = [{permuted.files[i] for i in part} for part in _parts(split_dataset(permuted, seed=5))]
    assert names == names_permuted


def _parts(split) -> tuple[list[int], list[int], list[int]]:
    return split.train, split.val, split.test


def test_split_by_image_without_patients_has_exact_counts():
    data = _fake_dataset(50, None)
    split = split_dataset(data, seed=0)
    assert split.by == "image"
    assert (len(split.train), len(split.val), len(split.test)) == (30, 10, 10)


def test_split_fraction_zero_leaves_that_split_empty():
    data = _fake_dataset(10, None)
    split = split_dataset(data, train=0.8, val=0.2, test=0.0)
    assert (len(split.train), len(split.val), split.test) == (8, 2, [])


def test_split_rejects_bad_fractions():
    with pytest.raises(ConfigError, match="sum to 1"):
        split_dataset(_fake_dataset(10, None), train=0.5, val=0.2, test=0.2)


def test_split_to_json_lists_file_names_and_hash():
    data = _fake_dataset(10, None)
    split = split_dataset(data, seed=2)
    doc = split.to_json(data)
    assert set(doc) == {"by", "seed", "fractions", "hash", "train", "val", "test"}
    assert doc["train"] == [data.files[i] for i in split.train]
    assert len(doc["hash"]) == 16 and int(doc["hash"], 16) >= 0
    assert json.loads(json.dumps(doc)) == doc


def test_split_is_pinned_across_machines_and_versions():
    # Same seed, same split everywhere: guards against silent changes of the algorithm or RNG stream,
    # which would make stored splits and results incomparable.
    data = _fake_dataset(10, None)
    split = split_dataset(data, seed=0)
    assert _parts(split) == ([0, 3, 4, 5, 7, 9], [6, 8], [1, 2])
    assert split.to_json(data)["hash"] == "a15f2ee6a25ce613"


# -------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_dataset_loads_and_splits_by_patient():
    if not (REAL_DATA / "images").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA} (set LGESEG_REAL_DATA)")
    data = load_dataset(REAL_DATA)
    assert data.images.shape == (708, 128, 128) and data.masks.shape == (708, 128, 128)
    assert list(data.labels) == ["blood_pool", "background", "myocardium"]
    assert len(set(data.patients)) == 100
    split = split_dataset(data, seed=0)
    owners = [{data.patients[i] for i in part} for part in (split.train, split.val, split.test)]
    assert sum(map(len, owners)) == 100
    assert abs(len(split.train) - 0.6 * 708) <= 12 and abs(len(split.test) - 0.2 * 708) <= 12
