"""The report's written summary, generated from the same numbers as the figures and tables.

For each data-set metric it names the best L2 value (highest mean over seeds among L2 values whose
networks learned), the margin over the runner-up with its intervals, whether that margin survives
patients as the unit, seed variation and the Holm correction, and what a reader may and may not
conclude. :func:`findings` returns the same as data for ``report.json``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

from lgeseg.metrics import DATASET_METRICS, LEARN_MARGIN

from .figures import fmt, fmt_p, l2_label
from .learning import baseline_of, learned
from .load import StudyRecord
from .stats import ALPHA, Interval, PairedComparison, Units, mean_over_seeds, rankable, trials_by_l2


@dataclass(frozen=True)
class Finding:
    """What the study says about one metric: the best L2, by how much, and what survives.

    Differences are ``best - runner_up``. ``survives_patients`` is None when patients are unknown
    (per-slice analysis) and ``survives_seeds`` None when there is one seed (unmeasured); ``best`` is
    None when fewer than two L2 values may be ranked (``not_ranked`` lists the others).
    """

    metric: str
    best: float | None
    runner_up: float | None
    best_mean: float
    runner_up_mean: float
    seed_diff: Interval
    unit: str
    n_units: int
    median_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_holm: float
    survives_patients: bool | None
    survives_seeds: bool | None
    survives_holm: bool
    not_ranked: list[float]
    conclusion: str


def _oriented(c: PairedComparison, first: float) -> tuple[float, float, float, Interval]:
    """``c`` as ``first - other``: median difference, CI bounds and the per-seed difference."""
    s = c.seed_diff
    if c.l2_a == first:
        return c.median_diff, c.ci_low, c.ci_high, s
    return -c.median_diff, -c.ci_high, -c.ci_low, Interval(s.n, -s.mean, -s.high, -s.low, s.sd)


def _listing(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _conclusion(f: Finding, metric: str, n_comparisons: int) -> str:
    best, other = l2_label(f.best), l2_label(f.runner_up)
    if f.survives_patients and f.survives_holm and f.survives_seeds:
        return (
            f"A reader may conclude that on these test patients {best} gives a higher {metric} than {other}, "
            f"beyond training-seed noise and after correcting for {n_comparisons} comparisons; not that this "
            f"carries over to other data, protocols or networks, nor that a difference of "
            f"{fmt(f.median_diff, 3)} matters clinically."
        )
    if f.survives_patients and f.survives_holm and f.survives_seeds is None:
        return (
            f"A reader may conclude only that with a single training seed per L2 value {best} scored a higher "
            f"{metric} than {other} on these test patients (significant after Holm correction, but seed "
            f"variation is unmeasured); not that L2 caused the difference, since another training seed "
            f"could reverse it."
        )
    failed = []
    if not f.survives_patients:
        failed.append(
            "patients as the unit"
            if f.survives_patients is False
            else "patients as the unit (no patients known: per-slice p-values are optimistic)"
        )
    if f.survives_seeds is False:
        failed.append("seed variation")
    if not f.survives_holm:
        failed.append("the Holm correction")
    return (
        f"A reader may not conclude that {best} is better than {other} on {metric}: the difference does not "
        f"survive {_listing(failed)}, so the data are compatible with no difference."
    )


def findings(record: StudyRecord, comparisons: list[PairedComparison], units: Units) -> list[Finding]:
    """One :class:`Finding` per data-set metric (empty when no trial has finished)."""
    groups = trials_by_l2(record)
    ranked = [l2 for l2, g in groups.items() if rankable(g)]
    not_ranked = [l2 for l2 in groups if l2 not in ranked]
    result = []
    for metric in DATASET_METRICS:
        means = mean_over_seeds(record, metric)
        order = sorted((l2 for l2 in ranked if not math.isnan(means[l2])), key=lambda l2: (-means[l2], l2))
        if len(order) < 2:
            result.append(
                Finding(
                    metric,
                    None,
                    None,
                    math.nan,
                    math.nan,
                    Interval(0, math.nan, math.nan, math.nan),
                    units.unit,
                    0,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    math.nan,
                    None,
                    None,
                    False,
                    not_ranked,
                    "",
                )
            )
            continue
        best, runner = order[0], order[1]
        c = next(c for c in comparisons if c.metric == metric and {c.l2_a, c.l2_b} == {best, runner})
        median, low, high, seed = _oriented(c, best)
        patients = None if units.patient_of is None else bool(median > 0 and c.p_value < ALPHA)
        # Under cross-validation with one seed the replicates are fold networks on different test patients:
        # their interval is no measure of training randomness, which stays unmeasured.
        seeds = None if seed.n < 2 or len(record.seeds) < 2 else bool(seed.low > 0)
        f = Finding(
            metric,
            best,
            runner,
            means[best],
            means[runner],
            seed,
            c.unit,
            c.n,
            median,
            low,
            high,
            c.p_value,
            c.p_holm,
            patients,
            seeds,
            bool(median > 0 and c.p_holm < ALPHA),
            not_ranked,
            "",
        )
        result.append(replace(f, conclusion=_conclusion(f, metric, len(comparisons))))
    return result


def _p(value: float) -> str:
    text = fmt_p(value)
    return text if text.startswith("<") else f"= {text}"


def _yes_no(value: bool | None, unknown: str) -> str:
    return unknown if value is None else "yes" if value else "no"


def finding_line(f: Finding, replicates: str = "seeds") -> str:
    """The plain-words sentence(s) of one finding; ``replicates`` names what its interval is over ("seeds", or
    under cross-validation "fold networks": a difference paired fold by fold)."""
    if f.best is None:
        excluded = ", ".join(l2_label(v) for v in f.not_ranked) or "none"
        return (
            f"{f.metric}: no L2 value is ranked (fewer than two L2 values whose networks all learned; not "
            f"ranked: {excluded}). A reader may not conclude anything about the effect of L2 on {f.metric}."
        )
    seed = f.seed_diff
    seed_text = (
        f"95% t-interval over {seed.n} {replicates} [{fmt(seed.low, 3)}, {fmt(seed.high, 3)}]"
        if seed.n >= 2
        else f"one replicate, so no interval over {replicates}"
    )
    unit = "patient" if f.unit == "patient" else "slice (patients unknown)"
    excluded = (
        f" (not ranked, networks did not learn: {', '.join(l2_label(v) for v in f.not_ranked)})" if f.not_ranked else ""
    )
    return (
        f"{f.metric}: best {l2_label(f.best)} with {fmt(f.best_mean)} vs {fmt(f.runner_up_mean)} for the "
        f"runner-up {l2_label(f.runner_up)}{excluded}, a difference of "
        f"{fmt(f.best_mean - f.runner_up_mean)} ({seed_text}). "
        f"Per {unit} over {f.n_units} {f.unit}s: median difference {fmt(f.median_diff, 4)} (bootstrap 95% CI "
        f"[{fmt(f.ci_low, 4)}, {fmt(f.ci_high, 4)}]), Wilcoxon p {_p(f.p_value)}, Holm-adjusted p "
        f"{_p(f.p_holm)}. Survives patients as the unit: {_yes_no(f.survives_patients, 'not tested')}; "
        f"seeds: {_yes_no(f.survives_seeds, 'unmeasured (one seed)')}; Holm: {_yes_no(f.survives_holm, '')}. "
        f"{f.conclusion}"
    )


def summary_lines(record: StudyRecord, comparisons: list[PairedComparison], units: Units) -> list[str]:
    """Plain-text sentences: what the study is, whether its networks learned, and per metric what holds."""
    lines: list[str] = []
    if record.synthetic:
        lines.append(
            "The data are SYNTHETIC (the phantom data set), not LGE-MRI: these numbers test the "
            "pipeline and say nothing about the paper's findings."
        )
    states = Counter(t.state for t in record.trials)
    lines.append(
        f"Study {record.name}: {len(record.trials)} trials — {states['COMPLETE']} complete, "
        f"{states['PRUNED']} retuned (pruned), {states['FAIL']} failed, {states['RUNNING']} running."
    )
    if states["RUNNING"]:
        lines.append("The study is still running: figures and tables show the trials finished so far.")
    if not record.complete:
        lines.append("No trial has finished yet, so there is no winner.")
        return lines
    failed = [t for t in record.complete if learned(t) is False]
    if failed:
        listed = "; ".join(
            f"#{t.number} {l2_label(t.l2)} seed {t.seed} "
            f"({fmt(t.test_metrics['dataset'].get('MeanIoU'))}"
            f" vs {fmt((baseline_of(t) or {}).get('MeanIoU'))})"
            for t in failed
        )
        lines.append(
            f"DID NOT LEARN: {len(failed)} of {len(record.complete)} finished trials have a test MeanIoU "
            f"not clearly above (by less than {LEARN_MARGIN:g} of the headroom 1 − baseline) the trivial "
            f"baseline of predicting the majority class "
            f"everywhere (test MeanIoU vs baseline): {listed}. L2 values with such networks are not ranked."
        )
    else:
        lines.append(
            f"Every finished network's test MeanIoU is clearly above (by {LEARN_MARGIN:g} of the headroom) the trivial "
            f"majority-class baseline (or no baseline is known)."
        )
    lines.append(f"Paired comparisons: {units.note}.")
    seeds = record.seeds
    if len(seeds) > 1:
        lines.append(
            f"Seeds: {len(seeds)} per L2 value ({', '.join(map(str, seeds))}); data-set metrics are means "
            f"over seeds (SD and 95% t-interval in the seed table) and paired values are averaged over "
            f"seeds per {units.unit} first."
        )
    else:
        lines.append(
            "Seeds: one training seed per L2 value, so seed variation is unmeasured: no difference "
            "below can be attributed to L2 rather than to training randomness."
        )
    folds = record.folds
    if folds:
        lines.append(
            f"Cross-validation: {len(folds)} folds; the t-intervals below are over fold networks (the L2 values "
            f"paired fold by fold, each fold on its own test patients), so they show how a difference varies "
            f"between folds, not training randomness."
        )
    lines.append(
        f"p-values are Holm-adjusted over all {len(comparisons)} comparisons of the table; the "
        f"verdicts use the adjusted p at {ALPHA:.2f}."
    )
    found = findings(record, comparisons, units)
    if all(f.best is None for f in found):
        excluded = ", ".join(l2_label(v) for v in found[0].not_ranked) or "none"
        lines.append(
            f"No metric ranks the L2 values: fewer than two L2 values have networks that all learned "
            f"(not ranked: {excluded}). A reader may not conclude anything about the effect of L2 from "
            f"this study."
        )
        return lines
    lines += [finding_line(f, "fold networks" if folds else "seeds") for f in found]
    return lines
