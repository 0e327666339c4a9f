"""The report's statistics on a tiny study with hand-computed numbers, plus "did not learn" on real 1-epoch nets.

The fixture (an Optuna study written with ``create_trial``, no training): 3 patients x 2 slices, two L2
values (a = 5e-05, b = 0.005), two seeds each. Per-slice metric values are dyadic fractions, so every
mean below is exact in binary and the expected numbers are written as the fractions they are.

Per-image MeanIoU (b = 0.5 on every slice and seed; a = a_bar + 0.03125 for seed 0, - 0.03125 for seed 1):

    slice       P1_s0   P1_s1   P2_s0    P2_s1  P3_s0     P3_s1
    a_bar       0.625   0.5625  0.53125  0.25   0.515625  0.3125
    a_bar - b   0.125   0.0625  0.03125 -0.25   0.015625 -0.1875

Per slice (6 units) the median difference is (0.015625 + 0.03125) / 2 = +0.0234375: a looks better.
Per patient (seed-symmetric offsets cancel in the mean over seeds) the differences are
P1 (0.125 + 0.0625) / 2 = 0.09375, P2 (0.03125 - 0.25) / 2 = -0.109375, P3 (0.015625 - 0.1875) / 2 =
-0.0859375, median -0.0859375: a looks worse. The two analyses disagree in sign.

Per-image MeanBFScore (b = 0.5 everywhere; a below; seed 1 has NaN on P3_s1):

    seed 0: P1 0.75, 0.625 | P2 0.625, 0.5625 | P3 0.5625, 0.75
    seed 1: P1 0.75, 0.625 | P2 0.625, 0.5625 | P3 0.5625, NaN
    patient means: seed 0: P1 0.6875, P2 0.59375, P3 0.65625; seed 1: P1 0.6875, P2 0.59375, P3 0.5625
    over seeds: P1 0.6875, P2 0.59375, P3 0.609375; minus b: 0.1875, 0.09375, 0.109375

Data-set metrics per trial (set directly, as a study records them):
MeanIoU a: 0.70 (seed 0), 0.66 (seed 1); b: 0.62, 0.64. MeanBFScore a: 0.66, 0.64; b: 0.50, 0.50.
The trivial baseline's test MeanIoU is 0.30 for every trial.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import optuna
import pytest
from conftest import trial_record
from optuna.distributions import FloatDistribution, IntDistribution

from dashboards.learning import baseline_from_confusion, baseline_of, learned
from dashboards.load import StudyRecord, load_study
from dashboards.report import analyse, build_report, report_json
from dashboards.stat_tables import learning_records, seed_records
from dashboards.stats import holm, paired_comparisons, seed_intervals, study_units
from dashboards.strata import strata
from dashboards.written_summary import findings, summary_lines
from hpo.storage import open_study
from lgeseg.metrics import LEARN_MARGIN, json_safe

optuna.logging.set_verbosity(optuna.logging.WARNING)

A, B = 5e-05, 5e-03
PATIENTS = {"P1": "normal", "P2": "infarct", "P3": "infarct"}
FILES = [f"{p}_s{s}.png" for p in PATIENTS for s in (0, 1)]
OFFSET = 0.03125
IOU_A_BAR = [0.625, 0.5625, 0.53125, 0.25, 0.515625, 0.3125]
BF_A = {0: [0.75, 0.625, 0.625, 0.5625, 0.5625, 0.75], 1: [0.75, 0.625, 0.625, 0.5625, 0.5625, None]}
DATASET = {(A, 0): (0.70, 0.66), (A, 1): (0.66, 0.64), (B, 0): (0.62, 0.50), (B, 1): (0.64, 0.50)}
T_975_1 = 12.706204736174707  # Student t quantile 0.975, 1 degree of freedom (tables: 12.706)
PAIR = ("MeanIoU", "MeanBFScore")
DISTRIBUTIONS = {
    "l2": FloatDistribution(1e-6, 1e-1, log=True),
    "seed": IntDistribution(0, 1000),
    "rerun": IntDistribution(0, 10),
    "epochs": IntDistribution(1, 1000),
}


def _images(l2: float, seed: int) -> list[dict]:
    rows = []
    for i, file in enumerate(FILES):
        iou = IOU_A_BAR[i] + (OFFSET if seed == 0 else -OFFSET) if l2 == A else 0.5  # any other L2 as b
        bf = BF_A[seed][i] if l2 == A else 0.5
        rows.append({"file": file, "MeanIoU": iou, "MeanBFScore": bf})
    return rows


def build(
    tmp_path: Path,
    name: str = "hand",
    manifest: bool = True,
    dataset: dict[tuple[float, int], tuple[float, float]] = DATASET,
) -> str:
    """Write the data folder (manifest only: the statistics never read images) and the Optuna study."""
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    if manifest:
        with (data / "manifest.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "patient", "pathology"])
            writer.writerows([f, f[:2], PATIENTS[f[:2]]] for f in FILES)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    for key, value in {
        "out_dir": str(tmp_path / "out"),
        "data_dir": str(data),
        "synthetic": False,
        "labels": {"region1": 255, "region2": 128, "region3": 0},
        "config": {},
    }.items():
        study.set_user_attr(key, value)
    for (l2, seed), (iou, bf) in dataset.items():
        metrics = {"dataset": {"MeanIoU": iou, "MeanBFScore": bf}, "images": _images(l2, seed)}
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE,
                value=iou,
                distributions=DISTRIBUTIONS,
                params={"l2": l2, "seed": seed, "rerun": 0, "epochs": 1},
                user_attrs={
                    "test_metrics": metrics,
                    "trial_name": f"l2={l2:g}_seed={seed}_rerun=0",
                    "baseline": {"val": {"MeanIoU": 0.3}, "test": {"MeanIoU": 0.3}},
                },
            )
        )
    return storage


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, StudyRecord]:
    storage = build(tmp_path_factory.mktemp("hand"))
    return storage, load_study(open_study(storage, "hand"), storage)


def by_metric(comparisons: list) -> dict:
    return {c.metric: c for c in comparisons}


def test_patient_level_comparison_by_hand(hand: tuple[str, StudyRecord]) -> None:
    record = hand[1]
    units = study_units(record)
    assert units.unit == "patient" and "3 test patients (6 slices)" in units.note
    c = by_metric(paired_comparisons(record, units.patient_of, PAIR))
    iou = c["MeanIoU"]
    assert (iou.l2_a, iou.l2_b, iou.unit, iou.n, iou.n_slices, iou.n_nan) == (A, B, "patient", 3, 6, 0)
    assert iou.median_diff == -0.0859375
    assert iou.mean_diff == pytest.approx((0.09375 - 0.109375 - 0.0859375) / 3)
    # Percentile bootstrap of the median of 3 values: a resample's median is the smallest value when at
    # least 2 of its 3 draws are, probability 3 * (1/3)^2 * (2/3) + (1/3)^3 = 7/27 ~ 0.26 > 0.025; the
    # largest likewise; so the 2.5% and 97.5% quantiles are the smallest and largest difference.
    assert (iou.ci_low, iou.ci_high) == (-0.109375, 0.09375)
    # Wilcoxon, exact: |d| ranks P3 1, P1 2, P2 3; W+ = 2. Of the 8 equally likely sign patterns, W+ <= 2
    # for {}, {1}, {2}: P = 3/8; two-sided p = 2 * 3/8 = 0.75.
    assert iou.p_value == pytest.approx(0.75)
    bf = c["MeanBFScore"]
    assert (bf.n, bf.n_slices, bf.n_nan) == (3, 6, 1)  # P3_s1 of seed 1 left out and counted
    assert bf.median_diff == 0.109375
    assert bf.mean_diff == pytest.approx((0.1875 + 0.09375 + 0.109375) / 3)
    assert (bf.ci_low, bf.ci_high) == (0.09375, 0.1875)
    assert bf.p_value == pytest.approx(0.25)  # all 3 positive: W- = 0, P = 1/8, two-sided 2/8
    # Holm over the family {0.75, 0.25}: 0.25 -> 2 x 0.25 = 0.5; 0.75 -> max(0.5, 1 x 0.75) = 0.75.
    assert bf.p_holm == pytest.approx(0.5) and iou.p_holm == pytest.approx(0.75)
    assert not iou.significant and not bf.significant


def test_per_slice_analysis_disagrees_with_per_patient(hand: tuple[str, StudyRecord]) -> None:
    iou = by_metric(paired_comparisons(hand[1], None, PAIR))["MeanIoU"]
    assert (iou.unit, iou.n, iou.n_slices) == ("slice", 6, 6)
    assert iou.median_diff == (0.015625 + 0.03125) / 2 > 0  # per patient it is -0.0859375
    # |d| ranks: 0.015625 1, 0.03125 2, 0.0625 3, 0.125 4 (positive), 0.1875 5, 0.25 6 (negative): W+ = 10.
    # Subsets of {1..6} with sum <= 10: 1+1+1+2+2+3+4+4+4+5+5 = 32 of 64, so p = min(1, 2 * 32/64) = 1.
    assert iou.p_value == pytest.approx(1.0)
    assert -0.25 <= iou.ci_low <= iou.median_diff <= iou.ci_high <= 0.125


def test_seed_spread_by_hand(hand: tuple[str, StudyRecord]) -> None:
    record = hand[1]
    iou = seed_intervals(record, "MeanIoU")
    # a: 0.70, 0.66 -> mean 0.68, SD |0.70 - 0.66| / sqrt(2) = 0.02 sqrt(2); half-width t * SD / sqrt(2) = t * 0.02
    assert iou[A].mean == pytest.approx(0.68) and iou[A].sd == pytest.approx(0.02 * math.sqrt(2))
    assert (iou[A].low, iou[A].high) == pytest.approx((0.68 - T_975_1 * 0.02, 0.68 + T_975_1 * 0.02))
    assert iou[B].sd == pytest.approx(0.01 * math.sqrt(2))
    c = by_metric(paired_comparisons(record, None, PAIR))
    # per seed a - b: 0.08, 0.02 -> mean 0.05, SD 0.03 sqrt(2), half-width t * 0.03
    s = c["MeanIoU"].seed_diff
    assert (s.n, s.mean, s.sd) == (2, pytest.approx(0.05), pytest.approx(0.03 * math.sqrt(2)))
    assert (s.low, s.high) == pytest.approx((0.05 - T_975_1 * 0.03, 0.05 + T_975_1 * 0.03))
    assert (c["MeanIoU"].seed_sd_a, c["MeanIoU"].seed_sd_b) == pytest.approx((0.02 * math.sqrt(2), 0.01 * math.sqrt(2)))
    # MeanBFScore per seed: 0.16, 0.14 -> mean 0.15, half-width t * 0.01 = 0.127: interval above 0
    s = c["MeanBFScore"].seed_diff
    assert (s.low, s.high) == pytest.approx((0.15 - T_975_1 * 0.01, 0.15 + T_975_1 * 0.01))


def test_holm_by_hand() -> None:
    # m = 4 finite: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> kept at 0.06 (monotone)
    got = holm([0.01, 0.04, 0.03, 0.005, math.nan])
    assert got[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(got[4])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # 2 x 0.5 capped at 1; 0.6 raised to 1 by monotonicity
    assert holm([]) == []


def test_findings_and_plain_words(hand: tuple[str, StudyRecord]) -> None:
    record = hand[1]
    units = study_units(record)
    comparisons = paired_comparisons(record, units.patient_of, PAIR)
    f = {x.metric: x for x in findings(record, comparisons, units)}
    iou = f["MeanIoU"]
    assert (iou.best, iou.runner_up) == (A, B)
    assert (iou.best_mean, iou.runner_up_mean) == (pytest.approx(0.68), pytest.approx(0.63))
    assert (iou.survives_patients, iou.survives_seeds, iou.survives_holm) == (False, False, False)
    assert iou.conclusion.startswith("A reader may not conclude that L2=5e-05 is better than L2=0.005 on MeanIoU")
    assert "does not survive patients as the unit, seed variation and the Holm correction, so" in iou.conclusion
    bf = f["MeanBFScore"]
    assert (bf.survives_patients, bf.survives_seeds, bf.survives_holm) == (False, True, False)
    assert "does not survive patients as the unit and the Holm correction, so" in bf.conclusion
    text = "\n".join(summary_lines(record, comparisons, units))
    assert (
        "MeanIoU: best L2=5e-05 with 0.680 vs 0.630 for the runner-up L2=0.005, a difference of 0.050 "
        "(95% t-interval over 2 seeds [-0.331, 0.431]). Per patient over 3 patients: median difference "
        "-0.0859 (bootstrap 95% CI [-0.1094, 0.0938]), Wilcoxon p = 0.7500, Holm-adjusted p = 0.7500."
    ) in text
    assert "Seeds: 2 per L2 value" in text and "Holm-adjusted over all 2 comparisons" in text
    assert "DID NOT LEARN" not in text
    # Under cross-validation the same replicates are fold networks: the interval says so, and a line says what
    # such an interval measures (the L2 values paired fold by fold), not training randomness.
    as_folds = dataclasses.replace(record, trials=[dataclasses.replace(t, fold=t.seed) for t in record.trials])
    cv_text = "\n".join(summary_lines(as_folds, comparisons, units))
    assert "(95% t-interval over 2 fold networks [-0.331, 0.431])" in cv_text and "over 2 seeds" not in cv_text
    assert "Cross-validation: 2 folds; the t-intervals below are over fold networks" in cv_text
    assert "Cross-validation" not in text
    # One seed, two folds: the fold-paired interval is shown, but seed variation stays unmeasured.
    one_seed = dataclasses.replace(record, trials=[dataclasses.replace(t, fold=t.seed, seed=0) for t in record.trials])
    bf = next(x for x in findings(one_seed, comparisons, units) if x.metric == "MeanBFScore")
    assert bf.seed_diff.n == 2 and bf.survives_seeds is None
    forced_one_seed = [dataclasses.replace(c, p_value=0.001, p_holm=0.002) for c in comparisons]
    bf = next(x for x in findings(one_seed, forced_one_seed, units) if x.metric == "MeanBFScore")
    assert bf.conclusion.startswith("A reader may conclude only that with a single training seed per L2 value")
    # the path where everything survives: p forced below 0.05, seeds already survive for MeanBFScore
    forced = [dataclasses.replace(c, p_value=0.001, p_holm=0.002) for c in comparisons]
    bf = next(x for x in findings(record, forced, units) if x.metric == "MeanBFScore")
    assert (bf.survives_patients, bf.survives_seeds, bf.survives_holm) == (True, True, True)
    assert bf.conclusion.startswith(
        "A reader may conclude that on these test patients L2=5e-05 gives a higher "
        "MeanBFScore than L2=0.005, beyond training-seed noise"
    )


def test_one_seed_says_seed_variation_unmeasured(tmp_path: Path) -> None:
    # Seed 0 only; BF differences 0.1875, 0.09375, 0.125 (P3 = 0.625 - 0.5): p = 0.25, not significant, but
    # a forced p below 0.05 must still carry the caveat: check the wording of both paths.
    storage = build(tmp_path, dataset={k: v for k, v in DATASET.items() if k[1] == 0})
    record = load_study(open_study(storage, "hand"), storage)
    units = study_units(record)
    comparisons = paired_comparisons(record, units.patient_of, PAIR)
    text = "\n".join(summary_lines(record, comparisons, units))
    assert "seed variation is unmeasured" in text and "seeds: unmeasured (one seed)" in text
    assert "significantly" not in text
    forced = [dataclasses.replace(c, p_value=0.001, p_holm=0.002) for c in comparisons]
    bf = next(x for x in findings(record, forced, units) if x.metric == "MeanBFScore")
    assert bf.survives_seeds is None and bf.survives_patients and bf.survives_holm
    assert "seed variation is unmeasured" in bf.conclusion and "another training seed could reverse it" in bf.conclusion


def test_did_not_learn_excludes_l2_from_ranking(tmp_path: Path) -> None:
    # b seed 1 has test MeanIoU 0.33: 0.03 above the 0.30 baseline, below the needed 0.1 * (1 - 0.30) = 0.07
    storage = build(tmp_path, dataset={**DATASET, (B, 1): (0.33, 0.50)})
    record = load_study(open_study(storage, "hand"), storage)
    assert [learned(t) for t in record.complete] == [True, True, True, False]
    assert LEARN_MARGIN == 0.1
    units = study_units(record)
    comparisons = paired_comparisons(record, units.patient_of, PAIR)
    assert not any(c.ranked for c in comparisons)
    text = "\n".join(summary_lines(record, comparisons, units))
    assert "DID NOT LEARN: 1 of 4" in text and "#3 L2=0.005 seed 1 (0.330 vs 0.300)" in text
    assert "No metric ranks the L2 values" in text and "best L2" not in text


def test_l2_that_did_not_learn_is_left_out_of_the_ranking_of_the_others(tmp_path: Path) -> None:
    # a third L2 (5e-04) with test MeanIoU 0.31 (0.01 above the baseline) in both seeds
    storage = build(tmp_path, dataset={**DATASET, (5e-04, 0): (0.31, 0.5), (5e-04, 1): (0.31, 0.5)})
    record = load_study(open_study(storage, "hand"), storage)
    units = study_units(record)
    comparisons = paired_comparisons(record, units.patient_of, PAIR)
    assert [(c.l2_a, c.l2_b, c.ranked) for c in comparisons[:3]] == [(A, 5e-04, False), (A, B, True), (5e-04, B, False)]
    text = "\n".join(summary_lines(record, comparisons, units))
    assert (
        "MeanIoU: best L2=5e-05 with 0.680 vs 0.630 for the runner-up L2=0.005 (not ranked, networks did not "
        "learn: L2=0.0005)"
    ) in text


def test_baseline_fallback_from_confusion_matrix() -> None:
    # rows (truth) sum to 6, 12, 2 of N = 20: class 1 everywhere -> GlobalAccuracy 12/20, IoU (0, 0.6, 0)
    got = baseline_from_confusion([[5, 1, 0], [2, 10, 0], [0, 0, 2]])
    assert got == {"majority_class_index": 1, "GlobalAccuracy": 0.6, "MeanIoU": pytest.approx(0.2)}
    # a class absent from the truth has IoU 0/0 = NaN, kept in the mean as evaluate() does
    assert math.isnan(baseline_from_confusion([[3, 1, 0], [0, 4, 0], [0, 0, 0]])["MeanIoU"])

    old = trial_record(
        0,
        name="old",
        l2=A,
        learning_rate=None,
        batch_size=None,
        value=None,
        curve={},
        best_val_accuracy=None,
        test_metrics={"dataset": {"MeanIoU": 0.22}, "confusion_matrix": [[5, 1, 0], [2, 10, 0], [0, 0, 2]]},
    )
    assert baseline_of(old)["MeanIoU"] == pytest.approx(0.2) and learned(old) is False  # 0.22 - 0.2 < 0.05


def test_strata_by_hand_and_unknown_column(hand: tuple[str, StudyRecord], one_line_error) -> None:
    storage, record = hand
    rows = {(r.group, r.l2): r for r in strata(record, "pathology", study_units(record))}
    normal, infarct = rows[("normal", A)], rows[("infarct", A)]
    assert (normal.n_patients, normal.n_slices, infarct.n_patients, infarct.n_slices) == (1, 2, 2, 4)
    # normal = P1: seed 0 (0.65625 + 0.59375)/2 = 0.625, seed 1 (0.59375 + 0.53125)/2 = 0.5625
    assert normal.metrics["MeanIoU"].mean == pytest.approx((0.625 + 0.5625) / 2)
    assert normal.metrics["MeanIoU"].sd == pytest.approx(0.0625 / math.sqrt(2))
    # infarct, seed 0: P2 (0.5625 + 0.28125)/2 = 0.421875, P3 (0.546875 + 0.34375)/2 = 0.4453125 -> 0.43359375;
    # seed 1: P2 0.359375, P3 0.3828125 -> 0.37109375
    assert infarct.metrics["MeanIoU"].mean == pytest.approx((0.43359375 + 0.37109375) / 2)
    assert rows[("infarct", B)].metrics["MeanIoU"].mean == 0.5
    out = Path(storage.removeprefix("sqlite:///")).parent / "no-report-here"
    line = one_line_error(["report", "--storage", storage, "--no-dashboard", "--by", "sex", "--out", str(out)])
    assert "no column 'sex'" in line and "columns: file, patient, pathology" in line
    assert not out.exists()  # refused before its output folder was made


def test_report_html_and_json(hand: tuple[str, StudyRecord], tmp_path: Path) -> None:
    storage = hand[0]
    path = build_report(storage, "hand", out_dir=tmp_path, save_to_dashboard=False, by=["pathology"])
    page = path.read_text()
    assert "one value per patient" in page and "Strata by pathology" in page and "Holm p" in page
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["unit"] == "patient"
    iou = next(c for c in data["comparisons"] if c["metric"] == "MeanIoU")
    assert (iou["n"], iou["median_diff"], iou["p_value"]) == (3, -0.0859375, pytest.approx(0.75))
    # five metrics, the three without per-image values have no p and stay out of the Holm family
    assert iou["p_holm"] == pytest.approx(0.75) and sum(c["p_value"] is None for c in data["comparisons"]) == 3
    assert any(s.startswith("MeanIoU: best L2=5e-05") for s in data["summary"])
    assert {r["group"] for r in data["strata"]["pathology"]} == {"normal", "infarct"}
    analysis = analyse(load_study(open_study(storage, "hand"), storage))
    assert analysis.strata == {}


def test_without_manifest_the_analysis_is_per_slice(tmp_path: Path) -> None:
    storage = build(tmp_path, manifest=False)
    record = load_study(open_study(storage, "hand"), storage)
    units = study_units(record)
    assert units.patient_of is None and units.note.startswith("per-slice analysis: no manifest")
    text = "\n".join(summary_lines(record, paired_comparisons(record, None, PAIR), units))
    assert "Per slice (patients unknown) over 6 slices" in text
    assert "patients as the unit (no patients known" in text


def test_one_epoch_networks_are_marked_did_not_learn(
    tiny_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real 1-epoch U-Nets through the grid's trainable and the Optuna recorder (no Ray cluster)."""
    from types import SimpleNamespace

    from conftest import drive_recorder, tune_trial_stub
    from conftest import grid_attempt as Attempt

    import hpo.trainable
    from hpo.recorder import OptunaRecorder
    from hpo.rule import RetuneRule
    from hpo.study import describe_data, trial_config
    from hpo.study_config import study_config

    config = study_config(
        {
            "name": "one-epoch",
            "data": str(tiny_data_dir),
            "seeds": [0],
            "model": {"width": 4, "depth": 2},
            "grid": {"l2": [5e-3, 5e-5]},
            "train": {
                "epochs": 1,
                "batch_size": 8,
                "learning_rate": 1e-4,
                "device": "cpu",
                "precision": "fp32",
                "channels_last": False,
            },
            "retune": {"check_fraction": 1.0, "target_accuracy": 0.0},
            "resources": {"gpu": 0, "cpu": 1},
        }
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="one-epoch", storage=storage, direction="maximize")
    for key, value in {"config": config, "out_dir": str(tmp_path), **describe_data(config)}.items():
        study.set_user_attr(key, value)
    recorder = OptunaRecorder(study, RetuneRule(1.0, 0.0), max_reruns=0)
    # no Ray: asking for the runtime context would start (and leave) a Ray instance in this process
    node = SimpleNamespace(get_node_id=lambda: "node")
    monkeypatch.setattr(hpo.trainable.ray, "get_runtime_context", lambda: node)
    for index, l2 in enumerate(config["grid"]["l2"]):
        reports: list[dict] = []
        monkeypatch.setattr(hpo.trainable.tune, "report", reports.append)
        trial = tune_trial_stub(str(index), trial_config(config, Attempt(l2, 0), tmp_path))
        hpo.trainable.train_trial(trial.config)
        drive_recorder(recorder, trial, reports)
    recorder.close()
    record = load_study(open_study(storage, "one-epoch"), storage)
    assert len(record.complete) == 2 and all(t.baseline and "test" in t.baseline for t in record.complete)
    assert [learned(t) for t in record.complete] == [False, False]
    path = build_report(storage, "one-epoch", save_to_dashboard=False)
    page = path.read_text()
    assert page.count("did not learn") >= 2 and "DID NOT LEARN: 2 of 2" in page
    assert "No metric ranks the L2 values" in page


def test_paper_seeds_yaml_is_the_paper_protocol_with_three_seeds() -> None:
    from hpo.study_config import load_study_config

    root = Path(__file__).resolve().parents[2] / "study_configs"
    paper, seeds = load_study_config(root / "paper.yaml"), load_study_config(root / "paper-seeds.yaml")
    assert seeds["seeds"] == [0, 1, 2]
    assert {k: v for k, v in seeds.items() if k not in ("name", "seeds")} == {
        k: v for k, v in paper.items() if k not in ("name", "seeds")
    }


def test_report_json_learning_and_seed_tables_are_numbers_at_full_precision(hand: tuple[str, StudyRecord]) -> None:
    record = hand[1]
    data = json.loads(json.dumps(report_json(record, analyse(record)), allow_nan=False))
    seeds = {(r["metric"], r["L2"]): r for r in data["seeds"]}
    iou = seeds[("MeanIoU", A)]
    # a: 0.70, 0.66 -> mean 0.68, SD 0.02 sqrt(2), interval 0.68 -+ t * 0.02 = [0.42587..., 0.93412...]
    # (rounded to 4 decimals the bounds would be 0.4259 and 0.9341, which approx's 1e-6 tells apart)
    assert type(iou["seeds"]) is int and iou["seeds"] == 2
    assert type(iou["mean"]) is float and iou["mean"] == pytest.approx(0.68)
    assert iou["SD over seeds"] == pytest.approx(0.02 * math.sqrt(2))
    low, high = iou["95% t-interval"]
    assert (low, high) == (pytest.approx(0.68 - T_975_1 * 0.02), pytest.approx(0.68 + T_975_1 * 0.02))
    learning = {(r["L2"], r["seed"]): r for r in data["learning"]}
    row = learning[(A, 0)]
    assert type(row["#"]) is int and type(row["seed"]) is int and row["trial"] == "l2=5e-05_seed=0_rerun=0"
    assert (row["test MeanIoU"], row["baseline MeanIoU"], row["baseline class"]) == (0.70, 0.3, None)
    assert row[f"margin (≥ {LEARN_MARGIN:g} × (1 − baseline) to count)"] == pytest.approx(0.4)
    assert row["learned?"] is True
    one = StudyRecord("one", "x", {}, None, None, {}, False, [trial_record(0, test_metrics={"dataset": {}})])
    (empty,) = [r for r in seed_records(one) if r["metric"] == "MeanIoU"]  # one trial, no MeanIoU recorded
    assert json.loads(json.dumps(json_safe(empty))) == {
        "metric": "MeanIoU",
        "L2": 1e-3,
        "seeds": 0,
        "mean": None,
        "SD over seeds": None,
        "95% t-interval": None,
    }
    (unknown,) = learning_records(one)
    assert json_safe(unknown)["learned?"] is None and json_safe(unknown)["test MeanIoU"] is None
