"""``report --format png|svg|pdf``: every figure written as a file by kaleido driving the system's Chromium."""

from __future__ import annotations

import struct

import plotly.graph_objects as go
import pytest
from report_fixture import build_study

from dashboards.report import SECTIONS, export_static
from hpo.run import main

#: Figures every report has, by file stem: the four figure sections and two of the tables.
FIGURES = {*SECTIONS, "trials", "paired"}


@pytest.fixture
def browser() -> None:
    from choreographer.browsers.chromium import Chromium

    if Chromium.find_browser(skip_local=False) is None:
        pytest.skip("no Chrome/Chromium for kaleido: apt-get install chromium (or set BROWSER_PATH)")


def test_report_pdf_writes_every_figure(browser, tmp_path, capsys):
    study = build_study(tmp_path / "study")
    out = tmp_path / "report"
    assert main(["report", "--storage", study.storage, "--format", "pdf", "--out", str(out), "--no-dashboard"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    written = {p.stem: p for p in (out / "figures").iterdir()}
    assert set(written) >= FIGURES and all(p.suffix == ".pdf" for p in written.values())
    for path in written.values():
        data = path.read_bytes()
        assert data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:], path


def test_png_is_1400_px_wide_at_the_figure_height(browser, tmp_path):
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]), layout={"height": 300})
    (png,) = export_static({"bars": fig}, tmp_path, "png")
    header = png.read_bytes()[:24]  # PNG signature, then the IHDR chunk: width, height
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1400, 300)


def test_missing_browser_is_one_line(tmp_path, monkeypatch, one_line_error):
    from choreographer.browsers.chromium import Chromium

    study = build_study(tmp_path / "study")
    out = tmp_path / "r"
    command = ["report", "--storage", study.storage, "--out", str(out), "--format"]
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-browser"))  # kaleido would use it first
    line = one_line_error([*command, "png"])
    assert f"browser {tmp_path / 'no-such-browser'} (BROWSER_PATH) is not an executable file" in line
    # A machine without any Chrome/Chromium: choreographer's search (the one kaleido uses) finds nothing.
    monkeypatch.delenv("BROWSER_PATH")
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: None))
    line = one_line_error([*command, "svg"])
    assert "--format svg needs a Chrome/Chromium browser for kaleido (e.g. Debian: apt-get install chromium" in line
    assert not out.exists()  # refused before anything is written


def test_an_export_that_ends_well_but_writes_nothing_is_one_error(tmp_path, monkeypatch):
    """kaleido's process ending with status 0 without the file (seen on an overloaded machine) is an error, not
    a path to a file that is not there."""
    import subprocess
    import sys
    from types import SimpleNamespace

    import dashboards.static_export as static_export
    from lgeseg.errors import UserError

    def writes_nothing(args, **kwargs):
        return subprocess.Popen([sys.executable, "-c", "pass"], **kwargs)

    fake = SimpleNamespace(Popen=writes_nothing, DEVNULL=subprocess.DEVNULL, TimeoutExpired=subprocess.TimeoutExpired)
    monkeypatch.setattr(static_export, "subprocess", fake)
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    with pytest.raises(UserError, match=r"static export to .* failed: kaleido wrote no bars.png, lines.png; run"):
        export_static({"bars": fig, "lines": fig}, tmp_path, "png")
