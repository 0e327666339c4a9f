"""The search report: slices, contours, importance and the L2 sensitivity curve, on a hand-made record."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances
from optuna.trial import create_trial

from dashboards.report import build_report
from dashboards.search import NEARBY_DECADES, PAPER_L2, importance_figure, sensitivity_figure, slice_figure
from lgeseg.errors import UserError

SPACE = {
    "train.l2": {"low": 1e-6, "high": 1e-1, "log": True},
    "train.learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
    "model.width": {"choices": [4, 8]},
}
DISTS = {
    "train.l2": FloatDistribution(1e-6, 1e-1, log=True),
    "train.learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "model.width": CategoricalDistribution([4, 8]),
}


@pytest.fixture()
def study(tmp_path):
    """A search record: 12 configurations whose value depends mostly on L2, plus one attempt trial each."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name="s", direction="maximize")
    study.set_user_attr(
        "config",
        {"name": "s", "search": {"sampler": "tpe", "n_trials": 12, "seeds_per_trial": 1, "space": SPACE}, "retune": {}},
    )
    study.set_user_attr("out_dir", str(tmp_path))
    rng = np.random.default_rng(0)
    for index in range(12):
        l2 = float(10 ** rng.uniform(-6, -1))
        params = {
            "train.l2": l2,
            "train.learning_rate": float(10 ** rng.uniform(-5, -2)),
            "model.width": int(rng.choice([4, 8])),
        }
        value = 0.8 - 0.03 * (math.log10(l2) + 3.5) ** 2 + rng.normal(0, 0.005)
        study.add_trial(
            create_trial(
                params=params,
                distributions=DISTS,
                value=value,
                user_attrs={
                    "kind": "configuration",
                    "configuration": index,
                    "sampler_trial": index,
                    "n_seeds": 1,
                    "value_std": None,
                    "test_MeanIoU_mean": value - 0.02,
                    "reruns": 0,
                },
            )
        )
        study.add_trial(
            create_trial(
                params={
                    "l2": l2,
                    "learning_rate": params["train.learning_rate"],
                    "batch_size": 16,
                    "epochs": 2,
                    "seed": 0,
                    "rerun": 0,
                },
                distributions={
                    "l2": FloatDistribution(1e-12, 1.0, log=True),
                    "learning_rate": FloatDistribution(1e-10, 10.0, log=True),
                    "batch_size": optuna.distributions.IntDistribution(1, 65536),
                    "epochs": optuna.distributions.IntDistribution(1, 1_000_000),
                    "seed": optuna.distributions.IntDistribution(0, 2**31 - 1),
                    "rerun": optuna.distributions.IntDistribution(0, 1000),
                },
                value=value + 0.3,
                intermediate_values={1: 0.9, 2: 0.95},  # attempts must not leak into the figures
                user_attrs={
                    "trial_name": f"c{index:03d}_seed=0_rerun=0",
                    "lineage": {
                        "point": f"c{index:03d},seed=0",
                        "rerun": 0,
                        "rerun_of": None,
                        "adjustment": None,
                        "configuration": 2 * index,
                    },
                },
            )
        )
    return study


def test_importance_figure_shows_optunas_importances(study):
    params = list(SPACE)
    fig = importance_figure(study, params)
    evaluators = {"fANOVA": FanovaImportanceEvaluator(seed=0), "PED-ANOVA": PedAnovaImportanceEvaluator()}
    for trace in fig.data:
        expected = get_param_importances(study, evaluator=evaluators[trace.name], params=params)
        drawn = dict(zip(trace.y, trace.x))
        assert drawn.keys() == expected.keys()
        assert all(drawn[k] == pytest.approx(expected[k]) for k in expected)
    assert {t.name for t in fig.data} == set(evaluators)
    fanova = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), params=params)
    assert max(fanova, key=fanova.get) == "train.l2"  # the value was built from L2


def test_slice_plot_has_log_axes_where_the_space_is_log_and_only_configurations(study):
    fig = slice_figure(study, list(SPACE))
    axes = {fig.layout[name].title.text: fig.layout[name].type for name in ("xaxis", "xaxis2", "xaxis3")}
    assert axes == {"model.width": "category", "train.l2": "log", "train.learning_rate": "log"}
    configurations = sorted(t.value for t in study.get_trials() if t.user_attrs.get("kind") == "configuration")
    for trace in fig.data:  # one panel per searched key: every configuration, none of the attempts
        if trace.y is not None and len(trace.y):
            assert sorted(trace.y) == pytest.approx(configurations)


def test_sensitivity_curve_marks_the_papers_l2_values(study):
    fig = sensitivity_figure(study)
    assert fig.layout.xaxis.type == "log"
    points = next(t for t in fig.data if t.meta == {"kind": "points", "series": "validation MeanIoU"})
    curve = next(t for t in fig.data if t.meta == {"kind": "curve", "series": "validation MeanIoU"})
    paper = next(t for t in fig.data if t.meta["kind"] == "paper" and t.meta["series"] == "validation MeanIoU")
    assert len(points.x) == 12 and "smoothing spline" in curve.name
    assert list(paper.x) == [v for v in PAPER_L2 if curve.x[0] <= v <= curve.x[-1]]
    # the marks sit on the curve: its value at each paper L2 (linear in log10 L2 between grid points)
    for x, y in zip(paper.x, paper.y):
        assert y == pytest.approx(np.interp(math.log10(x), np.log10(curve.x), curve.y))
    # a mark with no configuration sampled near it is labelled as the curve's estimate, naming the nearest one
    sampled = np.log10(np.asarray(points.x))
    for x, estimate, label in zip(paper.x, paper.meta["estimate"], paper.customdata):
        assert estimate == bool(np.min(np.abs(sampled - math.log10(x))) > NEARBY_DECADES)
        assert ("curve's estimate" in label) == estimate and "nearest sampled c" in label
    # the spline follows the quadratic the data were drawn from (peak near L2 = 10^-3.5)
    best = curve.x[int(np.argmax(curve.y))]
    assert 10**-4.5 < best < 10**-2.5


def test_report_of_a_search_study(study, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.copy_study(from_study_name="s", from_storage=study._storage, to_storage=url)
    study = optuna.load_study(study_name="s", storage=url)
    sampler = optuna.create_study(storage=url, study_name="s/sampler")
    sampler.set_user_attr("record_study", "s")
    path = build_report(url, None, tmp_path)  # the sampler study is not a second study to choose from
    page = path.read_text()
    for heading in (
        "Sensitivity to L2 (continuous)",
        "Objective against each searched hyperparameter",
        "Pairs of hyperparameters",
        "Hyperparameter importance",
        "Configurations",
    ):
        assert heading in page
    assert "fANOVA importance: train.l2" in page  # the summary ranks L2 first
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    saved = get_plotly_graph_objects(study._storage.get_study_system_attrs(study._study_id))
    assert {"report-importance", "report-slices", "report-contours", "report-sensitivity"} <= set(saved)


def test_a_search_study_refuses_what_its_report_has_not_and_its_sampler_study_is_no_report(study, tmp_path):
    """``--by`` and ``--metric`` would be ignored by a search's page (no strata, no verdicts): refused; the
    sampler study holds configuration values only: report (and predict, export: the same opener) name the record."""
    from hpo.storage import StorageError

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.copy_study(from_study_name="s", from_storage=study._storage, to_storage=url)
    sampler = optuna.create_study(storage=url, study_name="s/sampler")
    sampler.set_user_attr("record_study", "s")
    for options, named in (({"by": ["pathology"]}, "--by"), ({"metric": "MeanIoU"}, "--metric")):
        with pytest.raises(UserError, match=rf"^{named}: study 's' is a search; its report has no strata or verdicts"):
            build_report(url, "s", tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
    with pytest.raises(
        StorageError, match=r"study 's/sampler' in .* is the sampler study of study 's': give --study-name s$"
    ):
        build_report(url, "s/sampler", tmp_path / "out")
