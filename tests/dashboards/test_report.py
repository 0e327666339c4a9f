"""The ``report`` command and the ``dashboards`` package on a small hand-made grid study (no training).

Figures are checked against the numbers stored in the Optuna study and against direct numpy / scipy
computations, not just for existing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import plotly.offline
import pytest
from report_fixture import L2_VALUES, SEEDS, StudyFixture, build_study
from scipy import stats as sps

from dashboards.figures import (
    FIGURE1_CLASS_METRICS,
    check_epochs,
    figure1,
    replacement_of,
    sensitivity,
    training_curves,
)
from dashboards.load import StudyRecord, load_study
from dashboards.masks import difference_map, figure2, select_images
from dashboards.report import build_report
from dashboards.stats import PAIRED_METRICS, UnitValues, compare, holm, paired_comparisons, study_units, wilcoxon_p
from dashboards.written_summary import summary_lines
from hpo.run import main as cli
from hpo.storage import mask_url, open_study
from lgeseg.metrics import DATASET_METRICS

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> StudyFixture:
    return build_study(tmp_path_factory.mktemp("study"), running=True)


@pytest.fixture(scope="module")
def record(study: StudyFixture) -> StudyRecord:
    return load_study(open_study(study.storage, study.name), study.storage)


@pytest.fixture(scope="module")
def report(study: StudyFixture) -> Path:
    return build_report(study.storage, study.name)


def stored_complete(study: StudyFixture) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials as Optuna stores them (independent of dashboards.load)."""
    loaded = optuna.load_study(study_name=study.name, storage=study.storage)
    return [t for t in loaded.trials if t.state == optuna.trial.TrialState.COMPLETE]


def stored_values(study: StudyFixture, metric: str, cls: str | None = None) -> dict[float, list[float]]:
    """Per L2, the stored test metric of each seed's COMPLETE trial."""
    out: dict[float, list[float]] = {}
    for trial in stored_complete(study):
        metrics = trial.user_attrs["test_metrics"]
        value = metrics["dataset"][metric] if cls is None else metrics["class"][cls][metric]
        out.setdefault(trial.params["l2"], []).append(value)
    return out


def test_figure1_bars_are_seed_means_of_stored_metrics(study: StudyFixture, record: StudyRecord) -> None:
    fig = figure1(record)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == (len(record.classes) + 1) * len(L2_VALUES)
    assert "mean over 2 seeds" in fig.layout.title.text
    for bar in bars:
        region, l2 = bar.meta["region"], bar.meta["l2"]
        metrics = DATASET_METRICS if region == "dataset" else FIGURE1_CLASS_METRICS
        assert list(bar.x) == list(metrics)
        for metric, height, text in zip(bar.x, bar.y, bar.text):
            values = stored_values(study, metric, None if region == "dataset" else region)[l2]
            assert len(values) == len(SEEDS)
            assert height == pytest.approx(np.mean(values))
            assert text == f"{np.mean(values):.3f}"
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["(a) region1", "(b) region2", "(c) region3", "(d) Data set"]


def test_sensitivity_points_means_and_t_intervals(study: StudyFixture, record: StudyRecord) -> None:
    fig = sensitivity(record)
    points = {t.meta["panel"]: t for t in fig.data if t.meta["kind"] == "points"}
    means = {t.meta["panel"]: t for t in fig.data if t.meta["kind"] == "mean"}
    assert set(points) == set(DATASET_METRICS) | {f"{c} {m}" for c in record.classes for m in ("IoU", "MeanBFScore")}
    for panel, trace in points.items():
        cls, _, metric = panel.rpartition(" ")
        stored = stored_values(study, metric, cls or None)
        got: dict[float, list[float]] = {}
        for x, y in zip(trace.x, trace.y):
            got.setdefault(x, []).append(y)
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in stored.items()}
        mean = means[panel]
        for x, y, up, down in zip(mean.x, mean.y, mean.error_y.array, mean.error_y.arrayminus):
            values = np.asarray(stored[x])
            half = sps.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            assert y == pytest.approx(values.mean())
            assert up == pytest.approx(half) and down == pytest.approx(half)
    assert all(fig.layout[k].type == "log" for k in fig.layout if k.startswith("xaxis"))


def test_training_curves_dash_pruned_and_link_rerun(study: StudyFixture, record: StudyRecord) -> None:
    fig = training_curves(record)
    assert len(fig.data) == len(record.trials) == 2 * 3 + 2  # six complete, one pruned, one running
    by_number = {t.meta["number"]: t for t in fig.data}
    pruned = by_number[study.pruned_number]
    assert pruned.line.dash == "dash"
    assert f"→ #{study.replacement_number}" in pruned.name
    assert f"replaced by #{study.replacement_number}" in pruned.text
    assert f"rerun of #{study.pruned_number}" in by_number[study.replacement_number].text
    assert all(t.line.dash == "solid" for n, t in by_number.items() if n != study.pruned_number)
    running = next(t for t in fig.data if t.meta["state"] == "RUNNING")
    assert list(running.x) == [1, 2]
    shapes = fig.layout.shapes
    assert any(s.x0 == s.x1 == 3 for s in shapes)  # ceil(0.5 * 6)
    assert any(s.y0 == s.y1 == 0.8 for s in shapes)


def test_replacing_trial_is_found_by_the_name_the_recorder_writes(study: StudyFixture, record: StudyRecord) -> None:
    pruned = record.by_number(study.pruned_number)
    assert pruned is not None and pruned.retune["replaced_by"] == record.by_number(study.replacement_number).name
    unlinked = dataclasses.replace(record, trials=[dataclasses.replace(t, lineage={}) for t in record.trials])
    found = replacement_of(unlinked, unlinked.by_number(study.pruned_number))
    assert found is not None and found.number == study.replacement_number  # by replaced_by alone


def test_check_epoch_line_is_the_rules_check_epoch(record: StudyRecord) -> None:
    config = {**record.config, "retune": {**record.config["retune"], "check_fraction": 0.07}}
    trials = [dataclasses.replace(t, epochs=100) for t in record.trials]
    assert check_epochs(dataclasses.replace(record, config=config, trials=trials)) == [7]  # 0.07 * 100 = 7.000...01


def test_figure2_selection_and_difference_counts(study: StudyFixture, record: StudyRecord) -> None:
    per_file = {
        f: np.mean(
            [
                np.mean([next(r["MeanIoU"] for r in study.metrics[(l2, s)]["images"] if r["file"] == f) for s in SEEDS])
                for l2 in L2_VALUES
            ]
        )
        for f in study.files
    }
    ranked = sorted(study.files, key=lambda f: (per_file[f], f))
    chosen = select_images(record)
    assert chosen[0] == (ranked[-1], "best") and chosen[-1] == (ranked[0], "worst")
    assert chosen[1] == (ranked[len(ranked) // 2], "median")

    fig = figure2(record)
    diffs = [t for t in fig.data if t.meta["kind"] == "difference"]
    assert len(diffs) == len(chosen) * len(L2_VALUES)
    for trace in diffs:
        pred, truth = study.preds[(trace.meta["l2"], min(SEEDS))][trace.meta["file"]], study.truth[trace.meta["file"]]
        z = np.asarray(trace.z)
        assert np.count_nonzero(z) == np.count_nonzero(pred != truth)
        for k in range(3):
            assert np.count_nonzero(z == k + 1) == np.count_nonzero((pred != truth) & (truth == k))
    manual = [t for t in fig.data if t.meta["kind"] == "mask" and t.meta["source"] == "manual"]
    for trace in manual:
        assert np.array_equal(np.asarray(trace.z), np.asarray([255, 128, 0])[study.truth[trace.meta["file"]]])


def test_difference_map_values() -> None:
    truth = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    pred = np.array([[0, 2], [2, 0]], dtype=np.uint8)
    assert difference_map(pred, truth).tolist() == [[0, 2], [0, 3]]


def test_paired_comparisons_match_scipy(study: StudyFixture, record: StudyRecord) -> None:
    comparisons = paired_comparisons(record)  # no manifest in the fixture: per-slice analysis
    assert len(comparisons) == len(PAIRED_METRICS) * 3  # three pairs of L2 values per metric
    for c in comparisons:

        def per_image(l2: float, metric: str = c.metric) -> dict[str, float]:
            rows = [{r["file"]: r[metric] for r in study.metrics[(l2, s)]["images"]} for s in SEEDS]
            return {f: float(np.mean([row[f] for row in rows])) for f in study.files}

        a, b = per_image(c.l2_a), per_image(c.l2_b)
        diffs = np.asarray([a[f] - b[f] for f in sorted(study.files)])
        assert c.l2_a < c.l2_b and c.n == c.n_slices == len(study.files) and c.unit == "slice"
        assert c.median_diff == pytest.approx(np.median(diffs))
        assert c.p_value == pytest.approx(sps.wilcoxon(diffs).pvalue)
        boot = sps.bootstrap((diffs,), np.median, method="percentile", rng=np.random.default_rng(0))
        assert (c.ci_low, c.ci_high) == pytest.approx(tuple(boot.confidence_interval))
    assert [c.p_holm for c in comparisons] == pytest.approx(holm([c.p_value for c in comparisons]))


def test_paired_degenerate_cases() -> None:
    def units(values: dict[str, float]) -> UnitValues:
        return UnitValues("slice", values, len(values), 0)

    same = {"a.png": 0.5, "b.png": 0.7, "c.png": math.nan}
    result = compare("MeanIoU", 1e-4, 1e-3, units(same), units(dict(same)))
    assert (result.n, result.median_diff, result.p_value) == (2, 0.0, 1.0)
    empty = compare("MeanIoU", 1e-4, 1e-3, units({"a.png": 0.5}), units({"b.png": 0.5}))
    assert empty.n == 0 and math.isnan(empty.p_value) and math.isnan(empty.ci_low)
    assert wilcoxon_p(np.zeros(4)) == 1.0


def test_summary_names_winner_significance_and_synthetic(record: StudyRecord) -> None:
    units = study_units(record)
    lines = summary_lines(record, paired_comparisons(record), units)
    text = "\n".join(lines)
    assert "SYNTHETIC" in lines[0]
    assert "MeanIoU: best L2=5e-05" in text and "runner-up L2=0.0005" in text
    assert "Per slice (patients unknown) over 6 slices" in text and "per-slice analysis" in text
    assert "still running" in text
    real = dataclasses.replace(record, synthetic=False)
    assert "SYNTHETIC" not in "\n".join(summary_lines(real, paired_comparisons(real), units))


def test_report_html_is_self_contained(study: StudyFixture, report: Path) -> None:
    assert report == study.out_dir / "report.html"
    page = report.read_text()
    assert page.count(plotly.offline.get_plotlyjs()[:500]) == 1
    assert '<script src="http' not in page
    assert re.search(r"<script[^>]*\ssrc=", page) is None  # every script inline: opens without a network
    for heading in ("Figure 1", "Sensitivity", "Training curves", "Figure 2", "All trials", "Paired comparisons"):
        assert heading in page
    assert "RUNNING" in page and "PRUNED" in page


def test_figures_saved_for_optuna_dashboard(study: StudyFixture, report: Path) -> None:
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    loaded = optuna.load_study(study_name=study.name, storage=study.storage)
    graphs = get_plotly_graph_objects(loaded._storage.get_study_system_attrs(loaded._study_id))
    assert {
        "report-figure1",
        "report-sensitivity",
        "report-curves",
        "report-figure2",
        "report-trials",
        "report-paired",
    } <= set(graphs)


def test_report_on_study_that_just_started(tmp_path: Path) -> None:
    fx = build_study(tmp_path, running=True, finished=False)
    path = build_report(fx.storage, fx.name, save_to_dashboard=False)
    page = path.read_text()
    assert "No finished trial yet." in page and "No trial has finished yet" in page
    record = load_study(open_study(fx.storage, fx.name), fx.storage)
    assert len(training_curves(record).data) == 1


def test_cli_writes_report_to_out(study: StudyFixture, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["report", "--storage", study.storage, "--out", str(tmp_path), "--no-dashboard"]) == 0
    assert (tmp_path / "report.html").is_file()
    assert str(tmp_path / "report.html") in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--study-name", "nope"], "file runs/nope/study.db not found"),
        (["--storage", "sqlite:///{tmp}/missing.db"], "missing.db not found"),
        (["--storage", "{storage}", "--study-name", "other"], "no study 'other'"),
        (["--storage", "postgresql://alice:s3cret@127.0.0.1:9/x"], "postgresql://alice:***@"),
    ],
)
def test_cli_errors_are_one_line(
    args: list[str],
    expected: str,
    study: StudyFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    args = [a.format(tmp=tmp_path, storage=study.storage) for a in args]
    assert cli(["report", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err
    assert "s3cret" not in err
    assert not (tmp_path / "missing.db").exists()


def test_static_format_without_kaleido_says_what_to_install(study: StudyFixture, capsys: pytest.CaptureFixture) -> None:
    if importlib.util.find_spec("kaleido") is not None:
        pytest.skip("kaleido is installed")
    assert cli(["report", "--storage", study.storage, "--format", "png"]) == 2
    err = capsys.readouterr().err
    assert "pip install kaleido" in err and err.count("\n") == 1


def test_mask_url_hides_password() -> None:
    assert mask_url("mysql+pymysql://u:p%40ss@host/db") == "mysql+pymysql://u:***@host/db"
    assert mask_url("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in result.stderr.splitlines() if "Uncaught" in line or "ERROR:CONSOLE" in line]
    assert console == []
    assert result.stdout.count('class="main-svg"') >= 4  # plotly.js ran and drew the figures
