"""Data and split fingerprints: every kind of change is named, and a run continued on changed data is refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config_args
from PIL import Image

from lgeseg.data import load_dataset
from lgeseg.errors import DataError
from lgeseg.fingerprint import (
    check_same,
    data_difference,
    data_fingerprint,
    split_difference,
)
from lgeseg.run import run


def fingerprint(root: Path) -> dict:
    return data_fingerprint(load_dataset(root))


def _rewrite_png(path: Path, change) -> None:
    arr = np.asarray(Image.open(path)).copy()
    Image.fromarray(change(arr), mode="L").save(path)


CHANGES = {
    "image pixels": (lambda r: _rewrite_png(r / "images/p02_s1.png", lambda a: 255 - a), "images/p02_s1.png changed"),
    "mask pixels": (
        lambda r: _rewrite_png(r / "masks/p03_s0.png", lambda a: np.roll(a, 1, 0)),
        "masks/p03_s0.png changed",
    ),
    "pair removed": (
        lambda r: (
            [(r / f / "p07_s2.png").unlink() for f in ("images", "masks")] and _drop_manifest_row(r, "p07_s2.png")
        ),
        "images/p07_s2.png is gone",
    ),
    "pair added": (
        lambda r: (
            [shutil.copy(r / f / "p07_s2.png", r / f / "p07_s3.png") for f in ("images", "masks")]
            and _add_manifest_row(r, "p07_s3.png,patient07")
        ),
        "images/p07_s3.png is new",
    ),
    "label map": (
        lambda r: (r / "dataset.json").write_text(
            json.dumps({"labels": {"region1": 255, "region3": 0, "region2": 128}})
        ),
        "the label map changed",
    ),
    "ignore value": (
        lambda r: (r / "dataset.json").write_text(
            json.dumps({"labels": {"region1": 255, "region2": 128, "region3": 0}, "ignore": 7})
        ),
        "the label map changed",
    ),
    "manifest": (
        lambda r: _drop_manifest_row(r, "p00_s0.png") or _add_manifest_row(r, "p00_s0.png,patient99"),
        "manifest.csv changed",
    ),
}


def _drop_manifest_row(root: Path, name: str) -> None:
    path = root / "manifest.csv"
    path.write_text("".join(row for row in path.read_text().splitlines(keepends=True) if not row.startswith(name)))


def _add_manifest_row(root: Path, row: str) -> None:
    with (root / "manifest.csv").open("a") as handle:
        handle.write(row + "\n")


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_every_kind_of_change_is_named(kind, make_dataset_dir):
    root = make_dataset_dir()
    before = fingerprint(root)
    assert data_difference(before, fingerprint(root)) is None  # unchanged: equal (cache or not)
    change, expected = CHANGES[kind]
    change(root)
    difference = data_difference(before, fingerprint(root))
    assert difference is not None and difference.startswith(expected), difference


def test_same_size_same_content_rewrite_is_not_a_change_and_cache_is_used(make_dataset_dir, monkeypatch):
    root = make_dataset_dir()
    before = fingerprint(root)
    path = root / "images" / "p01_s1.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched: rehashed, same
    assert fingerprint(root) == before
    reads = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or original(self))
    fingerprint(root)
    assert reads == []  # every file came from the (size, mtime_ns) cache


def test_in_memory_dataset_is_hashed_from_arrays(make_dataset):
    a = make_dataset(n=6)
    b = make_dataset(n=6)
    b.masks[2, 0, 0] = (b.masks[2, 0, 0] + 1) % 3
    assert data_difference(data_fingerprint(a), data_fingerprint(a)) is None
    assert data_difference(data_fingerprint(a), data_fingerprint(b)) == "masks/img002.png changed"


def test_split_difference_names_a_moved_file():
    stored = {"hash": "a", "train": ["x.png"], "val": ["y.png"], "test": ["z.png"]}
    assert (
        split_difference(stored, {**stored, "hash": "b", "test": [], "train": ["x.png", "z.png"]})
        == "z.png left the test split"
    )
    assert split_difference(stored, dict(stored)) is None
    with pytest.raises(
        DataError,
        match=r"^study 's' was made from other data \(z.png left the test split\); .*"
        r"restore the data or use a new --study-name$",
    ):
        check_same("study 's'", None, stored, {}, {**stored, "hash": "b", "test": []}, "use a new --study-name")


def test_train_refuses_to_continue_or_read_back_on_changed_data(
    make_dataset_dir, tiny_run_config, tmp_path, one_line_error
):
    """A finished run (run.json) and an interrupted one (last.pt only) are both refused; nothing is rewritten."""
    root = make_dataset_dir()
    config = tiny_run_config(data=str(root), train__epochs=1)
    out = tmp_path / "run"
    run(config, out)
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    _rewrite_png(root / "masks" / "p04_s2.png", lambda a: np.flipud(a))
    with pytest.raises(DataError, match=r"run\.json was made from other data \(masks/p04_s2\.png changed\)"):
        run(config, out)
    (out / "run.json").unlink()  # as if interrupted after its last checkpoint
    with pytest.raises(
        DataError,
        match=r"last\.pt was made from other data \(masks/p04_s2\.png changed\).*"
        r"use a new --out",
    ):
        run(config, out)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == {
        k: v for k, v in kept.items() if k != "run.json"
    }
    line = one_line_error(
        [
            "train",
            "--data",
            str(root),
            "--out",
            str(out),
            *tiny_config_args(epochs=1),
            "--l2",
            "0.0005",
            "--seed",
            "0",
        ]
    )
    assert "last.pt was made from other data (masks/p04_s2.png changed)" in line, line


def test_run_json_and_checkpoints_record_the_fingerprints(tiny_data_dir, tiny_run_config, tmp_path):
    import torch

    out = tmp_path / "run"
    result = run(tiny_run_config(data=str(tiny_data_dir), train__epochs=1), out)
    expected = data_fingerprint(load_dataset(tiny_data_dir))
    assert result.info["data_fingerprint"] == expected
    assert json.loads((out / "run.json").read_text())["data_fingerprint"] == expected
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(out / name, weights_only=True)
        assert ckpt["data_fingerprint"] == expected
        assert ckpt["split"] == json.loads((out / "split.json").read_text())
