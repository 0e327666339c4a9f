"""Plotly figures of a grid study: Figure 1, the L2 sensitivity plot, training curves and tables.

One function per figure, each taking a :class:`~dashboards.load.StudyRecord` and returning a
``go.Figure`` so the same object goes into the HTML report, the static export and optuna-dashboard.
Figure 2 (masks) lives in :mod:`dashboards.masks` because it reads images.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from hpo.rule import RetuneRule
from lgeseg import tables
from lgeseg.metrics import CLASS_METRICS, DATASET_METRICS

from .load import StudyRecord, TrialRecord
from .stats import mean_over_seeds, metric_value, t_interval, trials_by_l2

#: Per-class metrics of the paper's Figure 1: :data:`lgeseg.metrics.CLASS_METRICS` without Dice, which the
#: paper does not show.
FIGURE1_CLASS_METRICS: tuple[str, ...] = tuple(m for m in CLASS_METRICS if m != "Dice")
#: Line style of each trial state in the training curves: retuned (PRUNED) attempts are dashed.
STATE_DASH: dict[str, str] = {"COMPLETE": "solid", "RUNNING": "solid", "PRUNED": "dash", "FAIL": "dot"}


def l2_label(l2: float | None) -> str:
    """How an L2 value is written everywhere in the report (``L2=5e-05``)."""
    return "L2=?" if l2 is None else f"L2={l2:g}"


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a table or bar label: :func:`lgeseg.tables.fmt` with 3 decimals by default."""
    return tables.fmt(value, digits)


def fmt_p(value: float | None) -> str:
    """A p-value: ``< 0.0001`` rather than a misleading ``0.0000``."""
    if value is not None and not math.isnan(value) and value < 1e-4:
        return "< 0.0001"
    return fmt(value, 4)


def l2_colors(record: StudyRecord) -> dict[float, str]:
    """One colour per L2 value of any trial, stable across figures (ascending L2 order)."""
    values = sorted({t.l2 for t in record.trials if t.l2 is not None})
    palette = qualitative.Plotly
    return {l2: palette[i % len(palette)] for i, l2 in enumerate(values)}


def _seed_note(record: StudyRecord) -> str:
    seeds = record.seeds
    return f"mean over {len(seeds)} seeds" if len(seeds) > 1 else "single seed"


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure that says why it has nothing to show (for example a study with no finished trial)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, xaxis_visible=False, yaxis_visible=False, height=250)
    return fig


def figure1(record: StudyRecord) -> go.Figure:
    """The paper's Figure 1: per-region Accuracy / IoU / MeanBFScore and the data-set metrics per L2.

    One panel per region of the label map plus one for the data-set metrics; one bar colour per L2,
    bar height the test-split value (mean over seeds of the COMPLETE trials), printed on the bar.
    """
    title = f"Figure 1. Test-set metrics per L2 value ({_seed_note(record)})"
    if not record.complete:
        return empty_figure(title, "No finished trial yet.")
    classes, colors = record.classes, l2_colors(record)
    panels = [(cls, list(FIGURE1_CLASS_METRICS)) for cls in classes] + [(None, list(DATASET_METRICS))]
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        vertical_spacing=0.12,
        horizontal_spacing=0.08,
        subplot_titles=[f"({chr(97 + i)}) {cls or 'Data set'}" for i, (cls, _) in enumerate(panels)],
    )
    for index, (cls, metrics) in enumerate(panels):
        row, col = index // cols + 1, index % cols + 1
        means = {m: mean_over_seeds(record, m, cls) for m in metrics}
        for l2 in record.l2_values:
            heights = [means[m][l2] for m in metrics]
            fig.add_trace(
                go.Bar(
                    x=metrics,
                    y=heights,
                    name=l2_label(l2),
                    legendgroup=l2_label(l2),
                    showlegend=index == 0,
                    marker_color=colors[l2],
                    text=[fmt(h) for h in heights],
                    textposition="outside",
                    meta={"region": cls or "dataset", "l2": l2},
                    hovertemplate=f"{cls or 'data set'} %{{x}}<br>{l2_label(l2)}: %{{y:.4f}}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_yaxes(range=[0, 1.12], row=row, col=col)
    fig.update_layout(
        title=title,
        barmode="group",
        height=380 * rows,
        legend_title_text="L2",
        uniformtext_minsize=8,
        template="plotly_white",
    )
    return fig


def sensitivity(record: StudyRecord) -> go.Figure:
    """Each data-set metric and each region's IoU / BF score against L2 on a log axis.

    Every COMPLETE trial is a point (one per seed); the line is the mean over seeds with a 95%
    Student-t interval as error bars (no bar with a single seed).
    """
    title = "Sensitivity to L2: test metrics per seed, mean and 95% t-interval"
    if not record.complete:
        return empty_figure(title, "No finished trial yet.")
    panels = [(m, None) for m in DATASET_METRICS]
    panels += [(m, cls) for cls in record.classes for m in ("IoU", "MeanBFScore")]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        vertical_spacing=0.14,
        horizontal_spacing=0.06,
        subplot_titles=[m if cls is None else f"{cls} {m}" for m, cls in panels],
    )
    groups = trials_by_l2(record)
    for index, (metric, cls) in enumerate(panels):
        row, col = index // cols + 1, index % cols + 1
        label = metric if cls is None else f"{cls} {metric}"
        points = [(t.l2, metric_value(t, metric, cls), t) for group in groups.values() for t in group]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in points],
                y=[p[1] for p in points],
                mode="markers",
                name="seed",
                legendgroup="seed",
                showlegend=index == 0,
                marker={"color": "#7f7f7f", "size": 7, "opacity": 0.7},
                text=[f"seed {t.seed}, trial #{t.number}" for _, _, t in points],
                meta={"panel": label, "kind": "points"},
                hovertemplate=f"{label}<br>L2=%{{x:g}}: %{{y:.4f}}<br>%{{text}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        intervals = {l2: t_interval([metric_value(t, metric, cls) for t in group]) for l2, group in groups.items()}
        xs = list(intervals)
        means = [iv.mean for iv in intervals.values()]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=means,
                mode="lines+markers",
                name="mean, 95% t-interval",
                legendgroup="mean",
                showlegend=index == 0,
                line={"color": "#1f77b4"},
                marker={"size": 9, "symbol": "diamond"},
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [iv.high - iv.mean for iv in intervals.values()],
                    "arrayminus": [iv.mean - iv.low for iv in intervals.values()],
                },
                meta={"panel": label, "kind": "mean"},
                hovertemplate=f"{label}<br>L2=%{{x:g}}: mean %{{y:.4f}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
    fig.update_xaxes(type="log", tickvals=record.l2_values, ticktext=[f"{v:g}" for v in record.l2_values])
    fig.update_layout(title=title, height=300 * rows, template="plotly_white")
    return fig


def check_epochs(record: StudyRecord) -> list[int]:
    """Epochs at which the retune rule checks validation accuracy (:meth:`hpo.rule.RetuneRule.check_epoch`,
    the stopper's own rule), one per distinct epoch count of the study's trials."""
    retune = record.config.get("retune") or {}
    if retune.get("check_fraction") is None:
        return []
    rule = RetuneRule(float(retune["check_fraction"]), float(retune.get("target_accuracy", 0.0)))
    if not rule.enabled:
        return []  # switched off: no check epoch to draw
    epochs = {t.epochs for t in record.trials if t.epochs} or {(record.config.get("train") or {}).get("epochs")}
    return sorted({rule.check_epoch(int(e)) for e in epochs if e})


def replacement_of(record: StudyRecord, trial: TrialRecord) -> TrialRecord | None:
    """The rerun that replaced a retuned trial: the trial named by its ``retune.replaced_by`` (the
    recorder writes the rerun's trial name), else the trial naming it ``rerun_of``."""
    if not trial.retune:
        return None
    named = record.by_name(trial.retune.get("replaced_by"))
    return named or next((t for t in record.trials if t.lineage.get("rerun_of") == trial.number), None)


def _lineage_text(record: StudyRecord, number: int) -> str:
    """Hover text of a trial: its state, and for a retuned one why and which rerun replaced it."""
    trial = record.by_number(number)
    assert trial is not None
    parts = [f"trial #{trial.number} {trial.name}", trial.state]
    if trial.retune:
        parts.append(f"retuned at epoch {trial.retune.get('check_epoch')}: {trial.retune.get('reason', '')}")
        replacement = replacement_of(record, trial)
        parts.append(f"replaced by #{replacement.number} {replacement.name}" if replacement else "not replaced")
    rerun_of = record.by_number(trial.lineage.get("rerun_of"))
    if rerun_of is not None:
        parts.append(f"rerun of #{rerun_of.number} {rerun_of.name}")
    return "<br>".join(parts)


def training_curves(record: StudyRecord) -> go.Figure:
    """Validation accuracy per epoch of every trial; retuned ones dashed and linked to their rerun.

    The retune rule's check epoch is a vertical line and its target accuracy a horizontal one.
    """
    title = "Validation accuracy per epoch (dashed: retuned; dotted: failed)"
    trials = [t for t in record.trials if t.curve]
    if not trials:
        return empty_figure(title, "No trial has reported an epoch yet.")
    colors = l2_colors(record)
    fig = go.Figure()
    for trial in trials:
        name = f"#{trial.number} {trial.name}"
        replacement = replacement_of(record, trial)
        if replacement is not None:
            name += f" → #{replacement.number}"
        fig.add_trace(
            go.Scatter(
                x=list(trial.curve),
                y=list(trial.curve.values()),
                mode="lines+markers",
                name=name,
                line={"dash": STATE_DASH.get(trial.state, "solid"), "color": colors.get(trial.l2, "#7f7f7f")},
                marker={"size": 4},
                text=_lineage_text(record, trial.number),
                meta={"number": trial.number, "state": trial.state},
                hovertemplate="epoch %{x}: %{y:.4f}<br>%{text}<extra></extra>",
            )
        )
    retune = record.config.get("retune") or {}
    for epoch in check_epochs(record):
        fig.add_vline(
            x=epoch,
            line={"dash": "dot", "color": "#444"},
            annotation_text=f"check epoch {epoch}",
            annotation_position="top left",
        )
    if retune.get("target_accuracy") is not None:
        fig.add_hline(
            y=float(retune["target_accuracy"]),
            line={"dash": "dot", "color": "#d62728"},
            annotation_text=f"target {float(retune['target_accuracy']):g}",
            annotation_position="bottom right",
        )
    fig.update_layout(
        title=title,
        xaxis_title="epoch",
        yaxis_title="validation accuracy",
        height=480,
        template="plotly_white",
        legend={"font": {"size": 10}},
    )
    return fig


#: Columns of the all-trials table.
TRIAL_COLUMNS: tuple[str, ...] = (
    "#",
    "state",
    "L2",
    "seed",
    "learning rate",
    "batch size",
    "rerun",
    "epochs run",
    "best val accuracy",
    "val MeanIoU",
    "test GlobalAccuracy",
    "test MeanIoU",
    "test MeanBFScore",
)


def trial_rows(record: StudyRecord) -> list[list[str]]:
    """One row of :data:`TRIAL_COLUMNS` per trial, formatted for display."""
    rows = []
    for t in record.trials:
        val = t.val_metrics or {}
        rows.append(
            [
                str(t.number),
                t.state,
                tables.MISSING if t.l2 is None else f"{t.l2:g}",
                str(t.seed) if t.fold is None else f"{t.seed} (fold {t.fold})",
                tables.MISSING if t.learning_rate is None else f"{t.learning_rate:g}",
                str(t.batch_size),
                str(t.rerun),
                str(t.epochs_run if t.epochs_run is not None else len(t.curve)),
                fmt(t.best_val_accuracy),
                fmt(val.get("MeanIoU", t.value)),
                *(
                    fmt(metric_value(t, m)) if t.test_metrics else tables.MISSING
                    for m in ("GlobalAccuracy", "MeanIoU", "MeanBFScore")
                ),
            ]
        )
    return rows


def table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> go.Figure:
    """A plotly table (for optuna-dashboard and static export; the HTML report uses plain tables)."""
    fig = go.Figure(
        go.Table(
            header={"values": list(columns), "fill_color": "#e8e8e8", "align": "left"},
            cells={"values": [list(col) for col in zip(*rows)] if rows else [[] for _ in columns], "align": "left"},
        )
    )
    fig.update_layout(title=title, height=120 + 24 * max(len(rows), 1))
    return fig
