"""The report's statistics tables as display rows: paired comparisons, seed summaries, learning check.

The display rows feed the HTML report and the plotly tables saved for optuna-dashboard; the seed and
learning tables' records (:func:`seed_records`, :func:`learning_records`: the same keys, numbers at full
precision, NaN for missing) feed ``report.json``, and the display rows are formatted from them.
"""

from __future__ import annotations

from lgeseg.metrics import DATASET_METRICS, LEARN_MARGIN
from lgeseg.tables import MISSING, as_nan

from .figures import fmt, fmt_p
from .learning import LEARNING_LABELS, baseline_of, learned, learning_margin
from .load import StudyRecord
from .stats import NOT_RANKED, PairedComparison, metric_value, seed_intervals

#: Columns of the paired-comparison table.
PAIRED_COLUMNS: tuple[str, ...] = (
    "metric",
    "L2 a",
    "L2 b",
    "unit",
    "n units",
    "n slices (NaN values left out)",
    "mean a − b",
    "median a − b",
    "bootstrap 95% CI of median",
    "Wilcoxon p",
    "Holm p",
    "data-set a − b per seed: mean [95% t-CI]",
    "seed SD a / b",
    "verdict (Holm p < 0.05)",
)


def verdict(c: PairedComparison) -> str:
    """A comparison's one-phrase reading: not ranked, a difference (with the seed caveat) or none shown."""
    if not c.ranked:
        return NOT_RANKED
    if c.n == 0:
        return "no paired values"
    if not c.significant:
        return "no difference shown"
    direction = "a > b" if c.median_diff > 0 else "a < b" if c.median_diff < 0 else "differs"
    return direction + (" (one seed: seed variation unmeasured)" if c.seed_diff.n < 2 else "")


def paired_rows(comparisons: list[PairedComparison]) -> list[list[str]]:
    """One row of :data:`PAIRED_COLUMNS` per comparison, formatted for display."""
    rows = []
    for c in comparisons:
        seed = c.seed_diff
        seed_text = (
            MISSING
            if seed.n == 0
            else f"{fmt(seed.mean, 4)} (1 seed)"
            if seed.n < 2
            else f"{fmt(seed.mean, 4)} [{fmt(seed.low, 4)}, {fmt(seed.high, 4)}] ({seed.n} seeds)"
        )
        rows.append(
            [
                c.metric,
                f"{c.l2_a:g}",
                f"{c.l2_b:g}",
                c.unit,
                str(c.n),
                f"{c.n_slices} ({c.n_nan} NaN)",
                fmt(c.mean_diff, 4),
                fmt(c.median_diff, 4),
                f"[{fmt(c.ci_low, 4)}, {fmt(c.ci_high, 4)}]",
                fmt_p(c.p_value),
                fmt_p(c.p_holm),
                seed_text,
                f"{fmt(c.seed_sd_a, 4)} / {fmt(c.seed_sd_b, 4)}",
                verdict(c),
            ]
        )
    return rows


#: Columns of the seed table (one row per L2 and data-set metric).
SEED_COLUMNS: tuple[str, ...] = ("metric", "L2", "seeds", "mean", "SD over seeds", "95% t-interval")


def seed_records(record: StudyRecord) -> list[dict]:
    """Per data-set metric and L2, keyed by :data:`SEED_COLUMNS`: ``seeds`` (int), ``mean`` and ``SD over
    seeds`` (floats, NaN when undefined) and ``95% t-interval`` (``[low, high]``, None with fewer than two
    seeds); :func:`dashboards.stats.t_interval` over the replicates."""
    rows = []
    for metric in DATASET_METRICS:
        for l2, iv in seed_intervals(record, metric).items():
            interval = None if iv.n < 2 else [float(iv.low), float(iv.high)]
            values = [metric, float(l2), int(iv.n), float(iv.mean), float(iv.sd), interval]
            rows.append(dict(zip(SEED_COLUMNS, values)))
    return rows


def seed_rows(record: StudyRecord) -> list[list[str]]:
    """:func:`seed_records` formatted for display (4 decimals)."""
    rows = []
    for r in seed_records(record):
        interval = r["95% t-interval"]
        shown = f"{MISSING} (one seed)" if interval is None else f"[{fmt(interval[0], 4)}, {fmt(interval[1], 4)}]"
        rows.append(
            [r["metric"], f"{r['L2']:g}", str(r["seeds"]), fmt(r["mean"], 4), fmt(r["SD over seeds"], 4), shown]
        )
    return rows


#: Columns of the learning table (one row per finished trial).
LEARNING_COLUMNS: tuple[str, ...] = (
    "#",
    "trial",
    "L2",
    "seed",
    "test MeanIoU",
    "baseline MeanIoU",
    "baseline class",
    f"margin (≥ {LEARN_MARGIN:g} × (1 − baseline) to count)",
    "learned?",
)


def learning_records(record: StudyRecord) -> list[dict]:
    """Per finished trial, keyed by :data:`LEARNING_COLUMNS`: its number, name, L2, seed, test MeanIoU, the
    majority-class baseline's MeanIoU (NaN when unknown), the baseline's class (name or index, None when
    unknown), their margin (:func:`dashboards.learning.learning_margin`) and ``learned?`` as
    :func:`dashboards.learning.learned` answers it (True, False, None = unknown)."""
    rows = []
    for t in record.complete:
        baseline = baseline_of(t) or {}
        values = [
            t.number,
            t.name,
            float(t.l2),
            t.seed,
            float(metric_value(t, "MeanIoU")),
            float(as_nan(baseline.get("MeanIoU"))),
            baseline.get("majority_class", baseline.get("majority_class_index")),
            float(learning_margin(t)),
            learned(t),
        ]
        rows.append(dict(zip(LEARNING_COLUMNS, values)))
    return rows


def learning_rows(record: StudyRecord) -> list[list[str]]:
    """:func:`learning_records` formatted for display (4 decimals; the verdict in words)."""
    rows = []
    for r in learning_records(record):
        number, name, l2, seed, miou, base, cls, margin, verdict = r.values()
        rows.append(
            [
                str(number),
                name,
                f"{l2:g}",
                str(seed),
                fmt(miou, 4),
                fmt(base, 4),
                MISSING if cls is None else str(cls),
                fmt(margin, 4),
                LEARNING_LABELS[verdict],
            ]
        )
    return rows
