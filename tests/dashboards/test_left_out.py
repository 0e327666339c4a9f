"""What is left out is said: dot-files skipped, images a NaN-skipping BF mean dropped, trials on another split."""

from __future__ import annotations

import logging
import math

import numpy as np
import optuna
from conftest import trial_record

from dashboards.caveats import caveat_lines, split_note
from dashboards.load import StudyRecord, TrialRecord, load_study, split_groups
from dashboards.stats import paired_comparisons
from lgeseg.data import load_dataset
from lgeseg.metrics import evaluate, format_tables


def test_dot_files_are_skipped_and_counted_once(make_dataset_dir, caplog):
    root = make_dataset_dir()
    (root / "images" / "._p00_s0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "masks" / "._p00_s0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "images" / ".DS_Store").write_bytes(b"Bud1")
    with caplog.at_level(logging.WARNING, logger="lgeseg.data"):
        dataset = load_dataset(root)
    assert len(dataset.files) == 24 and not any(f.startswith(".") for f in dataset.files)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = (
        f"{root}: skipped 3 dot-file(s) in images/ and masks/ "
        f"(images/.DS_Store, images/._p00_s0.png, masks/._p00_s0.png)"
    )
    assert warnings == [expected]


def test_evaluate_cli_skips_dot_files(make_dataset_dir, tmp_path):
    from hpo.run import main

    root = make_dataset_dir()
    (root / "masks" / "._p00_s0.png").write_bytes(b"\x00\x05\x16\x07")
    assert main(["evaluate", "--pred", str(root / "masks"), "--truth", str(root / "masks")]) == 0


def test_missed_class_counts_the_images_its_mean_bf_score_used():
    """A slice where the network misses the whole myocardium scores no myocardium BF: 2 of 3 images used."""
    truth = np.ones((3, 8, 8), np.uint8)  # background 1
    truth[:, 2:6, 2:6] = 2  # myocardium ring ...
    truth[:, 3:5, 3:5] = 0  # ... around the blood pool
    pred = truth.copy()
    pred[1][pred[1] == 2] = 1  # image 1: no myocardium predicted at all
    result = evaluate(pred, truth, ["blood", "background", "myocardium"], ["a.png", "b.png", "c.png"])
    myo = result["class"]["myocardium"]
    assert myo["MeanBFScore"] == 1.0 and myo["BFScoreImages"] == 2  # MATLAB's mean; the count shows the gap
    assert result["class"]["blood"]["BFScoreImages"] == 3 and result["dataset"]["BFScoreImages"] == 3
    assert [img["BFScoreClasses"] for img in result["images"]] == [3, 2, 3]
    text = format_tables(result)
    assert text.splitlines()[3].split()[-1] == "2/3"
    assert "up to 1 of 3 images left out" in text


def _trial(number: int, l2: float, seed: int, split: str | None, images: dict[str, float]) -> TrialRecord:
    metrics = {
        "dataset": {"MeanIoU": 0.5, "MeanBFScore": 0.5},
        "class": {},
        "images": [{"file": f, "MeanIoU": v, "MeanBFScore": 1.0} for f, v in images.items()],
    }
    return trial_record(number, l2=l2, seed=seed, test_metrics=metrics, split_hash=split)


def _record(trials: list[TrialRecord]) -> StudyRecord:
    groups = split_groups([t for t in trials if t.is_complete])
    return StudyRecord(
        name="s",
        storage="sqlite:///x.db",
        config={},
        out_dir=None,
        data_dir=None,
        labels={"a": 0, "b": 1},
        synthetic=False,
        trials=trials,
        compared_split=next(iter(groups)) if len(groups) > 1 else None,
    )


def test_trials_on_another_split_are_never_ranked_or_paired():
    nan = math.nan
    trials = [
        _trial(0, 1e-3, 0, "s1", {"a.png": 0.5, "b.png": 0.2}),
        _trial(1, 1e-4, 0, "s1", {"a.png": 0.4, "b.png": 0.3}),
        _trial(2, 1e-4, 1, "s2", {"c.png": 0.9, "d.png": nan}),
        _trial(3, 1e-3, 1, "s1", {"a.png": 0.7, "b.png": 0.4}),
    ]
    record = _record(trials)
    assert record.compared_split == "s1"
    assert [t.number for t in record.complete] == [0, 1, 3] and [t.number for t in record.other_split] == [2]
    assert split_note(record) == (
        "Finished trials ran on different train/val/test splits (the data changed under the study): trial(s) 2 on "
        "split s2. Rankings, figures and paired comparisons use only the 3 trial(s) on split s1, never mixing "
        "test sets."
    )
    (iou,) = [c for c in paired_comparisons(record) if c.metric == "MeanIoU"]
    assert iou.n == 2  # a.png and b.png only: c.png of the other split is never paired
    # One split: no note, nothing excluded.
    same = _record([t for t in trials if t.number != 2])
    assert same.compared_split is None and split_note(same) is None and len(same.complete) == 3
    assert caveat_lines(same) == [] and caveat_lines(record) == [split_note(record)]


def test_load_study_groups_by_recorded_split_hash():
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("labels", {"a": 0, "b": 1})
    for number, split in enumerate(["h1", "h2", "h1"]):
        study.add_trial(
            optuna.trial.create_trial(
                params={"l2": 10.0 ** -(number + 2), "seed": 0},
                value=0.5,
                distributions={
                    "l2": optuna.distributions.FloatDistribution(1e-12, 1, log=True),
                    "seed": optuna.distributions.IntDistribution(0, 10),
                },
                user_attrs={"split_hash": split, "test_metrics": {"dataset": {}, "class": {}, "images": []}},
            )
        )
    record = load_study(study, "sqlite:///:memory:")
    assert record.compared_split == "h1" and [t.number for t in record.other_split] == [1]


def test_split_groups_tie_goes_to_the_earliest_trial():
    trials = [
        _trial(5, 1e-3, 0, "h2", {}),
        _trial(7, 1e-3, 1, "h2", {}),
        _trial(6, 1e-4, 0, "h1", {}),
        _trial(8, 1e-4, 1, "h1", {}),
    ]
    assert list(split_groups(trials)) == ["h2", "h1"]
