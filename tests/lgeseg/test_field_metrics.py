"""The field's metrics (lgeseg.field_metrics) against hand-worked surfaces, MONAI's own reductions, and the
empty-mask rules; their place in metrics.json and evaluate; the config checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from lgeseg.config import RUN_DEFAULTS, config_hash, run_config
from lgeseg.errors import ConfigError, DataError
from lgeseg.field_metrics import (
    Spacing,
    directed_summary,
    field_metrics,
    parse_metric,
    patient_table,
    read_spacing,
    surface_distances,
    surface_values,
)

CLASSES = ["bg", "obj", "scar"]


def _square(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((10, 10), np.uint8)
    mask[rows, cols] = 1
    return mask


SQUARE = _square(slice(2, 6), slice(2, 6))  # 4 x 4: boundary ring of 12 pixels, 2 x 2 interior
RIGHT = _square(slice(2, 6), slice(3, 7))  # the same, one column to the right
DOWN = _square(slice(3, 7), slice(2, 6))  # the same, one row down


def _fixture():
    """2 patients x 3 slices. A: the prediction is SQUARE moved one column right on every slice, and
    predicts one 'scar' pixel on slice 0 where the reference has none. B: exact on slices 0 and 1, nothing
    predicted on slice 2. Spacing 1 x 1 mm in-plane, 10 mm slices."""
    truth = np.stack([SQUARE] * 6)
    pred = np.stack([RIGHT, RIGHT, RIGHT, SQUARE, SQUARE, np.zeros_like(SQUARE)])
    pred[0, 8, 8] = 2
    files = [f"{p}_s{k}.png" for p in "AB" for k in range(3)]
    return pred, truth, files, ["A"] * 3 + ["B"] * 3, [0, 1, 2, 0, 1, 2]


def test_hand_worked_two_patient_three_slice_fixture():
    pred, truth, files, patients, slices = _fixture()
    # Slices are given shuffled: the stack order comes from the slice numbers, not the input order.
    order = [2, 0, 1, 5, 3, 4]
    result = field_metrics(
        pred[order],
        truth[order],
        CLASSES,
        [files[i] for i in order],
        [patients[i] for i in order],
        [slices[i] for i in order],
        Spacing(1.0, 1.0, 10.0),
        tolerance_mm=2.0,
    )
    assert result["unit"] == "mm" and result["volume_unit"] == "ml" and result["case_unit"] == "patient"
    a, b = ({r["patient"]: r for r in result["patients"]}[p]["class"]["obj"] for p in "AB")
    # A, each slice: overlap 4 x 3 = 12 pixels, Dice 2*12/32. Of each ring's 12 boundary pixels 6 lie on
    # the other ring (d = 0) and 6 one pixel off (d = 1), in both directions: HD95 = 1, ASSD = 12/24,
    # NSD(2 mm) = 1.
    assert a["Dice"] == pytest.approx(0.75) and a["HD95"] == pytest.approx(1.0)
    assert a["ASSD"] == pytest.approx(0.5) and a["NSD"] == pytest.approx(1.0)
    # A in 3-D: slices 0 and 2 are caps (all 16 pixels boundary, 12 at d = 0, 4 at d = 1), slice 1 the ring
    # (6 + 6): 44 surface voxels per side, 30 at 0 and 14 at 1. ASSD = 28 / 88; HD95 = HD = 1.
    assert a["Dice3D"] == pytest.approx(0.75)
    assert a["HD95_3D"] == pytest.approx(1.0) and a["HD_3D"] == pytest.approx(1.0)
    assert a["ASSD_3D"] == pytest.approx(28 / 88) and a["NSD_3D"] == pytest.approx(1.0)
    # 48 voxels of 1 x 1 x 10 mm = 0.48 ml on both sides.
    assert a["Volume_ml"] == pytest.approx(0.48) and a["VolumeError_ml"] == pytest.approx(0.0)
    # B, slices: 1, 1 and the empty prediction: Dice 0, NSD 0, distances the image diagonal sqrt(200).
    worst = math.sqrt(200)
    assert b["Dice"] == pytest.approx(2 / 3) and b["NSD"] == pytest.approx(2 / 3)
    assert b["HD95"] == pytest.approx(worst / 3) and b["ASSD"] == pytest.approx(worst / 3)
    assert b["EmptySlices"] == {"both": 0, "prediction": 1, "reference": 0}
    # B in 3-D: prediction = slices 0-1 (32 voxels, all surface), reference = slices 0-2 (48 voxels; 16 + 12
    # + 16 surface). P->T: 28 at 0, the 4 interior pixels of slice 1 at 1 mm (the ring in-plane);
    # T->P: 28 at 0, the 16 of slice 2 at 10 mm. Directed P95: 1 and 10 -> HD95 = 10;
    # ASSD = (4 + 160) / 76; NSD(2 mm) = 60 / 76; Dice = 2*32/80.
    assert b["Dice3D"] == pytest.approx(0.8)
    assert b["HD95_3D"] == pytest.approx(10.0) and b["HD_3D"] == pytest.approx(10.0)
    assert b["ASSD_3D"] == pytest.approx(164 / 76) and b["NSD_3D"] == pytest.approx(60 / 76)
    assert b["Volume_ml"] == pytest.approx(0.48) and b["PredVolume_ml"] == pytest.approx(0.32)
    assert b["VolumeError_ml"] == pytest.approx(-0.16)
    # Summary = mean over the two patients; EMIDEC = case Dice (slice mean) and 3-D Hausdorff.
    obj = result["summary"]["obj"]
    assert obj["Dice"] == pytest.approx((0.75 + 2 / 3) / 2) and obj["Cases"] == 2
    assert result["protocols"]["emidec"]["obj"] == {
        "Dice": pytest.approx((0.75 + 2 / 3) / 2),
        "Hausdorff": pytest.approx((1.0 + 10.0) / 2),
    }
    # Per image rows keep the input order and say what was empty.
    rows = {r["file"]: r for r in result["images"]}
    assert rows["B_s2.png"]["class"]["obj"] == {
        "Dice": 0.0,
        "HD95": worst,
        "ASSD": worst,
        "NSD": 0.0,
        "empty": "prediction",
    }
    assert patient_table(result, "obj", "Dice3D") == {"A": pytest.approx(0.75), "B": pytest.approx(0.8)}


def test_empty_masks_are_counted_with_defined_values():
    pred, truth, files, patients, slices = _fixture()
    result = field_metrics(pred, truth, CLASSES, files, patients, slices, Spacing(1.0, 1.0, 10.0))
    scar = {r["patient"]: r["class"]["scar"] for r in result["patients"]}
    image = {r["file"]: r["class"]["scar"] for r in result["images"]}
    # A predicted pixel where the reference has none: Dice 0, NSD 0, worst distances; counted.
    assert image["A_s0.png"] == {
        "Dice": 0.0,
        "HD95": math.sqrt(200),
        "ASSD": math.sqrt(200),
        "NSD": 0.0,
        "empty": "reference",
    }
    # Absent on both sides: Dice 1, NSD 1, distance 0 (Metrics Reloaded's convention); counted.
    assert image["B_s0.png"] == {"Dice": 1.0, "HD95": 0.0, "ASSD": 0.0, "NSD": 1.0, "empty": "both"}
    # 3-D worst value: the diagonal of the stack, sqrt(30^2 + 10^2 + 10^2) mm.
    assert scar["A"]["empty"] == "reference" and scar["A"]["HD_3D"] == pytest.approx(math.sqrt(1100))
    assert scar["B"]["empty"] == "both" and scar["B"]["Dice3D"] == 1.0 and scar["B"]["HD95_3D"] == 0.0
    summary = result["summary"]["scar"]
    assert (summary["EmptyBoth"], summary["EmptyPrediction"], summary["EmptyReference"]) == (1, 0, 1)
    assert summary["EmptySlices"] == {"both": 5, "prediction": 0, "reference": 1}
    assert summary["Dice"] == pytest.approx((2 / 3 + 1) / 2)  # never skipped: A's slices 0, 1, 1


def test_anisotropic_spacing_rows_first():
    """DOWN against SQUARE: each ring has 6 pixels at 0, two one column off (d = col spacing) and four one
    row off (d = row spacing). With rows 2 mm and columns 1 mm: HD95 = 2, ASSD = (2 + 8) / 12."""
    values = surface_values(DOWN[None], SQUARE[None], (2.0, 1.0), tolerance=1.5)[0]
    assert values["HD95"] == pytest.approx(2.0) and values["ASSD"] == pytest.approx(10 / 12)
    assert values["NSD"] == pytest.approx(8 / 12) and values["Dice"] == pytest.approx(0.75)
    swapped = surface_values(DOWN[None], SQUARE[None], (1.0, 2.0), tolerance=1.5)[0]
    assert swapped["HD95"] == pytest.approx(1.0) and swapped["ASSD"] == pytest.approx(0.5)  # all one column off
    assert surface_values(DOWN[None], SQUARE[None], (2.0, 1.0), tolerance=2.0)[0]["NSD"] == pytest.approx(1.0)


def test_hd95_is_the_max_of_the_two_directed_percentiles():
    # 20 distances one way (19 at 0, one at 10), 20 at 0 the other way. Directed P95 (linear): 0.05 * 10
    # = 0.5 one way, 0 the other -> 0.5. The 95th percentile of the 40 pooled distances would be 0.
    to_truth, to_pred = np.r_[np.zeros(19), 10.0], np.zeros(20)
    summary = directed_summary(to_truth, to_pred, tolerance=2.0)
    assert summary["HD95"] == pytest.approx(0.5) and np.percentile(np.r_[to_truth, to_pred], 95) == 0
    assert (
        summary["HD"] == 10.0 and summary["ASSD"] == pytest.approx(10 / 40) and summary["NSD"] == pytest.approx(39 / 40)
    )


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own internal deprecated argument
@pytest.mark.parametrize("shape, spacing", [((24, 20), (1.5, 0.75)), ((5, 16, 14), (8.0, 1.25, 1.0))])
def test_one_distance_pass_equals_monais_three_functions(shape, spacing):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    rng = np.random.default_rng(3)
    grid = np.indices(shape)
    for _ in range(4):
        centre = rng.uniform(0.3, 0.7, len(shape)) * np.array(shape)
        radius = rng.uniform(0.15, 0.3, (2, len(shape))) * np.array(shape)
        pred = (((grid.T - centre) / radius[0]) ** 2).sum(-1).T < 1
        truth = (((grid.T - centre - 1) / radius[1]) ** 2).sum(-1).T < 1
        ours = directed_summary(*surface_distances(pred, truth, spacing), tolerance=2.0)
        p, t = torch.from_numpy(pred[None, None]), torch.from_numpy(truth[None, None])
        kw = {"include_background": True, "spacing": list(spacing)}
        assert ours["HD95"] == pytest.approx(float(compute_hausdorff_distance(p, t, percentile=95, **kw)), rel=1e-5)
        assert ours["HD"] == pytest.approx(float(compute_hausdorff_distance(p, t, **kw)), rel=1e-5)
        assert ours["ASSD"] == pytest.approx(
            float(compute_average_surface_distance(p, t, symmetric=True, **kw)), rel=1e-5
        )
        assert ours["NSD"] == pytest.approx(float(compute_surface_dice(p, t, class_thresholds=[2.0], **kw)), rel=1e-5)


def test_without_spacing_distances_are_pixels_and_no_3d_distances():
    pred, truth, files, patients, slices = _fixture()
    result = field_metrics(pred, truth, CLASSES, files, patients, slices, None, tolerance_mm=2.0)
    assert result["unit"] == "pixel" and result["volume_unit"] is None and "pixels" in result["note"]
    a = result["patients"][0]["class"]["obj"]
    assert a["HD95"] == pytest.approx(1.0) and a["Dice3D"] == pytest.approx(0.75)
    assert a["HD95_3D"] is None and a["Volume_ml"] is None
    # Without patients each image is its own case.
    alone = field_metrics(pred, truth, CLASSES, files)
    assert alone["case_unit"] == "image" and alone["summary"]["obj"]["Cases"] == 6


def test_only_the_chosen_metrics():
    pred, truth, files, patients, slices = _fixture()
    result = field_metrics(pred, truth, CLASSES, files, patients, slices, None, which=["dice"])
    row = result["patients"][0]["class"]["obj"]
    assert row["Dice"] == pytest.approx(0.75) and row["HD95"] is None and row["NSD"] is None


def test_ignored_truth_pixels_belong_to_no_class():
    truth = np.stack([SQUARE]).copy()
    truth[0, 5, 2:6] = 255  # unlabelled: the bottom row of the square
    pred = np.stack([SQUARE])
    row = field_metrics(pred, truth, CLASSES, ["x.png"])["images"][0]["class"]["obj"]
    assert row["Dice"] == pytest.approx(1.0) and row["HD95"] == 0.0


def test_spacing_in_dataset_json(tmp_path):
    meta = tmp_path / "dataset.json"
    assert read_spacing(tmp_path) is None
    meta.write_text(json.dumps({"spacing": [1.5, 1.25, 8]}))
    assert read_spacing(tmp_path) == Spacing(1.5, 1.25, 8.0)
    meta.write_text(json.dumps({"spacing": {"p1": [1, 1, 10], "p2": [2, 2]}}))
    assert read_spacing(tmp_path) == {"p1": Spacing(1.0, 1.0, 10.0), "p2": Spacing(2.0, 2.0, None)}
    for bad in ([1.5], [0, 1, 2], [1, 1, float("inf")], [1, True], "1mm", {"p1": [1, -1, 1]}):
        meta.write_text(json.dumps({"spacing": bad}))
        with pytest.raises(DataError, match=r"dataset\.json: 'spacing'.* must be \[row_mm, col_mm\]"):
            read_spacing(tmp_path)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"nsd_tolerance_mm": 0}, r"'metrics\.nsd_tolerance_mm' must be > 0, got 0"),
        ({"nsd_tolerance_mm": -1.5}, r"'metrics\.nsd_tolerance_mm' must be > 0, got -1\.5"),
        ({"nsd_tolerance_mm": float("nan")}, r"'metrics\.nsd_tolerance_mm' must be a number, got nan"),
        ({"field": ["dice", "hd99"]}, r"'metrics\.field' names unknown metric 'hd99'"),
        ({"tolerance": 2}, r"unknown config key 'metrics\.tolerance'"),
    ],
)
def test_metrics_config_checks(values, match):
    with pytest.raises(ConfigError, match=match):
        run_config({"metrics": values})


def test_metric_names():
    from lgeseg.field_metrics import PATIENT_METRICS, higher_is_better

    assert [m for m in PATIENT_METRICS if higher_is_better(m)] == ["Dice", "NSD", "Dice3D", "NSD_3D"]
    assert [m for m in PATIENT_METRICS if higher_is_better(m) is None] == [
        "Volume_ml",
        "PredVolume_ml",
        "VolumeError_ml",
    ]
    assert parse_metric("myocardium:HD95_3D", ["myocardium"]) == ("myocardium", "HD95_3D")
    with pytest.raises(ConfigError, match=r"unknown metric 'HD99'"):
        parse_metric("myocardium:HD99", ["myocardium"])
    with pytest.raises(ConfigError, match=r"CLASS one of myocardium"):
        parse_metric("scar:Dice", ["myocardium"])


def test_new_keys_leave_existing_config_hashes_alone():
    config = run_config({})
    old = {k: v for k, v in config.items() if k != "metrics"}
    old["split"] = {k: v for k, v in config["split"].items() if k not in ("folds", "fold", "stratify")}
    assert config_hash(config) == config_hash(old)
    assert config_hash(run_config({"metrics": {"nsd_tolerance_mm": 1.0}})) != config_hash(config)
    assert RUN_DEFAULTS["metrics"]["nsd_tolerance_mm"] == 2.0


def test_cli_errors_are_one_line(tiny_data_dir, one_line_error, tmp_path):
    line = one_line_error(
        [
            "evaluate",
            "--pred",
            str(tiny_data_dir / "masks"),
            "--truth",
            str(tiny_data_dir / "masks"),
            "--nsd-tolerance",
            "0",
        ]
    )
    assert line == "error: --nsd-tolerance must be a distance > 0 (mm), got 0"
    line = one_line_error(["train", "--out", str(tmp_path / "run"), "--set", "metrics.nsd_tolerance_mm=-1"])
    assert "'metrics.nsd_tolerance_mm' must be > 0, got -1" in line
    assert not (tmp_path / "run").exists()


def test_evaluate_writes_field_metrics_per_patient(make_dataset_dir, tmp_path, capsys):
    from hpo.run import main

    data = make_dataset_dir(n_patients=2, slices=3, size=16)
    (data / "dataset.json").write_text(json.dumps({"spacing": [1.0, 1.0, 10.0]}))
    pred = tmp_path / "pred"
    pred.mkdir()
    for png in sorted((data / "masks").iterdir()):
        Image.open(png).save(pred / png.name)
    out = tmp_path / "m.json"
    assert main(["evaluate", "--pred", str(pred), "--truth", str(data / "masks"), "--json", str(out)]) == 0
    assert "Field metrics, mean over 2 patients (NSD at 2 mm" in capsys.readouterr().out
    result = json.loads(out.read_text())
    field = result["field_metrics"]
    assert field["unit"] == "mm" and [r["patient"] for r in field["patients"]] == ["patient00", "patient01"]
    for cls in field["classes"]:
        assert field["summary"][cls]["Dice"] == 1.0 and field["summary"][cls]["HD95_3D"] == 0.0
    assert set(result) >= {"dataset", "class", "images", "confusion_matrix"}  # MATLAB's, as before
