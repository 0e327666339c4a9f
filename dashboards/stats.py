"""Numbers behind the figures: means over seeds, t-intervals and paired comparisons between L2 values.

Everything works on the finished (COMPLETE) trials of a :class:`~dashboards.load.StudyRecord`, so a
retuned attempt never counts twice: each grid point contributes the rerun that converged.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .load import StudyRecord, TrialRecord

#: Per-image metrics compared between L2 values.
PAIRED_METRICS: tuple[str, ...] = ("MeanIoU", "MeanBFScore")
#: Resamples and seed of the bootstrap interval of the median paired difference.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _nan(value: object) -> float:
    """``value`` as float with None (JSON null) turned into NaN."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def metric_value(trial: TrialRecord, metric: str, cls: str | None = None) -> float:
    """A test metric of ``trial``: a data-set metric, or the class metric of region ``cls``."""
    metrics = trial.test_metrics or {}
    if cls is None:
        return _nan((metrics.get("dataset") or {}).get(metric))
    return _nan(((metrics.get("class") or {}).get(cls) or {}).get(metric))


def nanmean(values: list[float]) -> float:
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
    return {l2: nanmean([metric_value(t, metric, cls) for t in group])
            for l2, group in trials_by_l2(record).items()}


@dataclass(frozen=True)
class Interval:
    """Mean of a sample and its two-sided 95% Student-t interval (NaN bounds when n < 2)."""

    n: int
    mean: float
    low: float
    high: float


def t_interval(values: list[float], level: float = 0.95) -> Interval:
    """Mean and t-interval of the non-NaN ``values`` (the sensitivity plot's error bars)."""
    finite = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    n = finite.size
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan)
    mean = float(finite.mean())
    if n < 2:
        return Interval(n, mean, math.nan, math.nan)
    half = float(sps.t.ppf(0.5 + level / 2, n - 1) * finite.std(ddof=1) / math.sqrt(n))
    return Interval(n, mean, mean - half, mean + half)


def per_image(record: StudyRecord, metric: str) -> dict[float, dict[str, float]]:
    """Per L2, each test image's ``metric`` averaged over seeds first (NaN-aware), keyed by file name."""
    out: dict[float, dict[str, float]] = {}
    for l2, group in trials_by_l2(record).items():
        values: dict[str, list[float]] = {}
        for trial in group:
            for row in (trial.test_metrics or {}).get("images") or []:
                values.setdefault(str(row["file"]), []).append(_nan(row.get(metric)))
        out[l2] = {file: nanmean(v) for file, v in sorted(values.items())}
    return out


@dataclass(frozen=True)
class PairedComparison:
    """Paired difference ``a - b`` of a per-image metric between two L2 values over the same images."""

    metric: str
    l2_a: float
    l2_b: float
    n: int
    median_diff: float
    ci_low: float
    ci_high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """Whether the Wilcoxon signed-rank test rejects "no difference" at the 0.05 level."""
        return not math.isnan(self.p_value) and self.p_value < 0.05


def paired_differences(a: dict[str, float], b: dict[str, float]) -> np.ndarray:
    """``a[file] - b[file]`` over the files both have with finite values, in file-name order."""
    files = sorted(f for f in set(a) & set(b) if not (math.isnan(a[f]) or math.isnan(b[f])))
    return np.asarray([a[f] - b[f] for f in files], dtype=float)


def bootstrap_median_ci(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``diffs`` with a fixed seed (reproducible reports)."""
    if diffs.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    samples = rng.choice(diffs, size=(BOOTSTRAP_RESAMPLES, diffs.size), replace=True)
    medians = np.median(samples, axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diffs``; 1.0 when all are zero, NaN when empty."""
    if diffs.size == 0:
        return math.nan
    if not np.any(diffs != 0):
        return 1.0
    return float(sps.wilcoxon(diffs).pvalue)


def compare(metric: str, l2_a: float, l2_b: float, a: dict[str, float], b: dict[str, float]) -> PairedComparison:
    """Median difference, bootstrap CI and Wilcoxon p of per-image ``metric`` for L2 ``l2_a`` minus ``l2_b``."""
    diffs = paired_differences(a, b)
    low, high = bootstrap_median_ci(diffs)
    median = float(np.median(diffs)) if diffs.size else math.nan
    return PairedComparison(metric, l2_a, l2_b, int(diffs.size), median, low, high, wilcoxon_p(diffs))


def paired_comparisons(record: StudyRecord) -> list[PairedComparison]:
    """Every pair of L2 values (smaller first) on each of :data:`PAIRED_METRICS`."""
    results = []
    for metric in PAIRED_METRICS:
        values = per_image(record, metric)
        for l2_a, l2_b in itertools.combinations(sorted(values), 2):
            results.append(compare(metric, l2_a, l2_b, values[l2_a], values[l2_b]))
    return results
