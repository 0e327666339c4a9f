"""Numbers behind the figures and the summary: seed means and intervals, paired comparisons between L2
values with patients as the unit, and the Holm adjustment over a table of comparisons.

Everything works on the finished (COMPLETE) trials of a :class:`~dashboards.load.StudyRecord`, so a
retuned attempt never counts twice: each grid point contributes the rerun that converged. The README's
"Statistics" section says what each number is and where the method comes from.

* **Unit of analysis.** Slices of one patient are strongly correlated, so when the data set's
  ``manifest.csv`` names patients a paired comparison uses one value per test patient: the mean of that
  patient's per-slice metric (NaN slices left out and counted), first per seed, then averaged over seeds.
  Without patients the unit is the slice (averaged over seeds), and the tables say so.
* **Paired comparison** of L2 ``a`` and ``b`` over the units both have: median of ``a - b``, a percentile
  bootstrap 95% interval of that median resampling units (``scipy.stats.bootstrap``; resampling patients
  with all their slices is the cluster bootstrap), two-sided Wilcoxon signed-rank p
  (``scipy.stats.wilcoxon``), and the Holm step-down adjustment over all comparisons of the table.
* **Seeds.** Data-set metrics get mean, SD and a 95% Student-t interval over seeds; a comparison also
  gives the between-L2 difference of the data-set metric per shared seed, its t-interval and the SD of
  each L2 over seeds (the between-seed spread).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

from lgeseg.metrics import DATASET_METRICS
from lgeseg.tables import as_nan

from .learning import learned
from .load import StudyRecord, TrialRecord
from .manifest import read_manifest

#: Per-image metrics compared between L2 values (every test image's row carries all five).
PAIRED_METRICS: tuple[str, ...] = DATASET_METRICS
#: Level of every interval and (as 1 - level) of every test.
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
#: Resamples and seed of the bootstrap interval of the median paired difference (fixed: reports reproduce).
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0


def metric_value(trial: TrialRecord, metric: str, cls: str | None = None) -> float:
    """A test metric of ``trial``: a data-set metric, or the class metric of region ``cls``."""
    metrics = trial.test_metrics or {}
    if cls is None:
        return as_nan((metrics.get("dataset") or {}).get(metric))
    return as_nan(((metrics.get("class") or {}).get(cls) or {}).get(metric))


def nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN ``values``; NaN when there are none (no warning)."""
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def trials_by_l2(record: StudyRecord) -> dict[float, list[TrialRecord]]:
    """Finished trials grouped by L2 (ascending), each group ordered by seed."""
    groups: dict[float, list[TrialRecord]] = {}
    for trial in record.complete:
        groups.setdefault(float(trial.l2), []).append(trial)  # type: ignore[arg-type]
    return {l2: sorted(groups[l2], key=lambda t: (t.seed is None, t.seed, t.number)) for l2 in sorted(groups)}


def mean_over_seeds(record: StudyRecord, metric: str, cls: str | None = None) -> dict[float, float]:
    """Per L2, the mean over seeds of a test metric (Figure 1's bar heights)."""
    return {l2: nanmean([metric_value(t, metric, cls) for t in group]) for l2, group in trials_by_l2(record).items()}


@dataclass(frozen=True)
class Interval:
    """Mean of a sample, its SD (ddof 1) and two-sided Student-t interval (NaN SD and bounds when n < 2)."""

    n: int
    mean: float
    low: float
    high: float
    sd: float = math.nan


def t_interval(values: Sequence[float], level: float = CONFIDENCE) -> Interval:
    """Mean, SD and t-interval ``mean ± t(level, n-1) · SD / √n`` of the non-NaN ``values``."""
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = finite.size
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = float(finite.mean())
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    sd = float(finite.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))
    return Interval(n, mean, mean - half, mean + half, sd)


def seed_intervals(record: StudyRecord, metric: str) -> dict[float, Interval]:
    """Per L2, mean, SD and 95% t-interval over seeds of the data-set ``metric``."""
    return {l2: t_interval([metric_value(t, metric) for t in group]) for l2, group in trials_by_l2(record).items()}


def per_image(record: StudyRecord, metric: str) -> dict[float, dict[str, float]]:
    """Per L2, each test image's ``metric`` averaged over seeds first (NaN-aware), keyed by file name."""
    return {l2: unit_values(group, metric, None).values for l2, group in trials_by_l2(record).items()}


@dataclass(frozen=True)
class UnitValues:
    """One L2's per-unit values of a per-image metric, averaged over its seeds.

    ``unit`` is ``"patient"`` or ``"slice"``; ``n_slices`` counts the distinct test slices seen and
    ``n_nan`` the slice values (slice x seed) that were NaN and left out.
    """

    unit: str
    values: dict[str, float]
    n_slices: int
    n_nan: int


def unit_values(
    group: Sequence[TrialRecord], metric: str, patient_of: dict[str, str] | None, files: set[str] | None = None
) -> UnitValues:
    """Per-unit values of per-image ``metric`` over the seeds in ``group`` (one L2).

    Per seed, each unit's value is the mean of its non-NaN slices (a slice is its own unit when
    ``patient_of`` is None); then each unit's values are averaged over the seeds that have one.
    ``files`` restricts the slices to those test files (a stratum).
    """
    per_seed: list[dict[str, float]] = []
    slices: set[str] = set()
    n_nan = 0
    for trial in group:
        units: dict[str, list[float]] = {}
        for row in (trial.test_metrics or {}).get("images") or []:
            file = str(row["file"])
            if files is not None and file not in files:
                continue
            slices.add(file)
            value = as_nan(row.get(metric))
            if math.isnan(value):
                n_nan += 1
                continue
            units.setdefault(file if patient_of is None else patient_of[file], []).append(value)
        per_seed.append({unit: float(np.mean(v)) for unit, v in units.items()})
    keys = sorted(set().union(*per_seed)) if per_seed else []
    values = {k: nanmean([seed.get(k, math.nan) for seed in per_seed]) for k in keys}
    return UnitValues("slice" if patient_of is None else "patient", values, len(slices), n_nan)


def paired_differences(a: dict[str, float], b: dict[str, float]) -> np.ndarray:
    """``a[unit] - b[unit]`` over the units both have with finite values, in unit order."""
    units = sorted(u for u in set(a) & set(b) if not (math.isnan(a[u]) or math.isnan(b[u])))
    return np.asarray([a[u] - b[u] for u in units], dtype=float)


def bootstrap_median_ci(diffs: np.ndarray, level: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``diffs`` (``scipy.stats.bootstrap``, fixed seed).

    Percentile rather than scipy's default BCa: the bootstrap distribution of a median of few values is
    a handful of atoms, where BCa's acceleration estimate breaks down. NaN when fewer than 2 values.
    """
    if diffs.size < 2:
        return math.nan, math.nan
    if np.all(diffs == diffs[0]):
        return float(diffs[0]), float(diffs[0])  # every resample has this median
    result = sps.bootstrap(
        (diffs,),
        np.median,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diffs``; 1.0 when all are zero, NaN when empty.

    scipy chooses the exact null distribution for small samples without ties or zeros and the normal
    approximation otherwise; zero differences are dropped (Wilcoxon's own convention).
    """
    if diffs.size == 0:
        return math.nan
    if not np.any(diffs != 0):
        return 1.0
    return float(sps.wilcoxon(diffs).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values, in the input order; NaN stays NaN and is not counted.

    With the m finite p-values sorted ascending, p(1) <= ... <= p(m), the adjusted value of p(i) is
    ``max over j <= i of min(1, (m - j + 1) p(j))``: rejecting where it is below alpha controls the
    family-wise error rate at alpha under any dependence between the tests.
    """
    order = sorted((i for i, p in enumerate(p_values) if not math.isnan(p)), key=lambda i: p_values[i])
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairedComparison:
    """L2 ``a`` minus L2 ``b`` on one per-image metric: unit-level test and seed-level spread.

    ``n`` units (patients or slices) are paired; ``n_slices`` distinct test slices went in and
    ``n_nan`` NaN slice values were left out. ``seed_diff`` is the difference of the *data-set* metric
    per shared seed (mean, SD, t-interval) and ``seed_sd_a`` / ``seed_sd_b`` each L2's SD over seeds.
    ``p_holm`` is filled in by :func:`paired_comparisons`; ``ranked`` is False when a trial of either L2
    did not learn (see :mod:`dashboards.learning`).
    """

    metric: str
    l2_a: float
    l2_b: float
    unit: str
    n: int
    n_slices: int
    n_nan: int
    mean_diff: float
    median_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float = math.nan
    seed_diff: Interval = Interval(0, math.nan, math.nan, math.nan)
    seed_sd_a: float = math.nan
    seed_sd_b: float = math.nan
    ranked: bool = True

    @property
    def significant(self) -> bool:
        """Whether the Holm-adjusted Wilcoxon p rejects "no difference" at :data:`ALPHA`."""
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA


def compare(metric: str, l2_a: float, l2_b: float, a: UnitValues, b: UnitValues) -> PairedComparison:
    """Median difference, bootstrap CI and Wilcoxon p of ``a - b`` over their common units."""
    diffs = paired_differences(a.values, b.values)
    low, high = bootstrap_median_ci(diffs)
    empty = diffs.size == 0
    return PairedComparison(
        metric,
        l2_a,
        l2_b,
        a.unit,
        int(diffs.size),
        max(a.n_slices, b.n_slices),
        a.n_nan + b.n_nan,
        math.nan if empty else float(np.mean(diffs)),
        math.nan if empty else float(np.median(diffs)),
        low,
        high,
        wilcoxon_p(diffs),
    )


def seed_difference(a: Sequence[TrialRecord], b: Sequence[TrialRecord], metric: str) -> Interval:
    """Data-set ``metric`` of ``a`` minus ``b`` per replicate both have (seed, and fold under cross-validation):
    mean, SD and t-interval over those replicates."""
    by_seed = {(t.seed, t.fold): t for t in b}
    return t_interval(
        [
            metric_value(t, metric) - metric_value(by_seed[(t.seed, t.fold)], metric)
            for t in a
            if (t.seed, t.fold) in by_seed
        ]
    )


#: The reading of a comparison or verdict between L2 values of which one (or both) may not be ranked.
NOT_RANKED = "not ranked: a network did not learn"


def rankable(group: Sequence[TrialRecord]) -> bool:
    """Whether an L2's trials may be ranked: none of them is known not to have learned.

    The one decision of the report's learning gate: the paired comparisons, the written summary's findings
    and the per-patient verdicts (:mod:`dashboards.patient_verdicts`) all ask it.
    """
    return all(learned(t) is not False for t in group)


def paired_comparisons(
    record: StudyRecord, patient_of: dict[str, str] | None = None, metrics: Sequence[str] = PAIRED_METRICS
) -> list[PairedComparison]:
    """Every pair of L2 values (smaller first) on each of ``metrics``, Holm-adjusted over the whole list.

    ``patient_of`` maps test files to patients (patients as the unit); None analyses per slice.
    """
    groups = trials_by_l2(record)
    results = []
    for metric in metrics:
        values = {l2: unit_values(group, metric, patient_of) for l2, group in groups.items()}
        spread = seed_intervals(record, metric)
        for l2_a, l2_b in itertools.combinations(sorted(groups), 2):
            c = compare(metric, l2_a, l2_b, values[l2_a], values[l2_b])
            results.append(
                replace(
                    c,
                    seed_diff=seed_difference(groups[l2_a], groups[l2_b], metric),
                    seed_sd_a=spread[l2_a].sd,
                    seed_sd_b=spread[l2_b].sd,
                    ranked=rankable(groups[l2_a]) and rankable(groups[l2_b]),
                )
            )
    adjusted = holm([c.p_value for c in results])
    return [replace(c, p_holm=p) for c, p in zip(results, adjusted)]


@dataclass(frozen=True)
class Units:
    """What a study's paired comparisons use as the unit, and why (shown in the report)."""

    patient_of: dict[str, str] | None
    note: str

    @property
    def unit(self) -> str:
        """``"patient"`` or ``"slice"``."""
        return "slice" if self.patient_of is None else "patient"


def study_units(record: StudyRecord) -> Units:
    """Patients from the data set's manifest when it names one for every test slice, else slices."""
    test_files = {str(row["file"]) for t in record.complete for row in (t.test_metrics or {}).get("images") or []}
    manifest = read_manifest(record.data_dir)
    if manifest is None:
        where = record.data_dir / "manifest.csv" if record.data_dir else "the study (no data_dir attribute)"
        return Units(
            None,
            f"per-slice analysis: no manifest naming patients ({where} not found), so slices "
            f"of one patient count as independent and p-values are optimistic",
        )
    patients = manifest.patients
    missing = sorted(test_files - set(patients or {}))
    if patients is None or missing:
        why = "has no patient column" if patients is None else f"does not list test slice {missing[0]}"
        return Units(
            None,
            f"per-slice analysis: {manifest.path} {why}, so slices of one patient count as "
            f"independent and p-values are optimistic",
        )
    n_patients = len({patients[f] for f in test_files})
    return Units(
        {f: patients[f] for f in test_files},
        f"patients as the unit: {n_patients} test patients ({len(test_files)} slices) from {manifest.path}",
    )
