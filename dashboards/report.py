"""Assemble a grid study's report: one self-contained ``report.html``, optional static images, and the
same figures saved into the Optuna study for optuna-dashboard.

:func:`build_report` is the entry point for both ``python -m hpo.run report`` and the end of every grid
run. The HTML embeds plotly.js once, inline, so it opens without a network.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.util
import os
import shutil
from pathlib import Path

import optuna
import plotly.graph_objects as go

from lgeseg.errors import UserError

from .figures import (PAIRED_COLUMNS, TRIAL_COLUMNS, figure1, paired_rows, sensitivity, table,
                      training_curves, trial_rows)
from .load import StudyRecord, default_storage, load_study, mask_url, open_study, sqlite_path
from .masks import figure2
from .stats import PairedComparison, paired_comparisons
from .summary import summary_lines

FORMATS: tuple[str, ...] = ("html", "png", "svg")
#: Executables kaleido (>= 1.0) can drive for static export.
CHROME_NAMES: tuple[str, ...] = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Section headings of the report, by figure key, in page order.
SECTIONS: dict[str, str] = {
    "figure1": "1. Figure 1 — segmentation metrics per L2",
    "sensitivity": "2. Sensitivity to L2",
    "curves": "3. Training curves",
    "figure2": "4. Figure 2 — masks of selected test images",
}
_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}.meta{color:#666;font-size:12px}
.synthetic{background:#fff3cd;border:1px solid #e0c36b;padding:6px 10px}
"""


def build_figures(record: StudyRecord, comparisons: list[PairedComparison]) -> dict[str, go.Figure]:
    """Every figure of the report keyed by a stable id (the optuna-dashboard graph id suffix)."""
    return {
        "figure1": figure1(record),
        "sensitivity": sensitivity(record),
        "curves": training_curves(record),
        "figure2": figure2(record),
        "trials": table("All trials", TRIAL_COLUMNS, trial_rows(record)),
        "paired": table("Paired comparisons of per-image metrics between L2 values", PAIRED_COLUMNS,
                        paired_rows(comparisons)),
    }


def _html_table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(record: StudyRecord, figures: dict[str, go.Figure], comparisons: list[PairedComparison]) -> str:
    """The whole report page; plotly.js is inlined with the first figure only."""
    parts = [f"<h1>HPO report: study {html.escape(record.name)}</h1>",
             f"<p class='meta'>storage {html.escape(mask_url(record.storage))} · "
             f"generated {_dt.datetime.now().isoformat(timespec='seconds')} · regions "
             f"{html.escape(', '.join(f'{k}={v}' for k, v in record.labels.items()))}</p>"]
    lines = summary_lines(record, comparisons)
    parts.append("<h2>Summary</h2><ul>" + "".join(
        f"<li class='synthetic'>{html.escape(s)}</li>" if s.startswith("The data are SYNTHETIC")
        else f"<li>{html.escape(s)}</li>" for s in lines) + "</ul>")
    config = {"displaylogo": False, "responsive": True}
    for index, (key, heading) in enumerate(SECTIONS.items()):
        div = figures[key].to_html(full_html=False, include_plotlyjs=index == 0, div_id=f"fig-{key}",
                                   config=config, default_width="100%")
        parts.append(f"<h2>{html.escape(heading)}</h2>{div}")
    parts.append("<h2>5. Tables</h2><h3>All trials</h3>" + _html_table(TRIAL_COLUMNS, trial_rows(record)))
    parts.append("<h3>Paired comparisons between L2 values (per-image test metrics, averaged over seeds "
                 "per image; a − b; bootstrap of the median, 2000 resamples, seed 0; two-sided Wilcoxon "
                 "signed-rank)</h3>" + _html_table(PAIRED_COLUMNS, paired_rows(comparisons)))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>HPO report {html.escape(record.name)}"
            f"</title><style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def _check_static_export(fmt: str) -> None:
    """Raise :class:`UserError` saying what to install when kaleido or a Chrome/Chromium is missing."""
    missing = []
    if importlib.util.find_spec("kaleido") is None:
        missing.append("kaleido (pip install kaleido)")
    if not os.environ.get("BROWSER_PATH") and not any(shutil.which(n) for n in CHROME_NAMES):
        missing.append("a Chrome/Chromium browser (e.g. Debian: apt-get install chromium)")
    if missing:
        raise UserError(f"--format {fmt} needs {' and '.join(missing)}; or use --format html")


def export_static(figures: dict[str, go.Figure], folder: Path, fmt: str) -> list[Path]:
    """Write each figure as ``folder/<key>.<fmt>`` through kaleido."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, fig in figures.items():
        path = folder / f"{key}.{fmt}"
        try:
            fig.write_image(path, format=fmt, width=1400, height=fig.layout.height or 600)
        except Exception as exc:  # kaleido / browser failures come in many types; all mean "cannot export"
            raise UserError(f"static export of {key} to {path} failed: {str(exc).splitlines()[0]}") from None
        paths.append(path)
    return paths


def save_to_dashboard(study: optuna.Study, figures: dict[str, go.Figure]) -> None:
    """Save the figures into ``study`` for optuna-dashboard's Plotly panel (id ``report-<key>``, overwritten)."""
    from optuna_dashboard import save_plotly_graph_object

    for key, fig in figures.items():
        save_plotly_graph_object(study, fig, graph_object_id=f"report-{key}")


#: :func:`build_report`'s ``save_to_dashboard`` flag shadows the function of that name inside it.
_save_figures = save_to_dashboard


def build_report(storage: str | None, study_name: str | None, out_dir: Path | None = None, fmt: str = "html",
                 save_to_dashboard: bool = True) -> Path:
    """Write ``report.html`` for a study (plus ``figures/*.png|svg`` for those formats); return its path.

    ``storage`` defaults to the grid run's sqlite file of ``study_name``; ``out_dir`` to the study's
    ``out_dir`` attribute (else the sqlite file's folder). Works on a study that is still running.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt != "html":
        _check_static_export(fmt)
    study = open_study(storage, study_name)
    url = storage or default_storage(study.study_name)
    record = load_study(study, url)
    db = sqlite_path(url)
    folder = out_dir or record.out_dir or (db.parent if db is not None else None)
    if folder is None:
        raise UserError(f"study {record.name} has no out_dir attribute; give --out DIR")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    comparisons = paired_comparisons(record)
    figures = build_figures(record, comparisons)
    path = folder / "report.html"
    path.write_text(render_html(record, figures, comparisons), encoding="utf-8")
    if fmt != "html":
        export_static(figures, folder / "figures", fmt)
    if save_to_dashboard:
        _save_figures(study, figures)
    return path
