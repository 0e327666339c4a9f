"""The HTML page and figure exports both reports share (the L2 report, :mod:`dashboards.report`, and the
search report, :mod:`dashboards.search`): the style sheet, tables, static images and optuna-dashboard's
Plotly panel. Its own module, so neither report imports the other's private parts.
"""

from __future__ import annotations

import html
import importlib.util
import os
from pathlib import Path

import optuna
import plotly.graph_objects as go

from lgeseg.errors import UserError

#: The pages' style sheet.
CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1400px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#eee}
td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}.meta{color:#666;font-size:12px}
.synthetic{background:#fff3cd;border:1px solid #e0c36b;padding:6px 10px}
"""


def html_table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    """An HTML table of ``rows`` (strings, escaped here) under ``columns``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def check_static_export(fmt: str) -> None:
    """Raise :class:`UserError` saying what to install when kaleido or a Chrome/Chromium is missing.

    The browser is looked for as kaleido (>= 1) does, through choreographer: ``$BROWSER_PATH``, then
    Chrome/Chromium/Edge/Brave on ``PATH`` or at their usual install paths.
    """
    if importlib.util.find_spec("kaleido") is None:
        raise UserError(f"--format {fmt} needs kaleido (pip install kaleido); or use --format html")
    from choreographer.browsers.chromium import Chromium

    browser = Chromium.find_browser(skip_local=False)
    if browser is None:
        raise UserError(
            f"--format {fmt} needs a Chrome/Chromium browser for kaleido (e.g. Debian: apt-get "
            f"install chromium; or set BROWSER_PATH); or use --format html"
        )
    if not (os.path.isfile(browser) and os.access(browser, os.X_OK)):
        raise UserError(f"--format {fmt}: browser {browser} (BROWSER_PATH) is not an executable file")


def export_static(figures: dict[str, go.Figure], folder: Path, fmt: str, timeout: float | None = None) -> list[Path]:
    """Write each figure as ``folder/<key>.<fmt>`` (png, svg or pdf), 1400 px wide, in one kaleido session,
    within ``timeout`` seconds and leaving no browser behind (:mod:`dashboards.static_export`)."""
    from .static_export import export_figures

    return export_figures(figures, folder, fmt, timeout)


def save_figures(study: optuna.Study, figures: dict[str, go.Figure]) -> None:
    """Save the figures into ``study`` for optuna-dashboard's Plotly panel (id ``report-<key>``, overwritten).

    The study comes from :func:`hpo.storage.open_study`, so each write waits while the database is busy.
    """
    from optuna_dashboard import save_plotly_graph_object

    for key, fig in figures.items():
        save_plotly_graph_object(study, fig, graph_object_id=f"report-{key}")
