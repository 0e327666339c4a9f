"""The report's verdicts on one chosen metric: per patient, out of fold, in three words.

The report's MATLAB tables (:mod:`dashboards.stats`) compare L2 values on MATLAB's per-image metrics; a
reader of today's literature asks for the myocardium's Dice and for "are these two settings practically the
same?". This module turns a study's finished trials into the per-patient table of :mod:`dashboards.verdicts`
and runs its statistics on it:

* **The metric** (:func:`resolve_metric`): ``CLASS:METRIC`` names a field metric of one class
  (:data:`lgeseg.field_metrics.PATIENT_METRICS`, read from each trial's ``field_metrics``; default
  ``myocardium:Dice``), a bare MATLAB per-image metric (``MeanIoU``, ... :data:`dashboards.stats.PAIRED_METRICS`)
  is averaged over each patient's test slices.
* **The unit** is the patient: each trial scores the patients of its test set; under cross-validation the
  folds of one configuration and seed together score every patient exactly once (a patient scored twice is
  an error, never averaged away). Replicates are averaged within patient *before* pairing: a patient's
  value for a configuration is the mean over its seeds (:func:`dashboards.verdicts.seed_means`).
* **Verdicts** (:func:`dashboards.verdicts.pairwise_verdicts`): every pair of L2 values (smaller first),
  median difference, 95% bootstrap CI, Wilcoxon p, Holm over the pairs, and "equivalent" / "different" /
  "undecided" at the margin ``delta``. Only measured per-patient values enter: never a curve's estimate.
  The learning gate of the paired comparisons (:func:`dashboards.stats.rankable`) holds here too: a pair
  with an L2 value whose networks did not learn reads "not ranked" (numbers kept, no verdict word).
* **Friedman** over patients with three or more rankable configurations, with Nemenyi's critical difference
  (:func:`dashboards.verdicts.friedman`, :func:`~dashboards.verdicts.cd_figure`), and the **variance shares**
  of the mixed model (:func:`dashboards.verdicts.variance_shares`) where each trained network (a seed, and
  under cross-validation a seed's fold network) is one training run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from lgeseg.errors import ConfigError, UserError

from .figures import fmt, fmt_p, l2_label
from .load import StudyRecord, TrialRecord
from .stats import NOT_RANKED, PAIRED_METRICS, rankable, trials_by_l2
from .verdicts import (
    DEFAULT_DELTA,
    DEFAULT_METRIC,
    FriedmanResult,
    VarianceShares,
    Verdict,
    friedman,
    pairwise_verdicts,
    patient_rows,
    variance_shares,
)

#: Columns of the verdict table (:func:`verdict_rows`).
VERDICT_COLUMNS: tuple[str, ...] = ("a", "b", "patients", "median a − b", "95% CI", "Wilcoxon p", "Holm p", "verdict")
#: Columns of the variance-shares table (:func:`variance_rows`).
VARIANCE_COLUMNS: tuple[str, ...] = ("component", "variance", "share")


@dataclass(frozen=True)
class Metric:
    """A metric the verdicts can use: ``spec`` as given, its ``cls`` (None for a MATLAB data-set metric) and
    ``name``; ``higher_is_better`` orders Friedman's ranks (None: no direction, e.g. a volume error)."""

    spec: str
    cls: str | None
    name: str
    higher_is_better: bool | None


def resolve_metric(spec: str, classes: list[str]) -> Metric:
    """``CLASS:METRIC`` (a field metric) or a MATLAB per-image metric name, checked against ``classes``.

    Raises:
        ConfigError: one line naming the value and what is known.
    """
    from lgeseg.field_metrics import PATIENT_METRICS, higher_is_better, parse_metric

    if ":" not in spec:
        if spec in PAIRED_METRICS:
            return Metric(spec, None, spec, True)
        raise ConfigError(
            f"--metric {spec!r}: unknown metric; give CLASS:METRIC (CLASS one of {', '.join(classes)}; METRIC one "
            f"of {', '.join(PATIENT_METRICS)}) or one of MATLAB's per-image metrics {', '.join(PAIRED_METRICS)}"
        )
    try:
        cls, name = parse_metric(spec, classes)
    except ConfigError as exc:
        raise ConfigError(f"--{exc}") from None
    return Metric(spec, cls, name, higher_is_better(name))


def check_delta(delta: float) -> float:
    """The equivalence margin, which must be a finite number > 0.

    Raises:
        UserError: one line naming the value.
    """
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
        raise UserError(
            f"--equivalence must be a number > 0 (the equivalence margin in the metric's unit), got {delta!r}"
        )
    return float(delta)


def _matlab_patients(trial: TrialRecord, metric: str, patient_of: dict[str, str] | None) -> dict[str, float]:
    """A trial's per-patient mean of a per-image MATLAB metric over its test slices (NaN slices left out)."""
    values: dict[str, list[float]] = {}
    for row in (trial.test_metrics or {}).get("images") or []:
        value = row.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        file = str(row["file"])
        values.setdefault(file if patient_of is None else patient_of.get(file, file), []).append(float(value))
    return {unit: sum(v) / len(v) for unit, v in values.items()}


def run_label(trial: TrialRecord) -> str:
    """The training run a per-patient value comes from: ``seed S`` or, under cross-validation, ``seed S fold F``."""
    return f"seed {trial.seed}" + ("" if trial.fold is None else f" fold {trial.fold}")


def patient_table(record: StudyRecord, metric: Metric, patient_of: dict[str, str] | None = None) -> list[dict]:
    """One row per patient, configuration (``L2 <v>``) and run of the record's finished trials.

    Rows: ``patient``, ``configuration``, ``seed`` (the run seed), ``run`` (:func:`run_label`), ``fold`` and
    ``value``. Trials without ``field_metrics`` (recorded before them) give no rows for a field metric.

    Raises:
        UserError: a patient scored twice for one configuration and seed (overlapping test sets).
    """
    rows: list[dict] = []
    seen: set[tuple[str, str, Any]] = set()
    for l2, trials in trials_by_l2(record).items():
        label = l2_label(l2)
        for trial in trials:
            if metric.cls is not None:
                field = (trial.test_metrics or {}).get("field_metrics")
                if not field:
                    continue
                values = {r["patient"]: r["value"] for r in patient_rows([(label, trial.seed, field)], metric.spec)}
            else:
                values = _matlab_patients(trial, metric.name, patient_of)
            for patient, value in sorted(values.items()):
                key = (patient, label, trial.seed)
                if key in seen:
                    raise UserError(
                        f"study {record.name}: patient {patient!r} is a test patient twice for {label} seed "
                        f"{trial.seed} (trial {trial.number}): the folds' test sets overlap"
                    )
                seen.add(key)
                rows.append(
                    {
                        "patient": patient,
                        "configuration": label,
                        "seed": trial.seed,
                        "run": run_label(trial),
                        "fold": trial.fold,
                        "value": value,
                    }
                )
    return rows


@dataclass(frozen=True)
class VerdictAnalysis:
    """The verdict statistics of one report part on one metric.

    Attributes:
        metric: the metric's spec (``myocardium:Dice``).
        delta: the equivalence margin.
        configurations: the configurations compared (``L2 <v>``, ascending L2).
        not_ranked: those of them whose networks did not learn (:func:`dashboards.stats.rankable`).
        n_patients: patients with a value for at least one configuration.
        folds: cross-validation folds joined (empty without folds).
        seeds: run seeds averaged within patient.
        rows: the per-patient table (:func:`patient_table`).
        verdicts: one per pair of configurations.
        friedman: Friedman + Nemenyi (None with fewer than 3 configurations, or why not in ``notes``).
        shares: the mixed model's variance shares (None when it cannot be fitted; why in ``notes``).
        notes: why a statistic is missing.
    """

    metric: str
    delta: float
    configurations: list[str]
    not_ranked: list[str]
    n_patients: int
    folds: list[int]
    seeds: list[int]
    rows: list[dict]
    verdicts: list[Verdict]
    friedman: FriedmanResult | None
    shares: VarianceShares | None
    notes: list[str]


def analyse_verdicts(
    record: StudyRecord, metric: Metric, delta: float = DEFAULT_DELTA, patient_of: dict[str, str] | None = None
) -> VerdictAnalysis:
    """Verdicts, Friedman and variance shares of ``record``'s finished trials on ``metric``."""
    rows = patient_table(record, metric, patient_of)
    groups = trials_by_l2(record)
    order = [l2_label(l2) for l2 in groups]
    present = [c for c in order if any(r["configuration"] == c for r in rows)]
    not_ranked = [l2_label(l2) for l2, group in groups.items() if l2_label(l2) in present and not rankable(group)]
    ranked = [c for c in present if c not in not_ranked]
    notes: list[str] = []
    if not rows:
        notes.append(f"no trial recorded per-patient {metric.spec} (field metrics are recorded since issue 20)")
    pairs = [(a, b) for i, a in enumerate(present) for b in present[i + 1 :]]
    verdicts = pairwise_verdicts(rows, delta, pairs, not_ranked) if pairs else []
    result = None
    if len(present) >= 3:
        if metric.higher_is_better is None:
            notes.append(f"Friedman's test needs a direction of better, which {metric.name} has not")
        elif len(ranked) < 3:
            notes.append(
                f"Friedman's test not run: fewer than three L2 values whose networks all learned (not ranked, "
                f"networks did not learn: {', '.join(not_ranked)})"
            )
        else:
            if not_ranked:
                notes.append(
                    f"Friedman's test ranks only the L2 values whose networks all learned (not ranked, networks "
                    f"did not learn: {', '.join(not_ranked)})"
                )
            try:
                result = friedman([r for r in rows if r["configuration"] in ranked], metric.higher_is_better)
            except ValueError as exc:
                notes.append(f"Friedman's test not run: {exc}")
    shares = None
    if len(present) >= 2:
        try:  # each trained network is one training run: a seed, and under cross-validation its fold's network
            shares = variance_shares([{**r, "seed": r["run"]} for r in rows])
        except (ValueError, ArithmeticError) as exc:
            notes.append(f"mixed model not fitted: {exc}")
        except Exception as exc:  # noqa: BLE001 - statsmodels' linear-algebra failures are not one class
            notes.append(f"mixed model not fitted: {type(exc).__name__}: {exc}")
    return VerdictAnalysis(
        metric=metric.spec,
        delta=delta,
        configurations=present,
        not_ranked=not_ranked,
        n_patients=len({r["patient"] for r in rows}),
        folds=sorted({r["fold"] for r in rows if r["fold"] is not None}),
        seeds=sorted({r["seed"] for r in rows if r["seed"] is not None}),
        rows=rows,
        verdicts=verdicts,
        friedman=result,
        shares=shares,
        notes=notes,
    )


def _ci(low: float, high: float) -> str:
    return f"[{fmt(low, 4)}, {fmt(high, 4)}]"


def verdict_rows(analysis: VerdictAnalysis) -> list[list[str]]:
    """One row of :data:`VERDICT_COLUMNS` per pair."""
    return [
        [v.a, v.b, str(v.n), fmt(v.median, 4), _ci(v.low, v.high), fmt_p(v.p), fmt_p(v.p_holm), v.verdict]
        for v in analysis.verdicts
    ]


def variance_rows(analysis: VerdictAnalysis) -> list[list[str]]:
    """One row of :data:`VARIANCE_COLUMNS` per component (``training run`` is the model's seed effect)."""
    if analysis.shares is None:
        return []
    names = {"seed": "training run (seed" + (", fold" if analysis.folds else "") + ")"}
    return [
        [names.get(k, k), fmt(v, 5), "n/a" if analysis.shares.shares[k] is None else f"{analysis.shares.shares[k]:.1%}"]
        for k, v in analysis.shares.variances.items()
    ]


def title(analysis: VerdictAnalysis) -> str:
    """The heading of the verdict table: metric, unit, how replicates were joined, margin and methods."""
    joined = (
        f"out of fold over {len(analysis.folds)} folds, " if analysis.folds else ""
    ) + f"averaged over {len(analysis.seeds)} seed(s) within patient before pairing"
    return (
        f"Verdicts on {analysis.metric}, one value per patient ({analysis.n_patients} patients; {joined}); a − b; "
        f"median with percentile bootstrap 95% CI; Wilcoxon p; Holm over the {len(analysis.verdicts)} pairs; "
        f"equivalent = CI inside ±{analysis.delta:g}, different = Holm p < 0.05 and CI excludes 0, else undecided"
        + (f"; {NOT_RANKED} ({', '.join(analysis.not_ranked)}): no verdict" if analysis.not_ranked else "")
    )


def summary_lines(analysis: VerdictAnalysis) -> list[str]:
    """Sentences for the written summary, using the three verdict words."""
    lines = [f"Verdicts on {analysis.metric}: {note}." for note in analysis.notes if "mixed" not in note]
    if analysis.verdicts:
        joined = f", out of fold over {len(analysis.folds)} folds" if analysis.folds else ""
        pairs = "; ".join(
            f"{v.a} vs {v.b}: {v.verdict} (median difference {fmt(v.median, 4)}, 95% CI {_ci(v.low, v.high)}, "
            f"Holm p {fmt_p(v.p_holm)})"
            for v in analysis.verdicts
        )
        lines.append(
            f"Verdicts on {analysis.metric} per patient ({analysis.n_patients} patients{joined}; seeds averaged "
            f"within patient; equivalence margin ±{analysis.delta:g}): {pairs}."
        )
    f = analysis.friedman
    if f is not None:
        ranks = ", ".join(f"{c} {r:.2f}" for c, r in sorted(f.mean_ranks.items(), key=lambda kv: kv[1]))
        lines.append(
            f"Friedman's test over {f.n} patients: chi-square {f.statistic:.3g}, p {fmt_p(f.p)}; mean ranks "
            f"(1 = best) {ranks}; Nemenyi's critical difference {f.critical_difference:.2f}."
        )
    s = analysis.shares
    if s is not None:
        shares = ", ".join(
            f"{'training run' if k == 'seed' else k} {'n/a' if v is None else f'{v:.1%}'}" for k, v in s.shares.items()
        )
        lines.append(f"Variance shares of {analysis.metric} (mixed model): {shares}. {s.sentence}")
    lines += [f"Variance shares of {analysis.metric}: {note}." for note in analysis.notes if "mixed" in note]
    return lines


def verdicts_json(analysis: VerdictAnalysis) -> dict[str, Any]:
    """The verdict statistics for ``report.json`` (the per-patient table included)."""
    f, s = analysis.friedman, analysis.shares
    return {
        "metric": analysis.metric,
        "delta": analysis.delta,
        "configurations": analysis.configurations,
        "not_ranked": analysis.not_ranked,
        "n_patients": analysis.n_patients,
        "folds": analysis.folds,
        "seeds": analysis.seeds,
        "verdicts": [asdict(v) for v in analysis.verdicts],
        "friedman": None
        if f is None
        else {
            "statistic": f.statistic,
            "p": f.p,
            "n": f.n,
            "mean_ranks": f.mean_ranks,
            "critical_difference": f.critical_difference,
            "alpha": f.alpha,
            "nemenyi": {a: {b: float(f.nemenyi.loc[a, b]) for b in f.nemenyi.columns} for a in f.nemenyi.index},
        },
        "variance_shares": None if s is None else {k: v for k, v in asdict(s).items()},
        "notes": analysis.notes,
        "patients": analysis.rows,
    }


def field_summary(record: StudyRecord) -> dict[str, Any]:
    """Per configuration and trial, the field metrics' summary (mean over the trial's test patients, per class)."""
    out: dict[str, Any] = {}
    for l2, trials in trials_by_l2(record).items():
        out[l2_label(l2)] = [
            {
                "trial": t.number,
                "seed": t.seed,
                "fold": t.fold,
                "summary": ((t.test_metrics or {}).get("field_metrics") or {}).get("summary"),
            }
            for t in trials
        ]
    return out


__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_METRIC",
    "VARIANCE_COLUMNS",
    "VERDICT_COLUMNS",
    "Metric",
    "VerdictAnalysis",
    "analyse_verdicts",
    "check_delta",
    "field_summary",
    "patient_table",
    "resolve_metric",
    "summary_lines",
    "title",
    "variance_rows",
    "verdict_rows",
    "verdicts_json",
]
