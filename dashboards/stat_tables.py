"""The report's statistics tables as display rows: paired comparisons, seed summaries, learning check.

The same rows feed the HTML report, the plotly tables saved for optuna-dashboard and (as numbers, not
strings) ``report.json``.
"""

from __future__ import annotations

from lgeseg.metrics import DATASET_METRICS, LEARN_MARGIN
from lgeseg.tables import MISSING, as_nan

from .figures import fmt, fmt_p
from .learning import baseline_of, learning_label, learning_margin
from .load import StudyRecord
from .stats import PairedComparison, metric_value, seed_intervals

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
        return "not ranked: a network did not learn"
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


def seed_rows(record: StudyRecord) -> list[list[str]]:
    """Per data-set metric and L2: number of seeds, mean, SD and 95% t-interval over seeds."""
    rows = []
    for metric in DATASET_METRICS:
        for l2, iv in seed_intervals(record, metric).items():
            interval = f"{MISSING} (one seed)" if iv.n < 2 else f"[{fmt(iv.low, 4)}, {fmt(iv.high, 4)}]"
            rows.append([metric, f"{l2:g}", str(iv.n), fmt(iv.mean, 4), fmt(iv.sd, 4), interval])
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


def learning_rows(record: StudyRecord) -> list[list[str]]:
    """Per finished trial: test MeanIoU, the majority-class baseline's, their margin and the verdict."""
    rows = []
    for t in record.complete:
        baseline = baseline_of(t) or {}
        base = baseline.get("MeanIoU")
        rows.append(
            [
                str(t.number),
                t.name,
                f"{t.l2:g}",
                str(t.seed),
                fmt(metric_value(t, "MeanIoU"), 4),
                fmt(as_nan(base), 4),
                str(baseline.get("majority_class", baseline.get("majority_class_index", MISSING))),
                fmt(learning_margin(t), 4),
                learning_label(t),
            ]
        )
    return rows
