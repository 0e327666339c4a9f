"""dashboards.verdicts: equivalent / different / undecided on hand-computed cases, Friedman and Nemenyi on
Demsar's (2006) published example, and the mixed model's variance components on simulated data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dashboards.verdicts import (
    cd_cliques,
    cd_figure,
    classify,
    friedman,
    pairwise_verdicts,
    patient_frame,
    patient_rows,
    variance_shares,
)


def _table(values: dict[str, list[float]], seeds: int = 1, spread: float = 0.0) -> list[dict]:
    """Per-patient rows; with ``seeds`` > 1 the seeds are value -/+ spread, so their mean is the value."""
    rows = []
    for configuration, column in values.items():
        for i, value in enumerate(column):
            for s in range(seeds):
                offset = 0.0 if seeds == 1 else spread * (2 * s / (seeds - 1) - 1)
                rows.append(
                    {"patient": f"p{i:02d}", "configuration": configuration, "seed": s, "value": value + offset}
                )
    return rows


BASE = [0.70 + 0.013 * i for i in range(12)]


def test_equivalent():
    # Differences -0.003 .. 0.004: every bootstrap median lies between the smallest and the largest, so
    # the 95% interval is inside [-0.003, 0.004], inside [-0.01, 0.01]. Median of the ten: 0.001.
    diffs = [0.002, -0.001, 0.003, 0.000, -0.002, 0.001, 0.004, -0.003, 0.002, 0.001]
    (v,) = pairwise_verdicts(_table({"a": [b + d for b, d in zip(BASE, diffs)], "b": BASE[:10]}))
    assert v.verdict == "equivalent" and v.n == 10
    assert v.median == pytest.approx(0.001) and -0.003 <= v.low <= v.high <= 0.004


def test_different_with_seeds_averaged_within_patient():
    # 12 patients, all differences positive (0.030 .. 0.085, distinct): exact two-sided Wilcoxon p =
    # 2 / 2^12; one pair, so Holm leaves it; the interval lies in [0.030, 0.085] and excludes 0.
    # Each patient's seeds are value -/+ 0.2: only their mean enters (a per-seed comparison would not
    # give these numbers).
    diffs = [0.030 + 0.005 * i for i in range(12)]
    rows = _table({"a": [b + d for b, d in zip(BASE, diffs)], "b": BASE}, seeds=3, spread=0.2)
    (v,) = pairwise_verdicts(rows)
    assert v.p == pytest.approx(2 / 2**12) and v.p_holm == pytest.approx(2 / 2**12)
    assert v.median == pytest.approx((0.055 + 0.060) / 2) and 0.030 <= v.low <= v.high <= 0.085
    assert v.verdict == "different"


def test_undecided_when_the_interval_excludes_zero_but_holm_does_not_reject():
    # Two pairs, each 6 patients all one sign: raw exact p = 2 / 2^6 = 0.03125 each; Holm: 2 x 0.03125
    # = 0.0625 for both, not < 0.05. The intervals exclude 0 and exceed delta -> undecided.
    up = [0.02, 0.03, 0.04, 0.05, 0.06, 0.07]
    values = {"a": BASE[:6], "b": [x - d for x, d in zip(BASE, up)], "c": [x - 2 * d for x, d in zip(BASE, up)]}
    verdicts = pairwise_verdicts(_table(values), pairs=[("a", "b"), ("a", "c")])
    for v in verdicts:
        assert v.p == pytest.approx(2 / 2**6) and v.p_holm == pytest.approx(0.0625)
        assert v.low > 0.01 and v.verdict == "undecided"


def test_undecided_when_spread_on_both_sides():
    # |d| ranks 1, 2.5, 2.5, 4.5, 4.5, 6.5, 6.5, 8: W+ = 21.5 of 36, far from significance; the interval
    # holds 0 and reaches beyond delta.
    diffs = [-0.05, 0.04, -0.03, 0.06, -0.02, 0.05, -0.04, 0.03]
    (v,) = pairwise_verdicts(_table({"a": [b + d for b, d in zip(BASE, diffs)], "b": BASE[:8]}))
    assert v.p > 0.3 and v.low < 0 < v.high and v.verdict == "undecided"


@pytest.mark.parametrize(
    "low, high, p_holm, expected",
    [
        (-0.01, 0.01, 0.5, "equivalent"),  # the interval may touch the margin
        (0.002, 0.009, 0.001, "equivalent"),  # real but below the margin: equivalence first
        (0.002, 0.011, 0.001, "different"),
        (-0.03, -0.011, 0.049, "different"),
        (-0.03, -0.011, 0.05, "undecided"),
        (-0.001, 0.03, 0.001, "undecided"),  # significant p but the interval holds 0
        (math.nan, math.nan, math.nan, "undecided"),
    ],
)
def test_classify(low, high, p_holm, expected):
    assert classify(low, high, p_holm, delta=0.01) == expected


def test_patient_rows_join_the_folds_of_a_run():
    import numpy as np

    from lgeseg.errors import ConfigError
    from lgeseg.field_metrics import field_metrics

    square = np.zeros((1, 8, 8), np.uint8)
    square[0, 2:6, 2:6] = 1
    empty = np.zeros_like(square)

    def fold(patient, pred):
        return field_metrics(pred, square, ["bg", "myocardium"], [f"{patient}.png"], [patient])

    records = [("a", 0, fold("p1", square)), ("a", 0, fold("p2", empty)), ("b", 0, fold("p1", empty))]
    rows = patient_rows(records, "myocardium:Dice")
    assert rows == [
        {"patient": "p1", "configuration": "a", "seed": 0, "value": 1.0},
        {"patient": "p2", "configuration": "a", "seed": 0, "value": 0.0},
        {"patient": "p1", "configuration": "b", "seed": 0, "value": 0.0},
    ]
    with pytest.raises(ValueError, match="'p1' scored twice for configuration 'a'"):
        patient_rows(records + [("a", 0, fold("p1", square))])
    with pytest.raises(ConfigError, match="unknown metric 'Dise'"):
        patient_rows(records, "myocardium:Dise")


def test_bad_tables():
    with pytest.raises(ValueError, match="lacks column"):
        patient_frame([{"patient": "p", "configuration": "a", "value": 1.0}])
    with pytest.raises(ValueError, match="twice"):
        patient_frame(_table({"a": [1.0]}) * 2)
    with pytest.raises(ValueError, match="margin must be > 0"):
        pairwise_verdicts(_table({"a": [1.0, 2.0], "b": [1.0, 2.0]}), delta=0)


# Demsar (2006), J. Mach. Learn. Res. 7:1-30, Table 6: AUC of C4.5 with four settings on 14 data sets.
# The table prints 3 decimals; one pair of rounded values, 0.975 / 0.975 on the 13th data set, was not a
# tie in the paper's ranks, so it is written 0.97501 here (as in other reproductions of the example).
DEMSAR = np.array(
    [
        [0.763, 0.768, 0.771, 0.798],
        [0.599, 0.591, 0.590, 0.569],
        [0.954, 0.971, 0.968, 0.967],
        [0.628, 0.661, 0.654, 0.657],
        [0.882, 0.888, 0.886, 0.898],
        [0.936, 0.931, 0.916, 0.931],
        [0.661, 0.668, 0.609, 0.685],
        [0.583, 0.583, 0.563, 0.625],
        [0.775, 0.838, 0.866, 0.875],
        [1.000, 1.000, 1.000, 1.000],
        [0.940, 0.962, 0.965, 0.962],
        [0.619, 0.666, 0.614, 0.669],
        [0.972, 0.981, 0.97501, 0.975],
        [0.957, 0.978, 0.946, 0.970],
    ]
)
NAMES = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]


def _demsar_rows():
    return [
        {"patient": f"d{i:02d}", "configuration": name, "seed": 0, "value": DEMSAR[i, j]}
        for i in range(14)
        for j, name in enumerate(NAMES)
    ]


def test_friedman_reproduces_demsar_2006():
    result = friedman(_demsar_rows())
    # Published average ranks 3.143, 2.000, 2.893, 1.964.
    assert [round(result.mean_ranks[n], 3) for n in NAMES] == [3.143, 2.000, 2.893, 1.964]
    # Published chi2_F = 9.28 (the formula without tie correction); scipy divides by the tie correction
    # 1 - sum(t^3 - t) / (N k (k^2 - 1)); ties: one of 4 (data set 10) and three of 2 (6, 8, 11):
    # 60 + 3 * 6 = 78 over 14 * 4 * 15 = 840.
    correction = 1 - 78 / 840
    assert round(result.statistic * correction, 2) == 9.28
    chi2 = result.statistic * correction
    assert round(13 * chi2 / (14 * 3 - chi2), 2) == 3.69  # Iman-Davenport F_F, published 3.69
    assert result.p == pytest.approx(1 - __import__("scipy").stats.chi2.cdf(result.statistic, 3))
    # Nemenyi: CD = 2.569 * sqrt(4 * 5 / (6 * 14)) = 1.25 (published). C4.5 vs C4.5+m+cf differ by
    # 1.179 < 1.25, so no pair differs at 0.05; at 0.10 (CD 1.12) both C4.5+m and C4.5+m+cf beat C4.5.
    assert round(result.critical_difference, 2) == 1.25 and result.n == 14
    assert result.nemenyi.loc["C4.5", "C4.5+m+cf"] > 0.05 and result.nemenyi.loc["C4.5", "C4.5+m+cf"] < 0.10
    assert result.nemenyi.loc["C4.5", "C4.5+m"] < 0.10
    assert cd_cliques(result) == [["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]]
    at_10 = friedman(_demsar_rows(), alpha=0.10)
    assert round(at_10.critical_difference, 2) == 1.12
    assert cd_cliques(at_10) == [["C4.5+m+cf", "C4.5+m", "C4.5+cf"], ["C4.5+cf", "C4.5"]]
    figure = cd_figure(result)
    assert any("CD = 1.25" in (t.text or [""])[-1] for t in figure.data if t.text is not None)


def test_friedman_needs_three_configurations():
    with pytest.raises(ValueError, match="at least 3 configurations"):
        friedman(_table({"a": [1.0, 2.0], "b": [1.0, 2.0]}))


def _simulated(config_means, patients=30, seeds=8, sd_patient=0.05, sd_seed=0.02, sd_residual=0.01):
    rng = np.random.default_rng(0)
    patient_effect = rng.normal(0, sd_patient, patients)
    run_effect = rng.normal(0, sd_seed, (len(config_means), seeds))
    rows = [
        {
            "patient": f"p{p:02d}",
            "configuration": f"c{c}",
            "seed": s,
            "value": mean + patient_effect[p] + run_effect[c, s] + rng.normal(0, sd_residual),
        }
        for c, mean in enumerate(config_means)
        for s in range(seeds)
        for p in range(patients)
    ]
    return rows, patient_effect, run_effect


def test_mixed_model_recovers_simulated_variance_components():
    """Tolerances: given the drawn effects, REML's patient and seed variances differ from the drawn
    effects' sample variances (patients: ddof 1; runs: pooled within configuration, as the fixed effect
    absorbs each configuration's mean run effect) only through the residual noise averaged over 24 and 30
    values per effect, a few percent here: 5% allowed. The residual variance (0.01^2) is estimated from
    ~680 residual degrees of freedom: SE = sigma^2 sqrt(2 / 680) = 5.4%; 3 SE = 16% allowed."""
    rows, patient_effect, run_effect = _simulated([0.80, 0.801, 0.802])
    result = variance_shares(rows)
    assert result.converged
    assert result.variances["patient"] == pytest.approx(np.var(patient_effect, ddof=1), rel=0.05)
    within = run_effect - run_effect.mean(axis=1, keepdims=True)
    pooled = (within**2).sum() / (run_effect.size - run_effect.shape[0])
    assert result.variances["seed"] == pytest.approx(pooled, rel=0.05)
    assert result.variances["residual"] == pytest.approx(0.01**2, rel=0.16)
    assert sum(result.shares.values()) == pytest.approx(1.0)
    # Configuration means: the true ones plus the mean drawn run effect of each (8 runs), within 0.002.
    for c, mean in enumerate([0.80, 0.801, 0.802]):
        expected = mean + run_effect[c].mean() + patient_effect.mean()
        assert result.configuration_effects[f"c{c}"] == pytest.approx(expected, abs=0.002)
    # The sentence states the two numbers it compares: the seed SD and the spread of the fitted means.
    effects = result.configuration_effects.values()
    assert result.seed_sd == pytest.approx(math.sqrt(result.variances["seed"]))
    assert result.largest_difference == pytest.approx(max(effects) - min(effects))
    assert f"(SD {result.seed_sd:.4g} between training runs" in result.sentence


@pytest.mark.parametrize(
    "means, seeds, sd_seed, relation",
    [
        # Equal settings, seed SD 0.05: the fitted means differ only by mean run effects (SD 0.05 / sqrt(20)
        # each), far below 0.05.
        ([0.80, 0.80], 20, 0.05, "larger"),
        # Settings 0.1 apart, seed SD 0.005.
        ([0.80, 0.90], 3, 0.005, "smaller"),
    ],
)
def test_mixed_model_sentence(means, seeds, sd_seed, relation):
    rows, _, _ = _simulated(means, patients=10, seeds=seeds, sd_seed=sd_seed)
    result = variance_shares(rows)
    assert f"is {relation} than the largest difference between configurations" in result.sentence


def test_mixed_model_with_one_seed_says_so():
    rows, _, _ = _simulated([0.80, 0.85], seeds=1, patients=12)
    result = variance_shares(rows)
    assert result.variances["seed"] is None and result.shares["seed"] is None
    assert "cannot be separated" in result.sentence
    # Balanced design: the fixed effects are the configuration means.
    frame = patient_frame(rows)
    means = frame.groupby("configuration")["value"].mean()
    assert result.largest_difference == pytest.approx(means["c1"] - means["c0"])
