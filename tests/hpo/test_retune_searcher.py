"""The retune rule, the study searcher and the resume plan, without Ray running."""

from __future__ import annotations

from conftest import grid_attempt as Attempt
from conftest import grid_plan as plan_attempts
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from ray.tune.search import Searcher

from hpo.record import Attempt as RecordAttempt
from hpo.record import Status as PointStatus
from hpo.record import TrialReport
from hpo.rule import RetuneRule
from hpo.searcher import RetuneStopper
from hpo.searcher import StudySearcher as GridSearcher
from hpo.study_config import grid_configurations, replicates, study_config


def result(epoch: int, best: float, epochs: int = 180, **extra) -> dict:
    return {"epoch": epoch, "epochs": epochs, "best_val_accuracy": best, "val_accuracy": best, **extra}


def test_check_epoch_is_ceil_of_fraction():
    rule = RetuneRule(0.1, 0.9)
    assert rule.check_epoch(180) == 18
    assert rule.check_epoch(15) == 2  # ceil(1.5)
    assert rule.check_epoch(10) == 1
    assert rule.check_epoch(3) == 1
    assert RetuneRule(0.25, 0.9).check_epoch(12) == 3


def test_rule_fires_only_at_or_after_check_epoch_below_target():
    rule = RetuneRule(0.1, 0.9)
    assert not rule.fails(result(17, 0.5))  # before the check
    assert rule.fails(result(18, 0.8999))  # at the check, below target
    assert not rule.fails(result(18, 0.90))  # reached the target exactly
    assert rule.fails(result(25, 0.85))  # resumed past the check without a verdict
    assert not rule.fails(result(180, 0.5, finished=True))  # final report of a finished run
    assert not rule.fails({"val_MeanIoU": 0.5})
    stopper = RetuneStopper(rule)
    assert stopper("t", result(18, 0.5)) and not stopper("t", result(18, 0.95)) and not stopper.stop_all()


def test_searcher_hands_out_points_then_reruns_then_finishes():
    rule = RetuneRule(0.5, 0.9)
    searcher = GridSearcher(
        [Attempt(1e-3, 0), Attempt(1e-4, 0)], rule, max_reruns=1, make_config=lambda a: {"name": a.name}
    )
    assert searcher.suggest("a") == {"name": "l2=0.001_seed=0_rerun=0"}
    assert searcher.suggest("b") == {"name": "l2=0.0001_seed=0_rerun=0"}
    assert searcher.suggest("c") is None  # nothing queued, trials still running
    searcher.on_trial_complete("a", result(1, 0.5, epochs=2))  # stopped by the rule
    assert searcher.suggest("d") == {"name": "l2=0.001_seed=0_rerun=1"}
    searcher.on_trial_complete("b", result(2, 0.95, epochs=2, finished=True))
    searcher.on_trial_complete("d", result(1, 0.5, epochs=2))  # max_reruns spent: no more
    assert searcher.suggest("e") == Searcher.FINISHED


def test_searcher_ignores_errors_and_passing_trials():
    searcher = GridSearcher([Attempt(1e-3, 0)], RetuneRule(0.5, 0.9), 3, lambda a: {"name": a.name})
    searcher.suggest("a")
    searcher.on_trial_complete("a", None, error=True)
    assert searcher.suggest("b") == Searcher.FINISHED


def _frozen(number: int, l2: float, seed: int, rerun: int, state: TrialState):
    trial = create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        params={"l2": l2, "seed": seed, "rerun": rerun},
        distributions={
            "l2": FloatDistribution(1e-12, 1, log=True),
            "seed": IntDistribution(0, 10),
            "rerun": IntDistribution(0, 10),
        },
        user_attrs={"lineage": {"point": f"l2={l2:g},seed={seed}", "rerun": rerun}},
    )
    trial.number = number
    return trial


def test_plan_attempts_from_storage_records():
    config = study_config(
        {
            "seeds": [0],
            "grid": {"l2": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]},
            "retune": {"max_reruns": 1, "adjustments": [{"learning_rate": 1e-3}]},
        }
    )
    trials = [
        _frozen(0, 1e-2, 0, 0, TrialState.COMPLETE),
        _frozen(1, 1e-3, 0, 0, TrialState.PRUNED),  # -> rerun 1 owed
        _frozen(2, 1e-4, 0, 0, TrialState.PRUNED),
        _frozen(3, 1e-4, 0, 1, TrialState.PRUNED),  # reruns spent
        _frozen(4, 1e-5, 0, 0, TrialState.RUNNING),  # interrupted: continue trial 4
    ]
    plan = plan_attempts(config, trials)
    assert plan["l2=0.01,seed=0"].status == "complete" and plan["l2=0.01,seed=0"].attempt is None
    assert plan["l2=0.001,seed=0"].attempt == Attempt(1e-3, 0, 1)
    assert plan["l2=0.0001,seed=0"].status == PointStatus.NOT_CONVERGED
    assert plan["l2=1e-05,seed=0"].attempt == Attempt(1e-5, 0, 0, optuna_number=4)
    assert plan["l2=1e-06,seed=0"].attempt == Attempt(1e-6, 0, 0)
    assert plan["l2=1e-06,seed=0"].status == "pending"


def test_plan_attempts_marks_failed_points():
    config = study_config({"grid": {"l2": [1e-3]}})
    plan = plan_attempts(config, [_frozen(0, 1e-3, 0, 0, TrialState.FAIL)])
    assert plan["l2=0.001,seed=0"].status == "failed" and plan["l2=0.001,seed=0"].attempt is None


def test_an_attempt_enqueued_but_never_started_is_owed_again():
    """A driver killed between enqueue and ask leaves a WAITING trial; closing it must not fail its point."""
    import optuna

    from hpo.record import UNSTARTED, close_unstarted

    config = study_config(
        {"grid": {"l2": [1e-3]}, "retune": {"max_reruns": 1, "adjustments": [{"learning_rate": 1e-3}]}}
    )
    study = optuna.create_study(direction="maximize")
    study.add_trial(_frozen(0, 1e-3, 0, 0, TrialState.PRUNED))  # rule fired: rerun 1 owed ...
    study.enqueue_trial(
        {"l2": 1e-3, "seed": 0, "rerun": 1},  # ... enqueued, then the driver died
        user_attrs={"lineage": {"point": "l2=0.001,seed=0", "rerun": 1}},
    )
    close_unstarted(study)
    states = [(t.state, t.user_attrs.get("error")) for t in study.get_trials()]
    assert states == [(TrialState.PRUNED, None), (TrialState.FAIL, UNSTARTED)]
    plan = plan_attempts(config, study.get_trials())
    assert plan["l2=0.001,seed=0"].status == PointStatus.PENDING
    assert plan["l2=0.001,seed=0"].attempt == Attempt(1e-3, 0, 1)
    # a trial that really failed still fails its point
    study.add_trial(_frozen(2, 1e-3, 0, 1, TrialState.FAIL))
    assert plan_attempts(config, study.get_trials())["l2=0.001,seed=0"].status == PointStatus.FAILED


def test_attempt_names():
    attempt = Attempt(5e-5, 2, 1)
    assert attempt.name == "l2=5e-05_seed=2_rerun=1"
    assert attempt.point == "l2=5e-05,seed=2"
    assert attempt.next() == Attempt(5e-5, 2, 2)


def test_reruns_count_the_reruns_that_ran():
    config = study_config(
        {"grid": {"l2": [1e-3, 1e-4, 1e-5]}, "retune": {"max_reruns": 1, "adjustments": [{"learning_rate": 1e-3}]}}
    )
    plan = plan_attempts(
        config,
        [
            _frozen(0, 1e-3, 0, 0, TrialState.PRUNED),
            _frozen(1, 1e-3, 0, 1, TrialState.PRUNED),
            _frozen(2, 1e-4, 0, 0, TrialState.PRUNED),
            _frozen(3, 1e-4, 0, 1, TrialState.COMPLETE),
        ],
    )
    assert plan["l2=0.001,seed=0"].status == PointStatus.NOT_CONVERGED and plan["l2=0.001,seed=0"].reruns == 1
    assert plan["l2=0.0001,seed=0"].status == PointStatus.COMPLETE and plan["l2=0.0001,seed=0"].reruns == 1
    assert plan["l2=1e-05,seed=0"].status == PointStatus.PENDING and plan["l2=1e-05,seed=0"].reruns == 0


def test_attempt_names_link_reruns():
    attempt = Attempt(5e-4, 0, 1)
    assert attempt.next().name == "l2=0.0005_seed=0_rerun=2" and attempt.previous() == Attempt(5e-4, 0, 0)
    assert Attempt(5e-4, 0).previous() is None
    assert RecordAttempt.from_config(Attempt(5e-4, 0, 1, 7).to_config()) == Attempt(5e-4, 0, 1, 7)


def test_grid_axes_multiply_the_points_and_join_names():
    """Three L2 values x two architectures x one seed = six points, each named by its architecture."""
    config = study_config({"grid": {"l2": [1e-2, 1e-3, 1e-4], "architecture": ["matlab-unet", "monai-unet"]}})
    points = [RecordAttempt(c, r) for c in grid_configurations(config) for r in replicates(config)]
    monai = {"model.architecture": "monai-unet"}
    assert len(points) == 6 and len({p.point for p in points}) == 6
    assert points[1] == Attempt(1e-2, 0, **monai)
    assert points[1].name == "l2=0.01_seed=0_architecture=monai-unet_rerun=0"
    assert points[1].point == "l2=0.01,seed=0,architecture=monai-unet"
    assert points[1].next().configuration == points[1].configuration
    # a plain L2 grid keeps its names (studies recorded before the axes resume unchanged)
    assert list(plan_attempts(study_config({"grid": {"l2": [1e-3]}}), [])) == ["l2=0.001,seed=0"]
    # the storage is read per point: a pruned monai-unet point gets its rerun with the architecture kept
    pruned = _frozen(0, 1e-3, 0, 0, TrialState.PRUNED)
    pruned.user_attrs["lineage"]["point"] = "l2=0.001,seed=0,architecture=monai-unet"
    plan = plan_attempts({**config, "retune": {**config["retune"], "max_reruns": 1}}, [pruned])
    assert plan["l2=0.001,seed=0,architecture=monai-unet"].attempt == Attempt(1e-3, 0, 1, **monai)
    assert plan["l2=0.001,seed=0,architecture=matlab-unet"].status == "pending"
    assert RecordAttempt.from_config(points[1].to_config()) == points[1]


def test_trial_report_reads_nested_and_flattened_results():
    """Tune hands the searcher a flattened result and the recorder a nested one: both read the same."""
    nested = {"epoch": 3, "epochs": 3, "val_accuracy": 0.9, "best_val_accuracy": 0.9, "finished": True}
    nested["test_metrics"] = {"dataset": {"MeanIoU": 0.7}}
    flat = {**{k: v for k, v in nested.items() if k != "test_metrics"}, "test_metrics/dataset/MeanIoU": 0.7}
    assert TrialReport.from_result(nested) == TrialReport.from_result(flat)
    assert TrialReport.from_result(flat).test_MeanIoU == 0.7
    assert TrialReport.from_result({"val_MeanIoU": 0.5}) is None
    report = TrialReport(epoch=1, epochs=2, val_accuracy=0.5, best_val_accuracy=0.5)
    assert TrialReport.from_result(report.to_result()) == report
