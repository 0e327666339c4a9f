"""Verdicts a reader can use: per-patient comparisons of configurations on any metric, in three words.

The report's paired statistics (:mod:`dashboards.stats`) say "no difference shown" at best; a reader
choosing a setting wants to know whether two settings are *practically the same*. This module works on a
per-patient table (one row per patient, configuration and seed, e.g. the out-of-fold myocardium Dice of a
cross-validated study, :func:`lgeseg.field_metrics.patient_table`) and gives:

* **Pairwise verdicts** (:func:`pairwise_verdicts`): seeds averaged within patient, then per pair of
  configurations the median per-patient difference ``a - b``, its 95% percentile-bootstrap interval, the
  two-sided Wilcoxon signed-rank p and the Holm adjustment over all pairs (the functions of
  :mod:`dashboards.stats`, unchanged). A pair is **equivalent** when the interval lies inside
  ``[-delta, delta]`` (a two one-sided interval check in the spirit of TOST, on the median; Lakens 2017), else
  **different** when Holm p < 0.05 and the interval excludes 0, else **undecided**. Equivalence is checked
  first: a difference that is real but smaller than ``delta`` is of no practical consequence. A pair with
  a configuration whose networks did not learn gets no verdict word but :data:`dashboards.stats.NOT_RANKED`
  (its numbers are kept): how two failures differ says nothing about the setting.
* **Friedman's test** over patients with three or more configurations (``scipy.stats.friedmanchisquare``,
  tie-corrected), the mean ranks (rank 1 = best), Nemenyi's all-pairs post-hoc p-values
  (``scikit_posthocs.posthoc_nemenyi_friedman``) and Nemenyi's critical difference
  ``q_alpha sqrt(k (k + 1) / (6 N))`` with ``q_alpha`` from ``scipy.stats.studentized_range`` (Demsar 2006,
  J. Mach. Learn. Res. 7:1-30, section 3.2.2); :func:`cd_figure` draws the critical-difference diagram
  in Plotly from those outputs (scikit-posthocs' own diagram is matplotlib).
* **Where the variation comes from** (:func:`variance_shares`): a linear mixed model (statsmodels
  ``MixedLM``, REML) of the per-patient value with the configuration as fixed effect and crossed random
  intercepts for the patient and for the training run (a seed of one configuration: seed 0 of two
  configurations are two different networks, so the seed effect is nested in the configuration). The
  configuration's share is the variance of the fitted fixed-effect predictions over the rows (Nakagawa &
  Schielzeth 2013's sigma^2_f); the shares of configuration, patient, seed and residual sum to 1.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import NOT_RANKED, bootstrap_median_ci, holm, paired_differences, wilcoxon_p

#: Level of the tests: "different" needs Holm p below it (written out: stats.ALPHA is 1 - 0.95 in floating
#: point, a hair above 0.05).
ALPHA = 0.05
#: Default practical-equivalence margin: 0.01 Dice.
DEFAULT_DELTA = 0.01
#: Default metric of the verdicts: the myocardium's Dice, the hardest structure (CLASS:METRIC).
DEFAULT_METRIC = "myocardium:Dice"
#: The three verdicts.
VERDICTS: tuple[str, ...] = ("equivalent", "different", "undecided")
#: Columns of a per-patient table.
COLUMNS: tuple[str, ...] = ("patient", "configuration", "seed", "value")


def patient_frame(rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """A per-patient table as a DataFrame with :data:`COLUMNS`; rows with a NaN / None value are dropped.

    Args:
        rows: dicts (or a DataFrame) with ``patient``, ``configuration``, ``seed`` and ``value``.

    Raises:
        ValueError: a column is missing, or a (patient, configuration, seed) appears twice.
    """
    frame = pd.DataFrame(rows)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"per-patient table lacks column(s) {', '.join(missing)}")
    frame = frame[list(COLUMNS)].copy()
    frame["configuration"] = frame["configuration"].astype(str)
    frame["patient"] = frame["patient"].astype(str)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame.dropna(subset=["value"])
    if frame.duplicated(["patient", "configuration", "seed"]).any():
        raise ValueError("per-patient table has a (patient, configuration, seed) twice")
    return frame.reset_index(drop=True)


def patient_rows(records: Iterable[tuple[str, object, Mapping]], metric: str = DEFAULT_METRIC) -> list[dict]:
    """The per-patient table of one metric from runs' ``field_metrics`` results.

    Under cross-validation a configuration and seed have one run per fold, each scoring its own test
    patients: together they give every patient's out-of-fold value once.

    Args:
        records: ``(configuration, seed, field_metrics)`` per run (the ``field_metrics`` of a
            ``metrics.json``, :func:`lgeseg.field_metrics.field_metrics`).
        metric: ``CLASS:METRIC`` (:func:`lgeseg.field_metrics.parse_metric`).

    Raises:
        ConfigError: unknown class or metric (one line).
        ValueError: a patient scored twice for one configuration and seed (overlapping test sets).
    """
    from lgeseg.field_metrics import parse_metric, patient_table

    rows: list[dict] = []
    seen: set[tuple[str, str, str]] = set()
    for configuration, seed, result in records:
        cls, name = parse_metric(metric, result["classes"])
        for patient, value in patient_table(dict(result), cls, name).items():
            key = (str(configuration), str(seed), patient)
            if key in seen:
                raise ValueError(f"patient {patient!r} scored twice for configuration {configuration!r}, seed {seed!r}")
            seen.add(key)
            rows.append({"patient": patient, "configuration": str(configuration), "seed": seed, "value": value})
    return rows


def seed_means(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``{configuration: {patient: mean over its seeds}}`` (the unit of the pairwise comparisons)."""
    means = frame.groupby(["configuration", "patient"], sort=True)["value"].mean()
    out: dict[str, dict[str, float]] = {}
    for (configuration, patient), value in means.items():
        out.setdefault(str(configuration), {})[str(patient)] = float(value)
    return out


def classify(low: float, high: float, p_holm: float, delta: float = DEFAULT_DELTA, alpha: float = ALPHA) -> str:
    """``"equivalent"`` if ``-delta <= low`` and ``high <= delta``; else ``"different"`` if ``p_holm <
    alpha`` and the interval excludes 0; else ``"undecided"`` (also for an undefined interval or p)."""
    if not (math.isnan(low) or math.isnan(high)) and -delta <= low and high <= delta:
        return "equivalent"
    if not math.isnan(p_holm) and p_holm < alpha and (low > 0 or high < 0):
        return "different"
    return "undecided"


@dataclass(frozen=True)
class Verdict:
    """One pair of configurations on one metric, over the patients both have.

    Attributes:
        a, b: the configurations; differences are ``a - b`` (in the metric's unit).
        n: patients compared.
        median: median per-patient difference.
        low, high: its 95% percentile-bootstrap interval.
        p, p_holm: Wilcoxon signed-rank p, Holm-adjusted over the table's pairs.
        delta: the equivalence margin.
        verdict: one of :data:`VERDICTS`, or :data:`~dashboards.stats.NOT_RANKED` when ``ranked`` is False.
        ranked: False when the networks of ``a`` or ``b`` did not learn (no verdict word is given).
    """

    a: str
    b: str
    n: int
    median: float
    low: float
    high: float
    p: float
    p_holm: float
    delta: float
    verdict: str
    ranked: bool = True


def pairwise_verdicts(
    rows: Iterable[Mapping] | pd.DataFrame,
    delta: float = DEFAULT_DELTA,
    pairs: list[tuple[str, str]] | None = None,
    not_ranked: Collection[str] = (),
) -> list[Verdict]:
    """Every pair of configurations (or ``pairs``), seeds averaged within patient, Holm over the pairs.

    Args:
        rows: a per-patient table (:func:`patient_frame`); one metric.
        delta: equivalence margin, > 0, in the metric's unit (0.01 = one Dice point).
        pairs: which (a, b) pairs; default all, in sorted configuration order.
        not_ranked: configurations whose networks did not learn (:func:`dashboards.stats.rankable`): a pair
            with one of them keeps its numbers (and its place in the Holm family) but its verdict is
            :data:`~dashboards.stats.NOT_RANKED`.

    Raises:
        ValueError: ``delta`` is not > 0, or a pair names an unknown configuration.
    """
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"the equivalence margin must be > 0, got {delta!r}")
    means = seed_means(patient_frame(rows))
    pairs = pairs if pairs is not None else list(itertools.combinations(sorted(means), 2))
    for a, b in pairs:
        for name in (a, b):
            if name not in means:
                raise ValueError(f"no configuration {name!r} in the table (known: {', '.join(sorted(means))})")
    rows_out = []
    for a, b in pairs:
        diffs = paired_differences(means[a], means[b])
        median = float(np.median(diffs)) if diffs.size else math.nan
        low, high = bootstrap_median_ci(diffs)
        rows_out.append((a, b, diffs.size, median, low, high, wilcoxon_p(diffs)))
    adjusted = holm([r[-1] for r in rows_out])
    out = []
    for (a, b, n, median, low, high, p), p_holm in zip(rows_out, adjusted):
        ranked = a not in not_ranked and b not in not_ranked
        word = classify(low, high, p_holm, delta) if ranked else NOT_RANKED
        out.append(Verdict(a, b, n, median, low, high, p, p_holm, delta, word, ranked))
    return out


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's test over patients and Nemenyi's post-hoc comparison of mean ranks.

    Attributes:
        statistic: Friedman's chi-square (scipy, corrected for ties).
        p: its p-value (chi-square with k - 1 degrees of freedom).
        n: patients (blocks) that have every configuration.
        mean_ranks: configuration -> mean rank over patients (1 = best).
        nemenyi: k x k DataFrame of Nemenyi p-values (scikit-posthocs).
        critical_difference: Nemenyi's CD at ``alpha`` (mean-rank units).
        alpha: the level of the CD.
    """

    statistic: float
    p: float
    n: int
    mean_ranks: dict[str, float]
    nemenyi: pd.DataFrame
    critical_difference: float
    alpha: float


def friedman(
    rows: Iterable[Mapping] | pd.DataFrame, higher_is_better: bool = True, alpha: float = ALPHA
) -> FriedmanResult:
    """Friedman's test over the patients that have every configuration (seeds averaged within patient).

    Args:
        rows: a per-patient table (:func:`patient_frame`).
        higher_is_better: True for Dice / NSD (rank 1 = highest), False for distances.
        alpha: level of the critical difference.

    Raises:
        ValueError: fewer than 3 configurations, or fewer than 2 patients with all of them.
    """
    import scikit_posthocs as sp

    means = seed_means(patient_frame(rows))
    configurations = sorted(means)
    if len(configurations) < 3:
        raise ValueError(f"Friedman's test needs at least 3 configurations, got {len(configurations)}")
    patients = sorted(set.intersection(*(set(means[c]) for c in configurations)))
    if len(patients) < 2:
        raise ValueError(f"Friedman's test needs at least 2 patients with every configuration, got {len(patients)}")
    table = np.array([[means[c][p] for c in configurations] for p in patients])
    result = sps.friedmanchisquare(*table.T)
    ranks = sps.rankdata(-table if higher_is_better else table, axis=1).mean(axis=0)
    nemenyi = sp.posthoc_nemenyi_friedman(table)
    nemenyi.index = nemenyi.columns = configurations
    k, n = len(configurations), len(patients)
    q = sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return FriedmanResult(
        statistic=float(result.statistic),
        p=float(result.pvalue),
        n=n,
        mean_ranks=dict(zip(configurations, (float(r) for r in ranks))),
        nemenyi=nemenyi,
        critical_difference=float(q * math.sqrt(k * (k + 1) / (6 * n))),
        alpha=alpha,
    )


def cd_cliques(result: FriedmanResult) -> list[list[str]]:
    """Groups of configurations, consecutive in mean rank, whose every pair Nemenyi does not separate
    (p >= alpha): the bars of a critical-difference diagram; maximal groups of 2 or more only."""
    order = sorted(result.mean_ranks, key=result.mean_ranks.get)
    cliques: list[list[str]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(
            result.nemenyi.loc[order[m], order[j + 1]] >= result.alpha for m in range(i, j + 1)
        ):
            j += 1
        group = order[i : j + 1]
        if len(group) > 1 and not any(set(group) <= set(c) for c in cliques):
            cliques.append(group)
    return cliques


def cd_figure(result: FriedmanResult, title: str = "Critical-difference diagram"):
    """A Plotly critical-difference diagram: mean ranks on an axis (1 = best, left), the CD as a bar,
    and a thick line under each :func:`cd_cliques` group (not separated by Nemenyi at ``alpha``)."""
    import plotly.graph_objects as go

    k = len(result.mean_ranks)
    fig = go.Figure()
    order = sorted(result.mean_ranks, key=result.mean_ranks.get)
    for i, name in enumerate(order):
        rank = result.mean_ranks[name]
        y = -0.6 - 0.4 * i
        fig.add_trace(
            go.Scatter(
                x=[rank, rank, 1 if rank <= (k + 1) / 2 else k],
                y=[0, y, y],
                mode="lines+text",
                line={"color": "black", "width": 1},
                text=["", "", f"{name} ({rank:.2f})"],
                textposition="middle right" if rank <= (k + 1) / 2 else "middle left",
                showlegend=False,
                hoverinfo="skip",
            )
        )
    for j, group in enumerate(cd_cliques(result)):
        ranks = [result.mean_ranks[g] for g in group]
        fig.add_trace(
            go.Scatter(
                x=[min(ranks) - 0.03, max(ranks) + 0.03],
                y=[-0.2 - 0.12 * j] * 2,
                mode="lines",
                line={"color": "black", "width": 5},
                showlegend=False,
                hoverinfo="skip",
            )
        )
    cd = result.critical_difference
    fig.add_trace(
        go.Scatter(
            x=[1, 1 + cd],
            y=[0.4, 0.4],
            mode="lines+text",
            text=["", f"CD = {cd:.2f}"],
            textposition="top center",
            line={"color": "black", "width": 2},
            showlegend=False,
        )
    )
    fig.update_layout(
        title=f"{title} (Friedman p = {result.p:.3g}, {result.n} patients; Nemenyi, alpha {result.alpha:g})",
        xaxis={"range": [0.5, k + 0.5], "side": "top", "title": "mean rank (1 = best)", "dtick": 1},
        yaxis={"visible": False},
        plot_bgcolor="white",
        height=200 + 40 * k,
    )
    return fig


@dataclass(frozen=True)
class VarianceShares:
    """Variance components of the per-patient metric and their shares (sum 1).

    Attributes:
        variances: component -> variance (``configuration``, ``patient``, ``seed``, ``residual``); the
            seed's is None with one seed per configuration (not estimable).
        shares: component -> share of the total.
        configuration_effects: configuration -> fitted mean (fixed effects).
        seed_sd: SD of the seed (training-run) effect, None when not estimable.
        largest_difference: largest difference between fitted configuration means.
        sentence: whether the training-run spread (seeds; under cross-validation a seed's fold networks, which
            also differ in their training patients) is larger than the difference between configurations.
        converged: whether the REML fit converged.
    """

    variances: dict[str, float | None]
    shares: dict[str, float | None]
    configuration_effects: dict[str, float]
    seed_sd: float | None
    largest_difference: float
    sentence: str
    converged: bool


def variance_shares(rows: Iterable[Mapping] | pd.DataFrame) -> VarianceShares:
    """Fit the mixed model of the module docstring to a per-patient table (seeds not averaged).

    Raises:
        ValueError: fewer than 2 configurations or 2 patients.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    frame = patient_frame(rows)
    if frame["configuration"].nunique() < 2 or frame["patient"].nunique() < 2:
        raise ValueError("the mixed model needs at least 2 configurations and 2 patients")
    frame["run"] = frame["configuration"] + "|" + frame["seed"].astype(str)
    with_seed = frame.groupby("configuration")["seed"].nunique().max() > 1
    components = {"patient": "0 + C(patient)", **({"run": "0 + C(run)"} if with_seed else {})}
    model = smf.mixedlm(
        "value ~ 0 + C(configuration)", frame, groups=np.ones(len(frame)), re_formula="0", vc_formula=components
    )
    with warnings.catch_warnings():  # a component at 0 is an answer here (no seed effect), not a failure
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = model.fit(reml=True)
    vcomp = dict(zip(model.exog_vc.names, (float(v) for v in fit.vcomp)))
    effects = {name.split("[", 1)[1].rstrip("]"): float(v) for name, v in fit.fe_params.items()}
    fixed = np.asarray(model.exog @ fit.fe_params.to_numpy())
    variances: dict[str, float | None] = {
        "configuration": float(np.var(fixed)),
        "patient": vcomp["patient"],
        "seed": vcomp.get("run") if with_seed else None,
        "residual": float(fit.scale),
    }
    total = sum(v for v in variances.values() if v is not None)
    shares = {k: (None if v is None else (v / total if total > 0 else math.nan)) for k, v in variances.items()}
    largest = max(effects.values()) - min(effects.values())
    if variances["seed"] is None:
        seed_sd = None
        sentence = "One training run per configuration: the training-run spread cannot be separated from the residual."
    else:
        seed_sd = math.sqrt(max(variances["seed"], 0.0))
        relation = "larger" if seed_sd > largest else "smaller"
        sentence = (
            f"The training-run spread (SD {seed_sd:.4g} between training runs: seeds, and under cross-validation "
            f"their fold networks) is {relation} than the largest difference between configurations ({largest:.4g})"
            + ("; training runs move the result more than the setting does." if relation == "larger" else ".")
        )
    return VarianceShares(variances, shares, effects, seed_sd, largest, sentence, bool(fit.converged))


__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_METRIC",
    "VERDICTS",
    "FriedmanResult",
    "VarianceShares",
    "Verdict",
    "cd_cliques",
    "cd_figure",
    "classify",
    "friedman",
    "pairwise_verdicts",
    "patient_frame",
    "patient_rows",
    "seed_means",
    "variance_shares",
]
