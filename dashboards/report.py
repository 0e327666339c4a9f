"""Assemble a grid study's report: one self-contained ``report.html``, optional static images, and the
same figures saved into the Optuna study for optuna-dashboard.

:func:`build_report` is the entry point for both ``python -m hpo.run report`` and the end of every grid
run. The HTML embeds plotly.js once, inline, so it opens without a network.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from hpo.storage import mask_url, open_study, sqlite_path, study_storage
from lgeseg.errors import UserError
from lgeseg.metrics import json_safe

from .caveats import caveat_lines
from .figures import TRIAL_COLUMNS, figure1, sensitivity, table, training_curves, trial_rows
from .load import StudyRecord, load_study
from .masks import figure2
from .page import CSS, check_static_export, export_static, html_table, save_figures
from .patient_verdicts import (
    VARIANCE_COLUMNS,
    VERDICT_COLUMNS,
    VerdictAnalysis,
    analyse_verdicts,
    check_delta,
    field_summary,
    resolve_metric,
    variance_rows,
    verdict_rows,
    verdicts_json,
)
from .patient_verdicts import summary_lines as verdict_lines
from .patient_verdicts import title as verdict_title
from .search import build_search_report
from .stat_tables import (
    LEARNING_COLUMNS,
    PAIRED_COLUMNS,
    SEED_COLUMNS,
    learning_records,
    learning_rows,
    paired_rows,
    seed_records,
    seed_rows,
)
from .stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, PairedComparison, Units, paired_comparisons, study_units
from .strata import STRATA_COLUMNS, StratumRow, strata, strata_figure, strata_rows
from .verdicts import DEFAULT_DELTA, DEFAULT_METRIC, cd_figure
from .written_summary import findings, summary_lines

FORMATS: tuple[str, ...] = ("html", "png", "svg", "pdf")
#: Section headings of the report, by figure key, in page order.
SECTIONS: dict[str, str] = {
    "figure1": "1. Figure 1 — segmentation metrics per L2",
    "sensitivity": "2. Sensitivity to L2",
    "curves": "3. Training curves",
    "figure2": "4. Figure 2 — masks of selected test images",
}


@dataclass(frozen=True)
class Analysis:
    """The statistics of a study, computed once for the HTML, the JSON and the dashboard figures."""

    units: Units
    comparisons: list[PairedComparison]
    strata: dict[str, list[StratumRow]]
    verdicts: VerdictAnalysis | None = None  #: the verdicts on the chosen metric (None: metric not available)


def analyse(
    record: StudyRecord, by: Sequence[str] = (), metric: str | None = None, delta: float = DEFAULT_DELTA
) -> Analysis:
    """Units, Holm-adjusted paired comparisons, the strata of each ``by`` column and the verdicts on
    ``metric`` (:mod:`dashboards.patient_verdicts`; default :data:`~dashboards.verdicts.DEFAULT_METRIC`,
    left out when the data set has no such class).

    Raises:
        DataError: a ``by`` column that the data set's manifest does not have (naming the columns it has).
        ConfigError: a ``metric`` given that the study does not know.
        UserError: ``delta`` not > 0; a patient tested twice by one configuration and seed.
    """
    units = study_units(record)
    delta = check_delta(delta)
    chosen = None
    try:
        chosen = resolve_metric(metric or DEFAULT_METRIC, record.classes)
    except UserError:
        if metric is not None:
            raise
    verdicts = analyse_verdicts(record, chosen, delta, units.patient_of) if chosen and record.complete else None
    return Analysis(
        units,
        paired_comparisons(record, units.patient_of),
        {column: strata(record, column, units) for column in by},
        verdicts,
    )


def _paired_title(analysis: Analysis) -> str:
    unit = "patient" if analysis.units.unit == "patient" else "slice (PER-SLICE: patients unknown)"
    return (
        f"Paired comparisons between L2 values, one value per {unit}: per-image test metric averaged over "
        f"the {unit}'s slices and over seeds; a − b; median with percentile bootstrap 95% CI over "
        f"{analysis.units.unit}s ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); two-sided "
        f"Wilcoxon signed-rank p; Holm-adjusted over the {len(analysis.comparisons)} rows"
    )


def _replicates(record: StudyRecord) -> str:
    """What a row of the seed table averages: seeds, or under cross-validation every (seed, fold) network,
    each scored on its own fold's test patients (so its spread mixes seeds and test sets)."""
    if not record.folds:
        return "seeds"
    return f"replicates ({len(record.folds)} folds x seeds; each fold tests other patients)"


def build_figures(record: StudyRecord, analysis: Analysis) -> dict[str, go.Figure]:
    """Every figure of the report keyed by a stable id (the optuna-dashboard graph id suffix)."""
    figures = {
        "figure1": figure1(record),
        "sensitivity": sensitivity(record),
        "curves": training_curves(record),
        "figure2": figure2(record),
        "trials": table("All trials", TRIAL_COLUMNS, trial_rows(record)),
        "learning": table(
            "Did the networks learn? Test MeanIoU vs the majority-class baseline",
            LEARNING_COLUMNS,
            learning_rows(record),
        ),
        "seeds": table(f"Data-set test metrics over {_replicates(record)}", SEED_COLUMNS, seed_rows(record)),
        "paired": table(_paired_title(analysis), PAIRED_COLUMNS, paired_rows(analysis.comparisons)),
    }
    v = analysis.verdicts
    if v is not None:
        figures["verdicts"] = table(verdict_title(v), VERDICT_COLUMNS, verdict_rows(v))
        if v.shares is not None:
            figures["variance"] = table(f"Variance shares of {v.metric}", VARIANCE_COLUMNS, variance_rows(v))
        if v.friedman is not None:
            figures["cd"] = cd_figure(v.friedman, f"Critical-difference diagram, {v.metric}")
    for column, rows in analysis.strata.items():
        figures[f"strata-{column}"] = strata_figure(record, rows)
    return figures


#: One part of the report: (its group, e.g. ``loss=dice``, or None when nothing but L2 varies; its record,
#: figures and analysis).
Part = tuple[str | None, StudyRecord, dict[str, go.Figure], Analysis]


def slug(group: str) -> str:
    """A group's label as an HTML id and file-name part: ``architecture=monai-unet, loss=dice`` ->
    ``architecture-monai-unet-loss-dice``."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", group).strip("-")


def report_parts(
    record: StudyRecord, by: Sequence[str] = (), metric: str | None = None, delta: float = DEFAULT_DELTA
) -> list[Part]:
    """The report's parts, chosen by the shape of the space: one per group of the categorical axes other than
    L2 that the study varies (architecture, loss: :meth:`StudyRecord.by_groups`), each with its own figures,
    statistics and summary, so L2 values are never compared across networks or losses; else one."""
    parts = []
    for group, part in record.by_groups().items():
        analysis = analyse(part, by, metric, delta)
        figures = build_figures(part, analysis)
        if group:  # the figures also go to optuna-dashboard and static files, away from the headings
            for fig in figures.values():
                fig.update_layout(title_text=f"{group}: {fig.layout.title.text or ''}")
        parts.append((group, part, figures, analysis))
    return parts


def _render_part(
    record: StudyRecord, figures: dict[str, go.Figure], analysis: Analysis, group: str | None, first: bool
) -> list[str]:
    """The HTML of one part; ``first`` inlines plotly.js with its first figure."""
    suffix = f" — {group}" if group else ""
    ids = f"-{slug(group)}" if group else ""
    parts = [f"<h1>{html.escape(group)}</h1>"] if group else []
    lines = [*summary_lines(record, analysis.comparisons, analysis.units), *_verdict_lines(analysis)]
    lines += caveat_lines(record)
    parts.append(
        f"<h2>Summary{html.escape(suffix)}</h2><ul>"
        + "".join(
            f"<li class='synthetic'>{html.escape(s)}</li>"
            if s.startswith(("The data are SYNTHETIC", "DID NOT LEARN"))
            else f"<li>{html.escape(s)}</li>"
            for s in lines
        )
        + "</ul>"
    )
    config = {"displaylogo": False, "responsive": True}
    for index, (key, heading) in enumerate(SECTIONS.items()):
        div = figures[key].to_html(
            full_html=False,
            include_plotlyjs=first and index == 0,
            div_id=f"fig-{key}{ids}",
            config=config,
            default_width="100%",
        )
        parts.append(f"<h2>{html.escape(heading + suffix)}</h2>{div}")
    for column, rows in analysis.strata.items():
        div = figures[f"strata-{column}"].to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-strata-{column}{ids}",
            config=config,
            default_width="100%",
        )
        parts.append(
            f"<h2>Strata by {html.escape(column + suffix)}</h2>{div}" + html_table(STRATA_COLUMNS, strata_rows(rows))
        )
    parts.append(
        f"<h2>5. Tables{html.escape(suffix)}</h2><h3>All trials</h3>" + html_table(TRIAL_COLUMNS, trial_rows(record))
    )
    parts.append(
        "<h3>Did the networks learn? (test MeanIoU against predicting the majority class everywhere)</h3>"
        + html_table(LEARNING_COLUMNS, learning_rows(record))
    )
    parts.append(
        f"<h3>Data-set test metrics over {html.escape(_replicates(record))} (mean, SD, 95% Student-t interval)</h3>"
        + html_table(SEED_COLUMNS, seed_rows(record))
    )
    parts.append(
        f"<h3 id='paired{ids}'>{html.escape(_paired_title(analysis))}</h3>"
        + html_table(PAIRED_COLUMNS, paired_rows(analysis.comparisons))
    )
    v = analysis.verdicts
    if v is not None:
        parts.append(
            f"<h2 id='verdicts{ids}'>{html.escape('6. Verdicts on ' + v.metric + suffix)}</h2>"
            f"<h3>{html.escape(verdict_title(v))}</h3>" + html_table(VERDICT_COLUMNS, verdict_rows(v))
        )
        if "cd" in figures:
            div = figures["cd"].to_html(
                full_html=False, include_plotlyjs=False, div_id=f"fig-cd{ids}", config=config, default_width="100%"
            )
            parts.append(f"<h3>Friedman's test and the critical-difference diagram</h3>{div}")
        if v.shares is not None:
            parts.append(
                f"<h3>Where the variation comes from (mixed model of {html.escape(v.metric)})</h3>"
                + html_table(VARIANCE_COLUMNS, variance_rows(v))
                + f"<p>{html.escape(v.shares.sentence)}</p>"
            )
    return parts


def _verdict_lines(analysis: Analysis) -> list[str]:
    return verdict_lines(analysis.verdicts) if analysis.verdicts is not None else []


def render_html(record: StudyRecord, parts: list[Part]) -> str:
    """The whole report page, its parts (:func:`report_parts`) one after the other; plotly.js is inlined
    with the first figure only."""
    html_parts = [
        f"<h1>HPO report: study {html.escape(record.name)}</h1>",
        f"<p class='meta'>storage {html.escape(mask_url(record.storage))} · "
        f"generated {_dt.datetime.now().isoformat(timespec='seconds')} · regions "
        f"{html.escape(', '.join(f'{k}={v}' for k, v in record.labels.items()))}</p>",
    ]
    for index, (group, part, figures, analysis) in enumerate(parts):
        html_parts += _render_part(part, figures, analysis, group, index == 0)
    body = "\n".join(html_parts)
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>HPO report {html.escape(record.name)}"
        f"</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def report_json(record: StudyRecord, analysis: Analysis) -> dict:
    """The numbers of the report's statistics (NaN as null): summary, findings, tables and strata."""
    return json_safe(
        {
            "study": record.name,
            "storage": mask_url(record.storage),
            "unit": analysis.units.unit,
            "unit_note": analysis.units.note,
            "summary": summary_lines(record, analysis.comparisons, analysis.units) + _verdict_lines(analysis),
            "findings": [dataclasses.asdict(f) for f in findings(record, analysis.comparisons, analysis.units)],
            "comparisons": [dataclasses.asdict(c) for c in analysis.comparisons],
            "learning": learning_records(record),
            "seeds": seed_records(record),
            "strata": {column: [dataclasses.asdict(r) for r in values] for column, values in analysis.strata.items()},
            "field_metrics": field_summary(record),
            "verdicts": verdicts_json(analysis.verdicts) if analysis.verdicts is not None else None,
        }
    )


def build_report(
    storage: str | None,
    study_name: str | None,
    out_dir: Path | None = None,
    fmt: str = "html",
    save_to_dashboard: bool = True,
    by: Sequence[str] = (),
    export_timeout: float | None = None,
    metric: str | None = None,
    delta: float = DEFAULT_DELTA,
) -> Path:
    """Write ``report.html`` and ``report.json`` for a study (plus ``figures/*.png|svg|pdf`` for those formats).

    Returns the path of ``report.html``. ``by`` names manifest columns to stratify the test metrics by;
    ``metric`` (default ``myocardium:Dice``) and ``delta`` (the equivalence margin, > 0) choose the verdicts
    (:mod:`dashboards.patient_verdicts`). An unknown metric or a ``delta`` <= 0 is a one-line error raised
    before anything is written; so are ``by`` and ``metric`` for a search study, whose page has neither.

    ``storage`` defaults to the grid run's sqlite file of ``study_name``; ``out_dir`` to the study's
    ``out_dir`` attribute (else the sqlite file's folder). Works on a study that is still running.
    ``export_timeout`` bounds the static export in seconds (default
    :data:`dashboards.static_export.EXPORT_TIMEOUT_S`).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if export_timeout is not None and not export_timeout > 0:
        raise UserError(f"--export-timeout must be a positive number of seconds, got {export_timeout:g}")
    if fmt != "html":
        check_static_export(fmt)
    check_delta(delta)
    study = open_study(storage, study_name)
    url = study_storage(storage, study.study_name)
    record = load_study(study, url)
    if metric is not None:
        resolve_metric(metric, record.classes)
    db = sqlite_path(url)
    folder = out_dir or record.out_dir or (db.parent if db is not None else None)
    if folder is None:
        raise UserError(f"study {record.name} has no out_dir attribute; give --out DIR")
    folder = Path(folder)
    if "search" in record.config:  # a search study has its own page: dashboards/search.py
        given = [option for option, value in (("--by", by), ("--metric", metric)) if value]
        if given:  # its page has no strata and no per-patient verdicts: an option it would ignore is refused
            raise UserError(
                f"{' and '.join(given)}: study '{record.name}' is a search; its report has no strata "
                "or verdicts (report a grid study, or leave the option out)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        return build_search_report(study, record, folder, fmt, save_to_dashboard, export_timeout)
    parts = report_parts(record, by, metric, delta)  # every check (a --by column, ...) before a folder is made
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        f"{key}-{slug(group)}" if group else key: fig
        for group, _, part_figures, _ in parts
        for key, fig in part_figures.items()
    }
    path = folder / "report.html"
    path.write_text(render_html(record, parts), encoding="utf-8")
    if len(parts) == 1:
        summary = report_json(record, parts[0][3])
    else:  # one report per group
        summary = {
            "study": record.name,
            "groups": {group: report_json(part, analysis) for group, part, _, analysis in parts},
        }
    (folder / "report.json").write_text(json.dumps(summary, indent=1, allow_nan=False), encoding="utf-8")
    if fmt != "html":
        export_static(figures, folder / "figures", fmt, export_timeout)
    if save_to_dashboard:
        save_figures(study, figures)
    return path
