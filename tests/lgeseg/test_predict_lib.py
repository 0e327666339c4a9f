"""lgeseg.predict: the same masks as the run, ensembles and flip TTA by hand, NIfTI geometry, export, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import copy_test_split, tiny_config, write_dataset_dir
from PIL import Image

from lgeseg.errors import ConfigError, DataError, UserError
from lgeseg.metrics import evaluate, json_safe
from lgeseg.nifti import import_nifti, slice_to_png
from lgeseg.png import read_mask
from lgeseg.predict import (
    Network,
    check_out_dir,
    export_model,
    load_network,
    predict_classes,
    predict_path,
    predict_probabilities,
    slices_to_volume,
)
from lgeseg.run import run

LABELS = {"region1": 255, "region2": 128, "region3": 0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny dataset, two runs of it (seeds 0 and 1) and a folder holding the test images of the split."""
    root = tmp_path_factory.mktemp("predict")
    data = write_dataset_dir(root / "data")
    runs = [run(tiny_config(data=str(data), seed=seed), root / f"run{seed}") for seed in (0, 1)]
    test = json.loads((root / "run0" / "split.json").read_text())["test"]
    images, truth = copy_test_split(data, test, root / "test_images", root / "test_masks")
    return {"root": root, "data": data, "runs": runs, "test": test, "images": images, "truth": truth}


def test_predict_gives_the_runs_own_test_masks_and_metrics(trained, tmp_path):
    network = load_network(trained["root"] / "run0")
    summary = predict_path([network], trained["images"], tmp_path / "pred", device="cpu")
    names = trained["test"]
    for name in names:
        ours = np.asarray(Image.open(tmp_path / "pred" / name))
        theirs = np.asarray(Image.open(trained["root"] / "run0" / "predictions" / name))
        assert np.array_equal(ours, theirs), name
    preds = np.stack([read_mask(tmp_path / "pred" / n, LABELS) for n in names])
    truths = np.stack([read_mask(trained["truth"] / n, LABELS) for n in names])
    scored = json.loads(json.dumps(json_safe(evaluate(preds, truths, list(LABELS), names)), allow_nan=False))
    recorded = json.loads((trained["root"] / "run0" / "metrics.json").read_text())
    recorded.pop("field_metrics")  # the field metrics need the patients of the data set: the CLI test compares them
    assert scored == recorded
    # predictions.csv: one row per file, pixel counts per class adding up to the image
    with summary.table.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == names
    assert {r["networks"] for r in rows} == {"run0"} and {r["tta"] for r in rows} == {"none"}
    for row, pred in zip(rows, preds):
        counts = [int(row[f"{name}_pixels"]) for name in LABELS]
        assert counts == np.bincount(pred.ravel(), minlength=3).tolist() and sum(counts) == 16 * 16


class Fixed(torch.nn.Module):
    """Hand-made class scores: class 1's logit at pixel (r, c) is ``table[c]``, class 0's is 0."""

    def __init__(self, table: list[float]) -> None:
        super().__init__()
        self.table = torch.tensor(table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = self.table.expand(x.shape[0], 1, x.shape[2], -1)
        return torch.cat([torch.zeros_like(one), one], dim=1)


def fixed(table: list[float], name: str, labels: dict | None = None) -> Network:
    spec = {"architecture": "matlab-unet", "options": {"depth": 0}, "image_size": [1, 2]}
    config = {"model": {"pad": False}, "train": {"precision": "fp32", "channels_last": False}}
    return Network(Fixed(table), spec, labels or {"a": 0, "b": 1}, config, name, Path(name))


def test_ensemble_is_the_mean_of_softmax_probabilities_by_hand():
    image = np.zeros((1, 1, 2), np.float32)
    # A: logits (0, ln 3) -> p(b) = 3/4 at both pixels; B: (0, 0) -> 1/2.
    a, b = fixed([math.log(3), math.log(3)], "a"), fixed([0.0, 0.0], "b")
    probs = predict_probabilities([a, b], image, device="cpu")
    assert probs.shape == (1, 2, 1, 2)
    assert probs[0, 1] == pytest.approx(np.full((1, 2), (0.75 + 0.5) / 2))
    assert probs[0].sum(0) == pytest.approx(np.ones((1, 2)))
    # C: (0, -ln 3) -> p(b) = 1/4; with A the mean is 1/2 and with B 3/8, so class a (index 0) wins.
    c = fixed([-math.log(3), -math.log(3)], "c")
    assert predict_probabilities([b, c], image, device="cpu")[0, 1] == pytest.approx(np.full((1, 2), 0.375))
    assert predict_classes([b, c], image, device="cpu").tolist() == [[[0, 0]]]
    assert predict_classes([a, b], image, device="cpu").tolist() == [[[1, 1]]]


def test_flip_tta_averages_over_the_left_right_reflection_by_hand():
    image = np.zeros((1, 1, 2), np.float32)
    # Logit ln 3 at column 0 only: p(b) = (3/4, 1/2); reflected, column 0 sees column 1's score and back.
    network = fixed([math.log(3), 0.0], "n")
    plain = predict_probabilities([network], image, device="cpu")[0, 1, 0]
    assert plain == pytest.approx([0.75, 0.5])
    flipped = predict_probabilities([network], image, tta="flip", device="cpu")[0, 1, 0]
    assert flipped == pytest.approx([0.625, 0.625])


def test_two_replicates_ensemble_equals_mean_of_their_probabilities(trained):
    first, second = (load_network(trained["root"] / f"run{s}") for s in (0, 1))
    images = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in sorted(trained["images"].iterdir())])
    both = predict_probabilities([first, second], images, device="cpu")
    alone = [predict_probabilities([n], images, device="cpu") for n in (first, second)]
    assert both == pytest.approx((alone[0] + alone[1]) / 2, abs=1e-6)
    assert np.array_equal(predict_classes([first, second], images, device="cpu"), both.argmax(1))
    # one network without TTA: the argmax of its probabilities
    assert np.array_equal(predict_classes([first], images, device="cpu"), alone[0].argmax(1))


def test_label_maps_must_agree(trained):
    other = fixed([0.0, 0.0], "other", {"x": 0, "y": 255})
    with pytest.raises(ConfigError, match="label maps differ between ensemble members: .*run0.*other"):
        predict_classes([load_network(trained["root"] / "run0"), other], np.zeros((1, 16, 16), np.float32))


def test_an_image_size_the_network_cannot_take_without_pad(trained, tmp_path):
    data = write_dataset_dir(tmp_path / "odd", n_patients=1, slices=2, size=18)
    with pytest.raises(ConfigError, match=r"run0 .*divisible by 4, the images are 18x18.*without model.pad"):
        predict_path([load_network(trained["root"] / "run0")], data, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_padded_network_takes_any_size_and_crops_back(trained, tmp_path):
    padded = run(tiny_config(data=str(trained["data"]), model__pad=True), tmp_path / "padded")
    network = load_network(padded.out_dir)
    data = write_dataset_dir(tmp_path / "odd", n_patients=1, slices=2, size=(18, 17))
    images = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in sorted((data / "images").iterdir())])
    got = predict_classes([network], images, device="cpu")
    assert got.shape == (2, 18, 17)
    x = torch.nn.functional.pad(torch.from_numpy(images).unsqueeze(1), (0, 20 - 17, 0, 20 - 18))
    with torch.no_grad():
        expected = network.model(x).argmax(1)[:, :18, :17].numpy()
    assert np.array_equal(got, expected)


def nifti_volume(path: Path, shape=(16, 16, 3), zooms=(1.25, 1.5, 8.0), ndim: int = 3) -> Path:
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 900, shape).astype(np.float32)
    data[4:10, 5:12, :] += 1500  # a bright blob, so the scaling has something to clip
    if ndim == 4:
        data = np.stack([data, data], axis=-1)
    affine = np.array(
        [[0.0, -zooms[1], 0.0, 40.0], [zooms[0], 0.0, 0.0, -12.5], [0.0, 0.0, zooms[2], 7.0], [0.0, 0.0, 0.0, 1.0]]
    )
    image = nib.Nifti1Image(data, affine)
    image.header.set_zooms(zooms[: data.ndim] if ndim == 3 else (*zooms, 1.0))
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.to_filename(str(path))
    return path


def test_nifti_out_has_the_inputs_grid_and_the_import_nifti_slices(trained, tmp_path):
    source = nifti_volume(tmp_path / "vols" / "case7_DE.nii.gz")
    network = load_network(trained["root"] / "run0")
    summary = predict_path([network], source, tmp_path / "out", device="cpu")
    written = nib.load(summary.files[0])
    original = nib.load(source)
    assert summary.files[0].name == "case7_DE.nii.gz"
    assert written.shape == original.shape and np.array_equal(written.affine, original.affine)
    assert written.header.get_zooms() == original.header.get_zooms()
    assert int(written.header["qform_code"]) == 1 and int(written.header["sform_code"]) == 2
    assert np.array_equal(written.get_qform(), original.get_qform())
    labels = np.asarray(written.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= set(LABELS.values())
    # The same slices as import-nifti writes (a labels volume is needed there; keep every slice).
    nib.Nifti1Image(np.ones(original.shape, np.uint8), original.affine).to_filename(
        str(tmp_path / "vols" / "case7_gd.nii.gz")
    )
    import_nifti(tmp_path / "vols", tmp_path / "pngs", "*_DE.nii.gz", "*_gd.nii.gz", keep_empty=True)
    from_pngs = predict_path([network], tmp_path / "pngs", tmp_path / "png_out", device="cpu")
    for k in range(3):
        png = np.asarray(Image.open(tmp_path / "png_out" / f"case7_slice{k:03d}.png"))
        assert np.array_equal(slice_to_png(labels[:, :, k]), png), k
    assert len(from_pngs.files) == 3
    # predictions.csv: voxels and ml = voxels * 1.25 * 1.5 * 8 mm^3 / 1000
    row = summary.rows[0]
    for name, value in LABELS.items():
        voxels = int((labels == value).sum())
        assert row[f"{name}_pixels"] == voxels
        assert row[f"{name}_ml"] == pytest.approx(voxels * 15.0 / 1000)
    # PNG out of a volume: import-nifti's slice names and pixels
    again = predict_path([network], source, tmp_path / "as_png", fmt="png", device="cpu")
    assert [p.name for p in again.files] == [f"case7_DE_slice{k:03d}.png" for k in range(3)]


def test_slices_to_volume_undoes_the_import_nifti_orientation():
    volume = np.arange(4 * 5 * 3).reshape(4, 5, 3)
    for axis in (0, 1, 2):
        slices = np.stack([slice_to_png(np.take(volume, k, axis=axis)) for k in range(volume.shape[axis])])
        assert np.array_equal(slices_to_volume(slices, axis), volume)


def test_a_folder_of_volumes_gives_one_output_each(trained, tmp_path):
    for name in ("a.nii.gz", "b.nii"):
        nifti_volume(tmp_path / "vols" / name, shape=(16, 16, 2))
    summary = predict_path([load_network(trained["root"] / "run0")], tmp_path / "vols", tmp_path / "out", device="cpu")
    assert sorted(p.name for p in summary.files) == ["a.nii.gz", "b.nii"] and summary.slices == 4
    glob_summary = predict_path(
        [load_network(trained["root"] / "run0")], str(tmp_path / "vols" / "*.nii.gz"), tmp_path / "g", device="cpu"
    )
    assert [p.name for p in glob_summary.files] == ["a.nii.gz"]


def test_export_then_load_gives_the_same_predictions(trained, tmp_path):
    zip_path = export_model(trained["root"] / "run0", tmp_path / "model.zip", source={"trial": 0})
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["config.yaml", "manifest.json", "model.pt"]
        manifest = json.loads(archive.read("manifest.json"))
        loaded = torch.load(__import__("io").BytesIO(archive.read("model.pt")), weights_only=True)
    assert manifest["labels"] == LABELS and manifest["checkpoint"] == "last.pt"  # select: final by default
    assert manifest["source"] == {"trial": 0} and manifest["versions"]["torch"] == torch.__version__
    assert "normalize.mean" in loaded["model"]  # the input layer's statistics travel with the weights
    predict_path([load_network(trained["root"] / "run0")], trained["images"], tmp_path / "a", tta="flip")
    from_zip = predict_path([load_network(zip_path)], trained["images"], tmp_path / "b", tta="flip")
    for name in trained["test"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert [r["networks"] for r in from_zip.rows] == ["model"] * len(trained["test"])
    images = np.random.default_rng(1).uniform(0, 1, (3, 16, 16)).astype(np.float32)
    exact = [
        predict_probabilities([load_network(p)], images, device="cpu") for p in (trained["root"] / "run0", zip_path)
    ]
    assert np.array_equal(*exact)
    with pytest.raises(DataError, match="already exists"):
        export_model(trained["root"] / "run0", zip_path)


def test_a_damaged_zip_is_refused(trained, tmp_path):
    zip_path = export_model(trained["root"] / "run0", tmp_path / "model.zip")
    with zipfile.ZipFile(zip_path) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    parts["model.pt"] = parts["model.pt"][:-1] + bytes([parts["model.pt"][-1] ^ 1])
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    with pytest.raises(DataError, match=r"bad.zip: model.pt does not match the SHA-256"):
        load_network(tmp_path / "bad.zip")
    (tmp_path / "not.zip").write_text("x")
    with pytest.raises(DataError, match="not.zip: not a model zip"):
        load_network(tmp_path / "not.zip")


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda root, tmp: tmp / "nowhere", "run folder not found"),
        (lambda root, tmp: tmp / "nowhere.pt", "nowhere.pt: checkpoint not found"),
        (lambda root, tmp: tmp / "nowhere.zip", "nowhere.zip: model zip not found"),
    ],
)
def test_missing_networks_are_one_line(trained, tmp_path, make, pattern):
    with pytest.raises(DataError, match=pattern):
        load_network(make(trained["root"], tmp_path))


def test_a_run_without_its_checkpoint(trained, tmp_path):
    shutil.copytree(trained["root"] / "run0", tmp_path / "run", ignore=shutil.ignore_patterns("*.pt"))
    with pytest.raises(DataError, match=r"last.pt: checkpoint not found"):
        load_network(tmp_path / "run")
    with pytest.raises(DataError, match=r"best.pt: checkpoint not found"):
        load_network(tmp_path / "run", checkpoint="best")


def test_an_output_folder_holding_files_is_refused(trained, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="out: already holds files"):
        predict_path([load_network(trained["root"] / "run0")], trained["images"], tmp_path / "out")
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert check_out_dir(tmp_path / "new") == tmp_path / "new"


def test_a_nifti_that_is_not_3d(trained, tmp_path):
    source = nifti_volume(tmp_path / "v.nii.gz", ndim=4)
    with pytest.raises(DataError, match=r"v.nii.gz: volume is 4-D with shape \(16, 16, 3, 2\); expected 3-D"):
        predict_path([load_network(trained["root"] / "run0")], source, tmp_path / "out")


def test_png_inputs_cannot_give_nifti(trained, tmp_path):
    with pytest.raises(ConfigError, match="--format nifti needs NIfTI inputs"):
        predict_path([load_network(trained["root"] / "run0")], trained["images"], tmp_path / "o", fmt="nifti")
    with pytest.raises(UserError, match="input not found"):
        predict_path([load_network(trained["root"] / "run0")], tmp_path / "none", tmp_path / "o")


def test_volume_slices_scale_as_import_nifti_by_hand(tmp_path):
    from lgeseg.predict import volume_slices

    data = np.array([0.0, 50.0, 100.0, 200.0]).reshape(2, 2, 1)
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(tmp_path / "v.nii"))
    # percentiles 0 and 100 map 0 -> 0 and 200 -> 255: 50 -> 63.75 -> 64, 100 -> 127.5 -> 128 (rint, to even)
    slices, _ = volume_slices(tmp_path / "v.nii", percentiles=(0.0, 100.0))
    # PNG orientation: rows = the second axis reversed, columns = the first
    expected = np.array([[50.0, 200.0], [0.0, 100.0]])
    assert slices.shape == (1, 2, 2)
    assert slices[0] == pytest.approx(np.array([[64, 255], [0, 128]]) / 255)
    assert np.array_equal(np.flipud(data[:, :, 0].T), expected)


def test_bad_percentiles(trained, tmp_path):
    source = nifti_volume(tmp_path / "v.nii.gz")
    with pytest.raises(ConfigError, match="--percentiles must be two values 0 <= low < high <= 100"):
        predict_path([load_network(trained["root"] / "run0")], source, tmp_path / "o", percentiles=(50, 10))


def test_a_volume_the_network_cannot_take_stops_before_anything_is_written(trained, tmp_path):
    nifti_volume(tmp_path / "vols" / "a.nii.gz", shape=(16, 16, 2))
    nifti_volume(tmp_path / "vols" / "b.nii.gz", shape=(16, 18, 2))
    with pytest.raises(ConfigError, match=r"the images are 18x16 \(HxW\)"):
        predict_path([load_network(trained["root"] / "run0")], tmp_path / "vols", tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_non_finite_voxels_as_import_nifti(trained, tmp_path, caplog):
    """NaN and inf are left out of the intensity percentiles and read as 0, said once; a volume with no finite
    voxel is refused before anything is written, as ``import-nifti`` does."""
    from lgeseg.predict import volume_slices

    data = np.array([0.0, np.nan, 100.0, np.inf]).reshape(2, 2, 1)
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(tmp_path / "v.nii"))
    with caplog.at_level("WARNING", logger="lgeseg.predict"):
        slices, _ = volume_slices(tmp_path / "v.nii", percentiles=(0.0, 100.0))
    # finite voxels 0 and 100 are the percentiles 0 and 100: 0 -> 0, 100 -> 255; NaN and inf -> 0
    assert slices[0] == pytest.approx(np.array([[0, 0], [0, 255]]) / 255)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'v.nii'}: 2 of 4 voxels are NaN or infinite: left out of the intensity percentiles and "
        "written as 0"
    ]
    nib.Nifti1Image(np.full((16, 16, 2), np.nan, np.float32), np.eye(4)).to_filename(str(tmp_path / "nan.nii.gz"))
    with pytest.raises(DataError, match=r"nan.nii.gz: every voxel is NaN or infinite: there is no image in it"):
        predict_path([load_network(trained["root"] / "run0")], tmp_path / "nan.nii.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dot_files_in_an_input_folder_are_skipped_and_said(trained, tmp_path, caplog):
    """A Mac's ``._x.png`` AppleDouble copies are not images: left out with one warning, as ``evaluate`` does."""
    folder = tmp_path / "in"
    shutil.copytree(trained["images"], folder)
    (folder / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    with caplog.at_level("WARNING", logger="lgeseg.predict"):
        summary = predict_path([load_network(trained["root"] / "run0")], folder, tmp_path / "out", device="cpu")
    assert summary.slices == len(list(trained["images"].glob("*.png")))
    assert [r.getMessage() for r in caplog.records] == [f"{folder}: skipped 1 dot-file(s) (._x.png)"]


@pytest.mark.parametrize("name", ["foo", "cuda:x"])
def test_a_bad_device_names_the_option_it_came_from(trained, tmp_path, name):
    from lgeseg.errors import TrainingError

    with pytest.raises(TrainingError, match=rf"^--device '{name}' is not a device \(auto, cpu, cuda or cuda:N\)$"):
        predict_path([load_network(trained["root"] / "run0")], trained["images"], tmp_path / "out", device=name)


def test_flip_tta_on_a_network_trained_without_reflection_is_said(trained, tmp_path, caplog):
    network = load_network(trained["root"] / "run0")
    with caplog.at_level("WARNING", logger="lgeseg.predict"):
        predict_path([network], trained["images"], tmp_path / "a", tta="flip", device="cpu")
    assert caplog.records == []  # trained with reflection (the default)
    network.config["train"]["augment"]["reflect"] = False
    with caplog.at_level("WARNING", logger="lgeseg.predict"):
        predict_path([network], trained["images"], tmp_path / "b", tta="flip", device="cpu")
    assert [r.getMessage() for r in caplog.records] == [
        "--tta flip: run0 trained without reflection (train.augment.reflect: false): the reflected view is one it "
        "never saw"
    ]
