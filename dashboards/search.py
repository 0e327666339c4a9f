"""Figures and report page of a search study: the objective against each searched hyperparameter, pairs,
hyperparameter importance and, for an L2 search, the continuous L2 sensitivity curve.

A search's record holds configuration trials (params = the searched dotted keys, value = mean validation
MeanIoU over seeds) next to the seed attempts (params ``l2``, ``seed``, ...). Optuna's plots and importance
evaluators, given the searched keys as ``params``, keep only trials that have them: the configurations.
So every figure here is computed by ``optuna.visualization`` / ``optuna.importance`` on the record itself,
and ``get_param_importances(study, params=<searched keys>)`` gives the numbers the importance figure shows.
"""

from __future__ import annotations

import dataclasses
import html
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import plotly.graph_objects as go
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)
from optuna.trial import TrialState

from hpo.record import configuration_trials as _configurations
from hpo.storage import mask_url
from lgeseg.tables import setting

from .figures import TRIAL_COLUMNS, empty_figure, fmt, table, training_curves, trial_rows
from .load import StudyRecord
from .page import CSS, export_static, html_table, save_figures

#: The L2 values of Rukundo's study, marked on the sensitivity curve.
PAPER_L2: tuple[float, ...] = (5.0e-3, 5.0e-4, 5.0e-5)
#: Optuna's importance evaluators the report shows, by name (fANOVA seeded so the figure is reproducible).
EVALUATORS: dict[str, Callable[[], BaseImportanceEvaluator]] = {
    "fANOVA": lambda: FanovaImportanceEvaluator(seed=0),
    "PED-ANOVA": lambda: PedAnovaImportanceEvaluator(),
}
OBJECTIVE = "validation MeanIoU (mean over seeds)"
#: A configuration counts as sampled *at* one of the paper's L2 values when its L2 is within this many decades
#: of it (0.05 decades: a factor 1.12); elsewhere the curve's value there is only the curve's estimate.
NEARBY_DECADES = 0.05
#: Section headings of a search report, by figure key, in page order.
SECTIONS: dict[str, str] = {
    "sensitivity": "Sensitivity to L2 (continuous)",
    "slices": "Objective against each searched hyperparameter",
    "contours": "Pairs of hyperparameters",
    "importance": "Hyperparameter importance",
    "curves": "Training curves of every attempt",
}
CONFIGURATION_COLUMNS: tuple[str, ...] = (
    "config",
    "#",
    "state",
    "seeds",
    "reruns",
    "val MeanIoU",
    "sd",
    "test MeanIoU",
)


def is_search(record: StudyRecord) -> bool:
    """Whether ``record`` is a search study (its config has ``search:``)."""
    return "search" in record.config


def searched(record: StudyRecord) -> list[str]:
    """The searched dotted keys, in the config's order."""
    return list(record.config["search"]["space"])


def configuration_trials(study: optuna.Study, state: TrialState | None = None) -> list[optuna.trial.FrozenTrial]:
    """The record's configuration trials in configuration order (optionally of one state), read through
    :func:`hpo.record.configuration_trials`."""
    return [t for t in _configurations(study.get_trials(deepcopy=False)) if state is None or t.state == state]


def importances(study: optuna.Study, params: list[str]) -> dict[str, dict[str, float]]:
    """Each evaluator's normalised importances of ``params`` over the COMPLETE configurations."""
    return {name: get_param_importances(study, evaluator=make(), params=params) for name, make in EVALUATORS.items()}


def importance_figure(study: optuna.Study, params: list[str]) -> go.Figure:
    """fANOVA and PED-ANOVA importances side by side, each bar drawn by ``plot_param_importances``."""
    title = "Hyperparameter importance of the objective (Optuna fANOVA and PED-ANOVA, normalised)"
    if len(configuration_trials(study, TrialState.COMPLETE)) < 2:
        return empty_figure(title, "Importance needs at least two finished configurations.")
    fig = go.Figure()
    for name, make in EVALUATORS.items():
        drawn = optuna.visualization.plot_param_importances(
            study, evaluator=make(), params=params, target_name=OBJECTIVE
        )
        for trace in drawn.data:
            trace.update(name=name, showlegend=True, meta={"evaluator": name}, marker=None)
            fig.add_trace(trace)
    note = " (one searched hyperparameter: its importance is 1 by definition)" if len(params) == 1 else ""
    if len(params) > 1 and len(configuration_trials(study, TrialState.COMPLETE)) < 20:
        note += (
            "<br><sup>PED-ANOVA compares the top 10% of configurations with all of them: below 20 finished "
            "configurations it rests on one or two and its bars say little</sup>"
        )
    fig.update_layout(
        title=title + note,
        barmode="group",
        xaxis_title="importance",
        height=200 + 60 * len(params),
        template="plotly_white",
    )
    return fig


def slice_figure(study: optuna.Study, params: list[str]) -> go.Figure:
    """The objective against each searched hyperparameter (``plot_slice``: log axes where the space is log)."""
    title = f"{OBJECTIVE} against each searched hyperparameter"
    if not configuration_trials(study, TrialState.COMPLETE):
        return empty_figure(title, "No finished configuration yet.")
    fig = optuna.visualization.plot_slice(study, params=params, target_name=OBJECTIVE)
    fig.update_layout(title=title, template="plotly_white")
    return fig


def contour_figure(study: optuna.Study, params: list[str]) -> go.Figure:
    """The objective over each pair of searched hyperparameters (``plot_contour``)."""
    title = f"{OBJECTIVE} over pairs of searched hyperparameters"
    if len(params) < 2:
        return empty_figure(title, "One hyperparameter searched: no pairs.")
    if len(configuration_trials(study, TrialState.COMPLETE)) < 2:
        return empty_figure(title, "Contours need at least two finished configurations.")
    fig = optuna.visualization.plot_contour(study, params=params, target_name=OBJECTIVE)
    fig.update_layout(title=title, template="plotly_white", height=max(500, 300 * (len(params) - 1)))
    return fig


def _curve(x_log: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """A continuous curve through (log10 L2, y): scipy's smoothing spline (GCV-chosen smoothing) with at least
    five distinct L2 values, else the points joined by straight lines."""
    from scipy.interpolate import make_smoothing_spline

    order = np.argsort(x_log)
    x_log, y = x_log[order], y[order]
    distinct = np.unique(x_log)
    merged = np.array([y[x_log == v].mean() for v in distinct])
    grid = np.linspace(distinct[0], distinct[-1], 200) if len(distinct) > 1 else distinct
    if len(distinct) >= 5:
        return grid, make_smoothing_spline(distinct, merged)(grid), "smoothing spline"
    return grid, np.interp(grid, distinct, merged), "joined points"


@dataclass(frozen=True)
class PaperPoint:
    """The sensitivity curve at one of the paper's L2 values.

    Attributes:
        l2: the paper's value.
        curve: the curve's value there (an interpolation of the configurations, never a measurement).
        estimate: True when no configuration was sampled within :data:`NEARBY_DECADES` of ``l2``: the value is
            only the curve's estimate and never enters a verdict.
        nearest: the nearest sampled configuration (``c003``), ``nearest_l2`` its L2 and ``nearest_value``
            its measured value (mean over its replicates).
    """

    l2: float
    curve: float
    estimate: bool
    nearest: str
    nearest_l2: float
    nearest_value: float

    @property
    def label(self) -> str:
        """How the point is named on the figure and in the summary."""
        nearest = f"nearest sampled {self.nearest} at L2 {self.nearest_l2:.3g}: {self.nearest_value:.4f}"
        if self.estimate:
            return f"{self.l2:g}: curve's estimate {self.curve:.4f} (none sampled nearby; {nearest})"
        return f"{self.l2:g}: curve {self.curve:.4f} ({nearest})"


def paper_points(
    l2: np.ndarray, y: np.ndarray, names: list[str], grid: np.ndarray, curve: np.ndarray
) -> list[PaperPoint]:
    """The curve (``grid`` in log10 L2, ``curve``) at each of :data:`PAPER_L2` inside its range, with the
    nearest of the configurations (``l2``, measured ``y``, ``names``) and whether it is only an estimate."""
    points = []
    for value in PAPER_L2:
        at = math.log10(value)
        if not grid[0] <= at <= grid[-1]:
            continue
        distance = np.abs(np.log10(l2) - at)
        i = int(np.argmin(distance))
        points.append(
            PaperPoint(
                value,
                float(np.interp(at, grid, curve)),
                bool(distance[i] > NEARBY_DECADES),
                names[i],
                float(l2[i]),
                float(y[i]),
            )
        )
    return points


def sensitivity_figure(study: optuna.Study) -> go.Figure:
    """MeanIoU against L2 as a continuous curve, with the paper's three L2 values marked.

    Points: each COMPLETE configuration's validation MeanIoU (mean over seeds, error bar = sd over seeds) and
    test MeanIoU (mean over seeds). Curves: a smoothing spline over log10 L2 of each (see :func:`_curve`).
    Where other hyperparameters are searched too they vary between points, which the title says.
    """
    title = "Sensitivity of MeanIoU to L2 (each point a configuration; curve: smoothing spline over log10 L2)"
    params = list(study.user_attrs.get("config", {}).get("search", {}).get("space", {}))
    if len(params) > 1:
        title += f"<br><sup>other searched hyperparameters ({', '.join(p for p in params if p != 'train.l2')}) "
        title += "vary between points</sup>"
    trials = [t for t in configuration_trials(study, TrialState.COMPLETE) if "train.l2" in t.params]
    if not trials:
        return empty_figure(title, "No finished configuration yet.")
    l2 = np.array([t.params["train.l2"] for t in trials])
    series = {
        "validation MeanIoU": (
            np.array([t.value for t in trials]),
            [t.user_attrs.get("value_std") or 0.0 for t in trials],
            "#1f77b4",
        ),
        "test MeanIoU": (
            np.array([t.user_attrs.get("test_MeanIoU_mean") for t in trials], dtype=float),
            None,
            "#ff7f0e",
        ),
    }
    fig = go.Figure()
    for label, (y, sd, color) in series.items():
        keep = np.isfinite(y)
        if not keep.any():
            continue
        fig.add_trace(
            go.Scatter(
                x=l2[keep],
                y=y[keep],
                mode="markers",
                name=f"{label} per configuration",
                marker={"color": color},
                error_y=None if sd is None else {"type": "data", "array": list(np.array(sd)[keep]), "visible": True},
                text=[f"c{t.user_attrs['configuration']:03d} (trial #{t.number})" for t, k in zip(trials, keep) if k],
                meta={"kind": "points", "series": label},
                hovertemplate="L2=%{x:.3g}: %{y:.4f}<br>%{text}<extra></extra>",
            )
        )
        grid, curve, how = _curve(np.log10(l2[keep]), y[keep])
        fig.add_trace(
            go.Scatter(
                x=10**grid,
                y=curve,
                mode="lines",
                name=f"{label}, {how}",
                line={"color": color},
                meta={"kind": "curve", "series": label},
                hovertemplate="L2=%{x:.3g}: %{y:.4f}<extra></extra>",
            )
        )
        names = [f"c{t.user_attrs['configuration']:03d}" for t, k in zip(trials, keep) if k]
        points = paper_points(l2[keep], y[keep], names, grid, curve)
        if points:
            fig.add_trace(
                go.Scatter(
                    x=[p.l2 for p in points],
                    y=[p.curve for p in points],
                    mode="markers+text",
                    name=f"{label} at the paper's L2 values (open: the curve's estimate, none sampled nearby)",
                    marker={
                        "symbol": ["diamond-open" if p.estimate else "diamond" for p in points],
                        "size": 13,
                        "color": color,
                        "line": {"width": 2},
                    },
                    text=[f"{p.l2:g}" + (" (curve's estimate)" if p.estimate else "") for p in points],
                    customdata=[p.label for p in points],
                    textposition="top center",
                    meta={"kind": "paper", "series": label, "estimate": [p.estimate for p in points]},
                    hovertemplate="paper's L2 %{customdata}<extra></extra>",
                )
            )
    for value in PAPER_L2:
        fig.add_vline(x=value, line={"dash": "dot", "color": "#999"})
    fig.update_xaxes(type="log", title="L2 (log scale; dotted: the paper's 5e-3, 5e-4, 5e-5)")
    fig.update_layout(title=title, yaxis_title="MeanIoU", height=520, template="plotly_white")
    return fig


def configuration_rows(study: optuna.Study, params: list[str]) -> list[list[str]]:
    """One row per configuration: CONFIGURATION_COLUMNS around the searched values."""
    rows = []
    for t in configuration_trials(study):
        attrs = t.user_attrs
        values = [setting(t.params[p], 4) if p in t.params else "n/a" for p in params]
        rows.append(
            [
                f"c{attrs['configuration']:03d}",
                str(t.number),
                t.state.name,
                *values,
                str(attrs.get("n_seeds", "n/a")),
                str(attrs.get("reruns", "n/a")),
                fmt(t.value if t.state == TrialState.COMPLETE else None, 4),
                fmt(attrs.get("value_std"), 4),
                fmt(attrs.get("test_MeanIoU_mean"), 4),
            ]
        )
    return rows


def attempts_only(record: StudyRecord) -> StudyRecord:
    """``record`` without its configuration trials (the grid figures and tables are about attempts)."""
    return dataclasses.replace(record, trials=[t for t in record.trials if "configuration" in t.lineage])


def build_figures(study: optuna.Study, record: StudyRecord) -> dict[str, go.Figure]:
    """Every figure of a search report keyed by a stable id (the optuna-dashboard graph id suffix)."""
    params = searched(record)
    attempts = attempts_only(record)
    columns = CONFIGURATION_COLUMNS[:3] + tuple(params) + CONFIGURATION_COLUMNS[3:]
    figures = {"sensitivity": sensitivity_figure(study)} if "train.l2" in params else {}
    figures.update(
        {
            "slices": slice_figure(study, params),
            "contours": contour_figure(study, params),
            "importance": importance_figure(study, params),
            "curves": training_curves(attempts),
            "configurations": table("Configurations", columns, configuration_rows(study, params)),
            "trials": table("All attempts", TRIAL_COLUMNS, trial_rows(attempts)),
        }
    )
    return figures


def summary_lines(study: optuna.Study, record: StudyRecord) -> list[str]:
    """A few sentences: how far the search got, its best configuration and the importance ranking."""
    search = record.config["search"]
    done = configuration_trials(study, TrialState.COMPLETE)
    lines = []
    if record.synthetic:
        lines.append("The data are SYNTHETIC (the built-in phantom): these numbers say nothing about patients.")
    lines.append(
        f"{len(configuration_trials(study))} of {search['n_trials']} configurations sampled by Optuna's "
        f"{search['sampler']} sampler: {len(done)} complete, "
        f"{len(configuration_trials(study, TrialState.PRUNED))} pruned (not converged or stopped by ASHA), "
        f"{len(configuration_trials(study, TrialState.FAIL))} failed; each trains {search['seeds_per_trial']} "
        f"seed(s) and the sampler sees their mean validation MeanIoU."
    )
    if done:
        best = max(done, key=lambda t: t.value)
        shown = ", ".join(f"{k}={setting(v, 4)}" for k, v in best.params.items())
        spread = best.user_attrs.get("value_std")
        lines.append(
            f"Best configuration c{best.user_attrs['configuration']:03d}: {shown}; validation MeanIoU "
            f"{best.value:.4f}"
            + (f" (sd {spread:.4f} over seeds)" if spread is not None else "")
            + f", test MeanIoU {fmt(best.user_attrs.get('test_MeanIoU_mean'), 4)}."
        )
        values = [t.value for t in done]
        if len(values) > 1:
            lines.append(
                f"Across configurations the objective ranges {min(values):.4f}-{max(values):.4f} "
                f"(median {statistics.median(values):.4f})."
            )
    lines += paper_lines(study)
    if len(done) >= 2 and len(searched(record)) > 1:
        for name, found in importances(study, searched(record)).items():
            ranked = ", ".join(f"{k} {v:.2f}" for k, v in sorted(found.items(), key=lambda kv: -kv[1]))
            lines.append(f"{name} importance: {ranked}.")
    return lines


def paper_lines(study: optuna.Study) -> list[str]:
    """What the validation curve says at the paper's L2 values; an estimate is called one, with the nearest
    sampled configuration, and is not a verdict (verdicts use measured per-patient values only)."""
    trials = [t for t in configuration_trials(study, TrialState.COMPLETE) if "train.l2" in t.params]
    if len(trials) < 2:
        return []
    l2 = np.array([t.params["train.l2"] for t in trials])
    y = np.array([t.value for t in trials], dtype=float)
    grid, curve, how = _curve(np.log10(l2), y)
    points = paper_points(l2, y, [f"c{t.user_attrs['configuration']:03d}" for t in trials], grid, curve)
    if not points:
        return []
    shown = "; ".join(p.label for p in points)
    return [
        f"Validation MeanIoU ({how}) at the paper's L2 values: {shown}. A curve's estimate is an interpolation, "
        f"not a measurement: it enters no verdict; train the value itself (a grid) to compare it."
    ]


def render_html(
    study: optuna.Study,
    record: StudyRecord,
    figures: dict[str, go.Figure],
) -> str:
    """The whole search report page; plotly.js is inlined with the first figure only."""
    import datetime as _dt

    params = searched(record)
    parts = [
        f"<h1>HPO report: search study {html.escape(record.name)}</h1>",
        f"<p class='meta'>storage {html.escape(mask_url(record.storage))} · "
        f"generated {_dt.datetime.now().isoformat(timespec='seconds')} · searched "
        f"{html.escape(', '.join(params))}</p>",
        "<h2>Summary</h2><ul>"
        + "".join(
            f"<li class='synthetic'>{html.escape(s)}</li>"
            if s.startswith("The data are SYNTHETIC")
            else f"<li>{html.escape(s)}</li>"
            for s in summary_lines(study, record)
        )
        + "</ul>",
    ]
    config = {"displaylogo": False, "responsive": True}
    keys = [k for k in SECTIONS if k in figures]
    for index, key in enumerate(keys):
        div = figures[key].to_html(
            full_html=False, include_plotlyjs=index == 0, div_id=f"fig-{key}", config=config, default_width="100%"
        )
        parts.append(f"<h2>{index + 1}. {html.escape(SECTIONS[key])}</h2>{div}")
    columns = CONFIGURATION_COLUMNS[:3] + tuple(params) + CONFIGURATION_COLUMNS[3:]
    parts.append(
        f"<h2>{len(keys) + 1}. Tables</h2><h3>Configurations (value: mean over seeds of each seed's "
        f"final attempt; sd over seeds)</h3>" + html_table(columns, configuration_rows(study, params))
    )
    parts.append("<h3>All attempts</h3>" + html_table(TRIAL_COLUMNS, trial_rows(attempts_only(record))))
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>HPO report {html.escape(record.name)}"
        f"</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def build_search_report(
    study: optuna.Study,
    record: StudyRecord,
    folder: Path,
    fmt: str,
    save_to_dashboard: bool,
    export_timeout: float | None = None,
) -> Path:
    """:func:`dashboards.report.build_report` for a search study: write ``report.html`` (plus static images
    for png/svg) into ``folder``, save the figures into the study for optuna-dashboard; return the path."""
    figures = build_figures(study, record)
    path = folder / "report.html"
    path.write_text(render_html(study, record, figures), encoding="utf-8")
    if fmt != "html":
        export_static(figures, folder / "figures", fmt, export_timeout)
    if save_to_dashboard:
        save_figures(study, figures)
    return path


__all__ = [
    "EVALUATORS",
    "NEARBY_DECADES",
    "PAPER_L2",
    "PaperPoint",
    "build_figures",
    "build_search_report",
    "configuration_trials",
    "contour_figure",
    "importance_figure",
    "importances",
    "is_search",
    "paper_lines",
    "paper_points",
    "sensitivity_figure",
    "slice_figure",
    "summary_lines",
]
