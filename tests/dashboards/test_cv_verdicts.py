"""The report's per-patient verdicts from a study's trials: folds joined out of fold, seeds averaged within
patient before pairing, the three verdict words in the summary, the metric choice and its one-line errors,
and the search curve's estimates at the paper's L2 values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import trial_record
from report_fixture import build_study

from dashboards.load import StudyRecord, TrialRecord
from dashboards.patient_verdicts import (
    analyse_verdicts,
    check_delta,
    patient_table,
    resolve_metric,
    summary_lines,
    verdict_rows,
    verdicts_json,
)
from dashboards.report import render_html, report_json, report_parts
from dashboards.search import NEARBY_DECADES, paper_points
from dashboards.stats import NOT_RANKED
from lgeseg.errors import ConfigError, UserError

CLASSES = ["blood_pool", "background", "myocardium"]
PATIENTS = [f"P{p}" for p in range(8)]
FOLDS = {0: PATIENTS[:4], 1: PATIENTS[4:]}
L2 = {"A": 5e-5, "B": 5e-4, "C": 5e-3}


def base(p: int) -> float:
    return 0.70 + 0.01 * p


def value(config: str, seed: int, p: int) -> float:
    """A: b_p +- 0.1 by seed (mean b_p); B: b_p + 0.002; C: b_p - 0.05 - 0.001 p."""
    if config == "A":
        return base(p) + (0.1 if seed == 0 else -0.1)
    if config == "B":
        return base(p) + 0.002
    return base(p) - 0.05 - 0.001 * p


def field(patients: list[str], values: dict[str, float]) -> dict:
    """A ``field_metrics`` result holding only what the verdicts read (per-patient class values)."""
    return {
        "classes": CLASSES,
        "patients": [
            {"patient": p, "class": {c: {"Dice": values[p] if c == "myocardium" else 0.9} for c in CLASSES}}
            for p in patients
        ],
    }


def trial(number: int, config: str, seed: int, fold: int, test_metrics: dict) -> TrialRecord:
    return trial_record(number, l2=L2[config], seed=seed, test_metrics=test_metrics, fold=fold)


#: Test MeanIoU of a network that learned and of one that did not, against a majority-class baseline of 0.3:
#: learned needs 0.3 + 0.1 x (1 - 0.3) = 0.37 (lgeseg.metrics.clearly_above_baseline); 0.31 is short of it.
LEARNED_MIOU, NOT_LEARNED_MIOU, BASELINE_MIOU = 0.7, 0.31, 0.3


def cv_record(did_not_learn: str | None = None) -> StudyRecord:
    """The cross-validated study; ``did_not_learn`` (a string of configurations, e.g. ``"A"``) gives every
    trial a test MeanIoU and the majority-class baseline, the named configurations' networks not clearly above
    it (None: no baseline, learning unknown)."""
    trials = []
    for config in L2:
        for seed in (0, 1):
            for fold, patients in FOLDS.items():
                values = {p: value(config, seed, int(p[1:])) for p in patients}
                metrics: dict = {"field_metrics": field(patients, values)}
                t = trial(len(trials), config, seed, fold, metrics)
                if did_not_learn is not None:
                    metrics["dataset"] = {"MeanIoU": NOT_LEARNED_MIOU if config in did_not_learn else LEARNED_MIOU}
                    t.baseline = {"test": {"MeanIoU": BASELINE_MIOU}}
                trials.append(t)
    return StudyRecord("cv", "sqlite:///x.db", {}, None, None, dict(zip(CLASSES, (255, 128, 0))), False, trials)


def test_folds_are_joined_out_of_fold_and_seeds_averaged_before_pairing():
    analysis = analyse_verdicts(cv_record(), resolve_metric("myocardium:Dice", CLASSES), delta=0.01)
    assert analysis.n_patients == 8 and analysis.folds == [0, 1] and analysis.seeds == [0, 1]
    assert len(analysis.rows) == 8 * 3 * 2  # every patient once per configuration and seed
    assert analysis.configurations == ["L2=5e-05", "L2=0.0005", "L2=0.005"]
    verdicts = {(v.a, v.b): v for v in analysis.verdicts}
    ab = verdicts[("L2=5e-05", "L2=0.0005")]
    # A's seeds (b_p + 0.1, b_p - 0.1) average to b_p before pairing: A - B = -0.002 for every patient.
    # Paired per seed instead, the differences would be +-0.1 and never equivalent.
    assert ab.n == 8
    assert ab.median == pytest.approx(-0.002)
    assert (ab.low, ab.high) == pytest.approx((-0.002, -0.002))
    assert ab.verdict == "equivalent"
    ac = verdicts[("L2=5e-05", "L2=0.005")]
    # A - C = 0.05 + 0.001 p, p = 0..7: median 0.0535; all 8 positive: exact Wilcoxon p = 2 / 2^8.
    assert ac.median == pytest.approx(0.0535)
    assert ac.p == pytest.approx(2 / 256)
    assert ac.p_holm == pytest.approx(3 * 2 / 256)  # Holm: the two smallest of 3 p-values, both 2/256
    assert 0.05 <= ac.low < ac.high <= 0.057
    assert ac.verdict == "different"
    assert verdicts[("L2=0.0005", "L2=0.005")].verdict == "different"
    assert analysis.friedman is not None and analysis.friedman.n == 8
    # Per patient A (b_p) > B (b_p + 0.002)? No: B is best, then A, then C on every patient: ranks 2, 1, 3.
    assert analysis.friedman.mean_ranks == {"L2=0.0005": 1.0, "L2=5e-05": 2.0, "L2=0.005": 3.0}
    assert analysis.shares is not None
    assert math.isclose(sum(v for v in analysis.shares.shares.values() if v is not None), 1.0)


def test_undecided_when_the_interval_is_neither_inside_the_margin_nor_clear_of_zero():
    record = cv_record()
    record.trials = [t for t in record.trials if t.l2 != L2["C"]]
    for t in record.trials:  # B now differs from A by +-0.03 around 0 depending on the patient
        if t.l2 == L2["B"]:
            for row in t.test_metrics["field_metrics"]["patients"]:
                p = int(row["patient"][1:])
                row["class"]["myocardium"]["Dice"] = base(p) + (0.03 if p % 2 else -0.03)
    analysis = analyse_verdicts(record, resolve_metric("myocardium:Dice", CLASSES), delta=0.01)
    (only,) = analysis.verdicts
    assert only.verdict == "undecided" and only.low < 0 < only.high
    assert analysis.friedman is None  # two configurations: no Friedman


def test_the_summary_uses_the_three_words_and_report_json_carries_the_statistics():
    analysis = analyse_verdicts(cv_record(), resolve_metric("myocardium:Dice", CLASSES), delta=0.01)
    lines = summary_lines(analysis)
    text = " ".join(lines)
    assert "L2=5e-05 vs L2=0.0005: equivalent" in text
    assert "L2=5e-05 vs L2=0.005: different" in text
    assert "out of fold over 2 folds" in text and "seeds averaged within patient" in text
    assert any(line.startswith("Friedman's test over 8 patients") for line in lines)
    assert any(line.startswith("Variance shares of myocardium:Dice") for line in lines)
    data = verdicts_json(analysis)
    assert [v["verdict"] for v in data["verdicts"]] == ["equivalent", "different", "different"]
    assert data["friedman"]["mean_ranks"]["L2=0.005"] == 3.0
    assert set(data["variance_shares"]["shares"]) == {"configuration", "patient", "seed", "residual"}
    assert len(data["patients"]) == 48
    assert [row[-1] for row in verdict_rows(analysis)] == ["equivalent", "different", "different"]


@pytest.mark.parametrize("did_not_learn", [None, ""])  # learning unknown (no baseline) / every network learned
def test_networks_that_learned_or_are_unknown_get_the_verdict_words(did_not_learn):
    analysis = analyse_verdicts(cv_record(did_not_learn), resolve_metric("myocardium:Dice", CLASSES), delta=0.01)
    assert [v.verdict for v in analysis.verdicts] == ["equivalent", "different", "different"]
    assert all(v.ranked for v in analysis.verdicts) and analysis.not_ranked == []
    assert analysis.friedman is not None and analysis.friedman.mean_ranks["L2=0.005"] == 3.0


def test_a_pair_whose_networks_did_not_learn_gets_no_verdict_word_in_table_summary_json_and_page():
    """A's networks did not learn (0.31 vs baseline 0.3): A vs B, "equivalent" on the per-patient numbers, and
    A vs C, "different", read "not ranked"; their numbers stay; B vs C (both learned) keeps "different"."""
    record = cv_record(did_not_learn="A")
    analysis = analyse_verdicts(record, resolve_metric("myocardium:Dice", CLASSES), delta=0.01)
    assert analysis.not_ranked == ["L2=5e-05"]
    verdicts = {(v.a, v.b): v for v in analysis.verdicts}
    ab, ac = verdicts[("L2=5e-05", "L2=0.0005")], verdicts[("L2=5e-05", "L2=0.005")]
    bc = verdicts[("L2=0.0005", "L2=0.005")]
    assert (ab.verdict, ab.ranked) == (NOT_RANKED, False) and (ac.verdict, ac.ranked) == (NOT_RANKED, False)
    assert (bc.verdict, bc.ranked) == ("different", True)
    assert ab.median == pytest.approx(-0.002) and ac.p_holm == pytest.approx(3 * 2 / 256)  # numbers kept
    assert analysis.friedman is None  # two rankable L2 values: nothing for Friedman to rank
    assert [row[-1] for row in verdict_rows(analysis)] == [NOT_RANKED, NOT_RANKED, "different"]
    text = " ".join(summary_lines(analysis))
    assert "L2=5e-05 vs L2=0.0005: not ranked: a network did not learn (median difference -0.0020" in text
    assert "L2=5e-05 vs L2=0.005: not ranked: a network did not learn (median difference 0.0535" in text
    assert "L2=0.0005 vs L2=0.005: different" in text and "Friedman's test not run" in text
    data = verdicts_json(analysis)
    assert [(v["verdict"], v["ranked"]) for v in data["verdicts"]] == [
        (NOT_RANKED, False),
        (NOT_RANKED, False),
        ("different", True),
    ]
    assert data["not_ranked"] == ["L2=5e-05"] and data["friedman"] is None
    parts = report_parts(record)
    page = render_html(record, parts)
    summary = report_json(record, parts[0][3])
    for words in ("L2=5e-05 vs L2=0.0005: equivalent", "L2=5e-05 vs L2=0.005: different"):
        assert words not in page and words not in " ".join(summary["summary"])
    assert "L2=5e-05 vs L2=0.0005: not ranked: a network did not learn" in " ".join(summary["summary"])
    section = page[page.index("id='verdicts'") :]  # section 6, the verdict table (after the paired comparisons)
    assert section.count(f"<td>{NOT_RANKED}</td>") == 2 and section.count("<td>different</td>") == 1
    assert "<td>equivalent</td>" not in section
    assert [v["verdict"] for v in summary["verdicts"]["verdicts"]] == [NOT_RANKED, NOT_RANKED, "different"]


def test_a_patient_tested_by_two_folds_of_one_run_is_an_error():
    record = cv_record()
    record.trials[1].test_metrics["field_metrics"]["patients"].append(
        record.trials[0].test_metrics["field_metrics"]["patients"][0]
    )
    with pytest.raises(UserError, match="patient 'P0' is a test patient twice for L2=5e-05 seed 0"):
        patient_table(record, resolve_metric("myocardium:Dice", CLASSES))


def test_a_matlab_metric_is_averaged_over_each_patients_slices():
    images = [
        {"file": "a1.png", "MeanIoU": 0.5},
        {"file": "a2.png", "MeanIoU": 0.7},
        {"file": "b1.png", "MeanIoU": None},  # undefined slice: left out, the patient has no value
        {"file": "c1.png", "MeanIoU": 0.4},
    ]
    record = StudyRecord("m", "x", {}, None, None, {"a": 0, "b": 1}, False, [trial(0, "A", 0, 0, {"images": images})])
    rows = patient_table(record, resolve_metric("MeanIoU", ["a", "b"]), {"a1.png": "A", "a2.png": "A", "c1.png": "C"})
    assert {r["patient"]: r["value"] for r in rows} == pytest.approx({"A": 0.6, "C": 0.4})


@pytest.mark.parametrize("spec, words", [("myocardium:Dize", "unknown metric 'Dize'"), ("bogus", "unknown metric")])
def test_unknown_metrics_are_refused(spec, words):
    with pytest.raises(ConfigError, match=words):
        resolve_metric(spec, CLASSES)
    with pytest.raises(ConfigError, match="CLASS one of"):
        resolve_metric("heart:Dice", CLASSES)


@pytest.mark.parametrize("delta", [0, -0.01, float("nan"), float("inf")])
def test_a_margin_that_is_not_positive_is_refused(delta):
    with pytest.raises(UserError, match="--equivalence must be a number > 0"):
        check_delta(delta)


@pytest.mark.parametrize(
    "extra, words", [(["--metric", "MeanIoUU"], "'MeanIoUU'"), (["--equivalence", "0"], "--equivalence")]
)
def test_report_cli_errors_are_one_line_and_write_nothing(tmp_path, one_line_error, extra, words):
    fx = build_study(tmp_path)
    line = one_line_error(["report", "--storage", fx.storage, "--study-name", fx.name, "--no-dashboard", *extra])
    assert words in line
    assert not (fx.out_dir / "report.html").exists() and not (fx.out_dir / "report.json").exists()


def test_paper_points_far_from_any_configuration_are_the_curves_estimates():
    l2 = np.array([1e-6, 1e-5, 5.2e-4, 1e-2])  # 5e-4 sampled nearby (0.017 decades); 5e-3 and 5e-5 not
    y = np.array([0.70, 0.72, 0.80, 0.50])
    grid = np.linspace(-6, -2, 5)  # log10 L2 -6..-2
    curve = np.array([0.7, 0.72, 0.76, 0.8, 0.5])
    points = {p.l2: p for p in paper_points(l2, y, ["c000", "c001", "c002", "c003"], grid, curve)}
    assert set(points) == {5e-3, 5e-4, 5e-5}
    assert not points[5e-4].estimate and points[5e-4].nearest == "c002" and points[5e-4].nearest_value == 0.80
    assert abs(math.log10(5.2e-4 / 5e-4)) <= NEARBY_DECADES
    assert points[5e-3].estimate and points[5e-3].nearest == "c003" and points[5e-3].nearest_l2 == 1e-2
    # the curve at log10 5e-3 = -2.30: between grid -3 (0.8) and -2 (0.5), linear: 0.8 - 0.3 * 0.699 = 0.5903
    assert points[5e-3].curve == pytest.approx(0.8 - 0.3 * (math.log10(5e-3) + 3))
    assert "curve's estimate" in points[5e-3].label and "nearest sampled c003" in points[5e-3].label
    assert points[5e-5].estimate and points[5e-5].nearest == "c001"


def test_the_folds_of_a_study_count_as_one_split_and_another_split_stays_out():
    from dashboards.load import _join_folds, split_groups

    trials = [trial(i, "A", 0, fold, {"field_metrics": {}}) for i, fold in enumerate((0, 1))]
    trials.append(trial(2, "B", 0, 0, {"field_metrics": {}}))
    for t, split_hash in zip(trials, ("f0", "f1", "other")):
        t.split_hash = split_hash
    _join_folds(trials, {"hash": "all", "fold_splits": [{"hash": "f0"}, {"hash": "f1"}]})
    assert [t.split_hash for t in trials] == ["all", "all", "other"]
    assert list(split_groups(trials)) == ["all", "other"]  # the folds together are the compared split
