"""The study's closing table: keyed by the space, statuses, reruns, and the did-not-learn mark."""

from __future__ import annotations

from hpo.closing_table import SUMMARY_COLUMNS, format_summary


def _row(l2: float, miou: float | None, learned: bool | None, **extra) -> dict:
    return {
        "space": {"L2": f"{l2:g}"},
        "point": f"l2={l2:g},seed=0",
        "seed": 0,
        "value": 0.5,
        "status": "complete",
        "reruns": 0,
        "epochs": 3,
        "val_accuracy": 0.9,
        "GlobalAccuracy": 0.9,
        "MeanIoU": miou,
        "MeanBFScore": 0.5,
        "learned": learned,
        "trial": 0,
        "error": None,
        **extra,
    }


def test_summary_marks_networks_that_did_not_learn():
    text = format_summary([_row(5e-3, 0.31, False), _row(5e-4, 0.8, True), _row(5e-5, None, None)])
    lines = text.splitlines()
    assert lines[0].split() == ["L2", "seed", *(w for c in SUMMARY_COLUMNS for w in c.split())]
    assert lines[1].split()[-1] == "NO" and lines[2].split()[-1] == "yes" and lines[3].split()[-1] == "NaN"
    assert lines[-1].startswith("did not learn (1 of 3): l2=0.005 seed=0: test MeanIoU is not clearly above")


def test_summary_without_unlearned_networks_has_no_such_line():
    assert "did not learn" not in format_summary([_row(5e-4, 0.8, True)])


def test_a_search_table_is_keyed_by_configuration_and_searched_keys():
    row = {**_row(1e-3, 0.8, True), "space": {"config": "c000", "train.l2": "0.001"}, "point": "c000,seed=0"}
    failed = {**row, "status": "failed", "error": "boom", "learned": None}
    lines = format_summary([row, failed]).splitlines()
    assert lines[0].split()[:3] == ["config", "train.l2", "seed"] and lines[1].split()[:2] == ["c000", "0.001"]
    assert lines[-1] == "failed c000 seed=0: boom"
