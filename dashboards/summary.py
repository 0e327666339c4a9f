"""The report's written summary, generated from the same numbers as the figures and tables."""

from __future__ import annotations

import math
from collections import Counter

from .figures import fmt, fmt_p, l2_label
from .load import DATASET_METRICS, StudyRecord
from .stats import PAIRED_METRICS, PairedComparison, mean_over_seeds


def winner(means: dict[float, float]) -> float | None:
    """The L2 value with the highest finite mean (the smallest L2 on ties), or None."""
    finite = [(v, -l2, l2) for l2, v in means.items() if not math.isnan(v)]
    return max(finite)[2] if finite else None


def _oriented(c: PairedComparison, first: float) -> tuple[float, float, float, float]:
    """The comparison as ``first - other``: other L2, median difference and CI bounds."""
    if c.l2_a == first:
        return c.l2_b, c.median_diff, c.ci_low, c.ci_high
    return c.l2_a, -c.median_diff, -c.ci_high, -c.ci_low


def summary_lines(record: StudyRecord, comparisons: list[PairedComparison]) -> list[str]:
    """Plain-text sentences: what the study is, which L2 won on which metric and whether it is significant."""
    lines: list[str] = []
    if record.synthetic:
        lines.append("The data are SYNTHETIC (the phantom data set), not LGE-MRI: these numbers test the "
                     "pipeline and say nothing about the paper's findings.")
    states = Counter(t.state for t in record.trials)
    lines.append(f"Study {record.name}: {len(record.trials)} trials — {states['COMPLETE']} complete, "
                 f"{states['PRUNED']} retuned (pruned), {states['FAIL']} failed, {states['RUNNING']} running.")
    if states["RUNNING"]:
        lines.append("The study is still running: figures and tables show the trials finished so far.")
    if not record.complete:
        lines.append("No trial has finished yet, so there is no winner.")
        return lines
    seeds = record.seeds
    lines.append(f"Test metrics are means over {len(seeds)} seeds ({', '.join(map(str, seeds))})."
                 if len(seeds) > 1 else "Test metrics come from a single seed per L2 value.")
    wins: Counter[float] = Counter()
    for metric in DATASET_METRICS:
        means = mean_over_seeds(record, metric)
        best = winner(means)
        if best is None:
            lines.append(f"{metric}: no finite value.")
            continue
        wins[best] += 1
        others = ", ".join(f"{l2_label(l2)} {fmt(v)}" for l2, v in means.items() if l2 != best)
        lines.append(f"Highest test {metric}: {l2_label(best)} ({fmt(means[best])}; {others or 'only value'}).")
    for cls in record.classes:
        best = winner(mean_over_seeds(record, "IoU", cls))
        if best is not None:
            lines.append(f"Highest {cls} IoU: {l2_label(best)}.")
    if wins:
        top, count = max(wins.items(), key=lambda kv: (kv[1], -kv[0]))
        lines.append(f"Overall {l2_label(top)} won {count} of {len(DATASET_METRICS)} data-set metrics.")
    for metric in PAIRED_METRICS:
        best = winner(mean_over_seeds(record, metric))
        for c in comparisons:
            if c.metric != metric or best not in (c.l2_a, c.l2_b):
                continue
            other, median, low, high = _oriented(c, best)
            if c.n == 0:
                lines.append(f"Per-image {metric}, {l2_label(best)} vs {l2_label(other)}: no paired images.")
                continue
            verdict = "significant" if c.significant else "not significant"
            p_text = fmt_p(c.p_value)
            p_relation = p_text if p_text.startswith("<") else f"= {p_text}"
            lines.append(f"Per-image {metric}, {l2_label(best)} minus {l2_label(other)} over {c.n} test images: "
                         f"median {fmt(median, 4)} (bootstrap 95% CI [{fmt(low, 4)}, {fmt(high, 4)}]), "
                         f"Wilcoxon p {p_relation}: {verdict} at 0.05.")
    return lines
