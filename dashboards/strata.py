"""Test metrics per stratum of a manifest column (``report --by COLUMN``, e.g. EMIDEC's ``pathology``).

Each group is the set of test slices whose manifest row has one value of the column. Per group and L2,
each per-image metric is summarised the way the paired comparisons are: per seed, the mean over units
(patients when the manifest names them, else slices) of each unit's mean over its non-NaN slices in the
group; then mean and SD over seeds. A per-image mean differs from the data-set metric of the same name
(which pools pixels over all slices), so the table and figure say "mean of per-slice".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lgeseg.errors import DataError
from lgeseg.metrics import DATASET_METRICS
from lgeseg.tables import MISSING

from .figures import empty_figure, fmt, l2_colors, l2_label
from .load import StudyRecord
from .manifest import read_manifest
from .stats import Interval, Units, nanmean, t_interval, trials_by_l2, unit_values

#: Per-image metrics shown per stratum.
STRATA_METRICS: tuple[str, ...] = DATASET_METRICS


@dataclass(frozen=True)
class StratumRow:
    """One group of ``column`` and one L2: unit and slice counts and each metric over seeds."""

    column: str
    group: str
    l2: float
    n_patients: int | None
    n_slices: int
    metrics: dict[str, Interval]


def strata(record: StudyRecord, column: str, units: Units) -> list[StratumRow]:
    """Rows per (group, L2) of manifest ``column`` over the test slices, groups and L2 ascending.

    Raises:
        DataError: the study's data folder has no manifest, or the manifest has no column ``column``
            (the message names it and lists the columns there are).
    """
    manifest = read_manifest(record.data_dir)
    if manifest is None:
        raise DataError(f"--by {column}: the study's data folder {record.data_dir} has no manifest.csv")
    value_of = manifest.column(column)
    groups = trials_by_l2(record)
    test_files = {
        str(r["file"]) for g in groups.values() for t in g for r in (t.test_metrics or {}).get("images") or []
    }
    missing = sorted(test_files - set(value_of))
    if missing:
        raise DataError(f"--by {column}: {manifest.path} does not list test slice {missing[0]}")
    rows = []
    for group_value in sorted({value_of[f] for f in test_files}):
        files = {f for f in test_files if value_of[f] == group_value}
        n_patients = None if units.patient_of is None else len({units.patient_of[f] for f in files})
        for l2, trials in groups.items():
            metrics = {}
            for metric in STRATA_METRICS:
                per_seed = [
                    nanmean(list(unit_values([t], metric, units.patient_of, files).values.values())) for t in trials
                ]
                metrics[metric] = t_interval(per_seed)
            rows.append(StratumRow(column, group_value or "(empty)", l2, n_patients, len(files), metrics))
    return rows


#: Columns of the strata table (the metric columns follow).
STRATA_COLUMNS: tuple[str, ...] = (
    "group",
    "L2",
    "patients",
    "slices",
    *(f"{m} (mean ± SD over seeds)" for m in STRATA_METRICS),
)


def strata_rows(rows: list[StratumRow]) -> list[list[str]]:
    """One display row of :data:`STRATA_COLUMNS` per (group, L2)."""

    def cell(iv: Interval) -> str:
        return fmt(iv.mean) if math.isnan(iv.sd) else f"{fmt(iv.mean)} ± {fmt(iv.sd)}"

    return [
        [
            f"{r.column}={r.group}",
            f"{r.l2:g}",
            MISSING if r.n_patients is None else str(r.n_patients),
            str(r.n_slices),
            *(cell(r.metrics[m]) for m in STRATA_METRICS),
        ]
        for r in rows
    ]


def strata_figure(record: StudyRecord, rows: list[StratumRow]) -> go.Figure:
    """Grouped bars: one panel per metric, x = group (with its n), one bar per L2, SD over seeds as error bar."""
    column = rows[0].column if rows else "?"
    title = f"Test metrics per {column} group and L2 (mean of per-slice values over units; error bar: SD over seeds)"
    if not rows:
        return empty_figure(title, "No finished trial yet.")
    colors = l2_colors(record)
    cols = 3
    n_rows = math.ceil(len(STRATA_METRICS) / cols)
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=list(STRATA_METRICS), vertical_spacing=0.18)
    labels = {}
    for r in rows:
        count = f"{r.n_slices} slices" if r.n_patients is None else f"{r.n_patients} patients, {r.n_slices} slices"
        labels[r.group] = f"{r.group} ({count})"
    for index, metric in enumerate(STRATA_METRICS):
        row, col = index // cols + 1, index % cols + 1
        for l2 in sorted({r.l2 for r in rows}):
            mine = [r for r in rows if r.l2 == l2]
            fig.add_trace(
                go.Bar(
                    x=[labels[r.group] for r in mine],
                    y=[r.metrics[metric].mean for r in mine],
                    error_y={
                        "type": "data",
                        "array": [0 if math.isnan(r.metrics[metric].sd) else r.metrics[metric].sd for r in mine],
                    },
                    name=l2_label(l2),
                    legendgroup=l2_label(l2),
                    showlegend=index == 0,
                    marker_color=colors.get(l2),
                    meta={"metric": metric, "l2": l2},
                    hovertemplate=f"{metric}<br>%{{x}}<br>{l2_label(l2)}: %{{y:.4f}}<extra></extra>",
                ),
                row=row,
                col=col,
            )
        fig.update_yaxes(range=[0, 1.05], row=row, col=col)
    fig.update_layout(
        title=title, barmode="group", height=360 * n_rows, template="plotly_white", legend_title_text="L2"
    )
    return fig
