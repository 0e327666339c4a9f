"""``python -m hpo.run evaluate``: the happy path and one-line errors for every kind of bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpo.run import main
from lgeseg.data import DEFAULT_LABELS
from lgeseg.metrics import evaluate
from lgeseg.png import write_mask


def make_pairs(
    root: Path, n: int = 3, size: int = 16, labels: dict[str, int] = DEFAULT_LABELS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Write ``n`` random truth/prediction mask pairs under ``root/truth`` and ``root/pred``."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, len(labels), size=(n, size, size)).astype(np.uint8)
    pred = truth.copy()
    pred[rng.random(pred.shape) < 0.2] = 0
    names = [f"case{i:02d}.png" for i in range(n)]
    for i, name in enumerate(names):
        write_mask(root / "truth" / name, truth[i], labels)
        write_mask(root / "pred" / name, pred[i], labels)
    return pred, truth, names


def run_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI expecting exit status 2 and a single ``error:`` line; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


def args(root: Path, *extra: str) -> list[str]:
    return ["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth"), *extra]


def test_happy_path_json_matches_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred, truth, names = make_pairs(tmp_path)
    out = tmp_path / "metrics.json"
    assert main(args(tmp_path, "--json", str(out))) == 0
    printed = capsys.readouterr().out
    assert "MeanBFScore" in printed and "region1" in printed and "GlobalAccuracy" in printed
    loaded = json.loads(out.read_text())
    expected = evaluate(pred, truth, list(DEFAULT_LABELS), names)
    assert loaded["classes"] == ["region1", "region2", "region3"]
    assert loaded["confusion_matrix"] == expected["confusion_matrix"]
    assert [image["file"] for image in loaded["images"]] == names
    for name in expected["classes"]:
        for metric, value in expected["class"][name].items():
            got = loaded["class"][name][metric]
            assert (got is None and math.isnan(value)) or got == pytest.approx(value)
    for metric, value in expected["dataset"].items():
        assert loaded["dataset"][metric] == pytest.approx(value)


def test_label_map_from_dataset_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = {"background": 0, "scar": 200}
    make_pairs(tmp_path, labels=labels)
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    out = tmp_path / "m.json"
    assert main(args(tmp_path, "--json", str(out))) == 0
    assert json.loads(out.read_text())["classes"] == ["background", "scar"]


def test_labels_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = {"bg": 0, "fg": 10}
    make_pairs(tmp_path, labels=labels)
    out = tmp_path / "m.json"
    assert main(args(tmp_path, "--labels", "bg=0,fg=10", "--json", str(out))) == 0
    assert json.loads(out.read_text())["classes"] == ["bg", "fg"]


def test_missing_truth_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    (tmp_path / "truth" / "case01.png").unlink()
    line = run_error(capsys, args(tmp_path))
    assert "case01.png" in line and "truth mask missing" in line


def test_missing_prediction_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    (tmp_path / "pred" / "case02.png").unlink()
    line = run_error(capsys, args(tmp_path))
    assert "case02.png" in line and "prediction mask missing" in line


def test_predicted_only_scores_the_masks_that_have_a_prediction(tmp_path: Path, capsys) -> None:
    """A run's predictions of its test split against the whole masks folder: the other truth masks are left out
    (and counted), the scores are those of the predicted pairs alone; a prediction without truth still fails."""
    pred, truth, names = make_pairs(tmp_path, n=4)
    for name in names[2:]:
        (tmp_path / "pred" / name).unlink()
    assert main(args(tmp_path)) == 2 and "prediction mask missing" in capsys.readouterr().err
    out = tmp_path / "m.json"
    assert main(args(tmp_path, "--predicted-only", "--json", str(out))) == 0
    assert "note: 2 truth masks with a prediction scored (--predicted-only)" in capsys.readouterr().err
    expected = evaluate(pred[:2], truth[:2], list(DEFAULT_LABELS), names[:2])
    loaded = json.loads(out.read_text())
    assert [image["file"] for image in loaded["images"]] == names[:2]
    assert loaded["confusion_matrix"] == expected["confusion_matrix"]
    (tmp_path / "truth" / names[0]).unlink()
    line = run_error(capsys, args(tmp_path, "--predicted-only"))
    assert names[0] in line and "truth mask missing" in line


def test_size_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    write_mask(tmp_path / "pred" / "case01.png", np.zeros((12, 20), np.uint8), DEFAULT_LABELS)
    line = run_error(capsys, args(tmp_path))
    assert "case01.png" in line and "12x20" in line and "16x16" in line  # H x W, as lgeseg.data prints sizes


def test_values_outside_label_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    bad = np.zeros((16, 16), np.uint8)
    bad[3, 3] = 77
    Image.fromarray(bad, mode="L").save(tmp_path / "pred" / "case00.png")
    line = run_error(capsys, args(tmp_path))
    assert "case00.png" in line and "77" in line


def test_unreadable_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    (tmp_path / "truth" / "case02.png").write_bytes(b"not a png at all")
    line = run_error(capsys, args(tmp_path))
    assert "case02.png" in line and "unreadable" in line


def test_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    for path in (tmp_path / "pred").iterdir():
        path.unlink()
    line = run_error(capsys, args(tmp_path))
    assert str(tmp_path / "pred") in line and "no .png" in line


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_pairs(tmp_path)
    line = run_error(capsys, ["evaluate", "--pred", str(tmp_path / "nope"), "--truth", str(tmp_path / "truth")])
    assert str(tmp_path / "nope") in line and "not found" in line
