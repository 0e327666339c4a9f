"""The Optuna recorder, driven with stand-in Tune trials (no Ray cluster needed)."""

from __future__ import annotations

import optuna
import pytest
from conftest import drive_recorder, epoch_result, finished_result, tune_trial_stub
from conftest import grid_attempt as Attempt
from optuna.trial import TrialState

from hpo.recorder import OptunaRecorder
from hpo.rule import RetuneRule
from hpo.study import trial_config
from hpo.study_config import study_config
from lgeseg.errors import UserError

CONFIG = study_config(
    {
        "train": {"epochs": 4},
        "grid": {"l2": [1e-3]},
        "retune": {
            "check_fraction": 0.5,
            "target_accuracy": 0.9,
            "max_reruns": 1,
            "adjustments": [{"learning_rate": 1e-3}],
        },
    }
)
RULE = RetuneRule(0.5, 0.9)


@pytest.fixture()
def study(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s", direction="maximize")


def tune_trial(tmp_path, attempt: Attempt, trial_id: str = "t0"):
    return tune_trial_stub(trial_id, trial_config(CONFIG, attempt, tmp_path), "Traceback...\nValueError: boom")


def epoch(e: int, acc: float) -> dict:
    return epoch_result(e, 4, acc)


def finished(val_miou: float | None) -> dict:
    return finished_result(4, val_miou, 0.7, wall_time_s=1.5)


drive = drive_recorder


def test_complete_trial_has_params_values_and_attrs(study, tmp_path):
    recorder = OptunaRecorder(study, RULE, max_reruns=1)
    drive(
        recorder,
        tune_trial(tmp_path, Attempt(1e-3, 0)),
        [epoch(1, 0.5), epoch(2, 0.91), epoch(3, 0.93), epoch(4, 0.95), finished(0.8)],
    )
    recorder.close()
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and trial.value == 0.8
    assert trial.params == {
        "l2": 1e-3,
        "learning_rate": 1e-4,
        "batch_size": 16,
        "epochs": 4,
        "seed": 0,
        "rerun": 0,
        "architecture": "matlab-unet",
        "loss": "cross-entropy",
    }
    assert trial.intermediate_values == {1: 0.5, 2: 0.91, 3: 0.93, 4: 0.95}
    assert trial.user_attrs["test_metrics"] == {"dataset": {"MeanIoU": 0.7}}
    assert trial.user_attrs["lineage"] == {"point": "l2=0.001,seed=0", "rerun": 0, "rerun_of": None, "adjustment": None}
    assert trial.user_attrs["versions"]["optuna"] == optuna.__version__
    assert trial.user_attrs["trial_name"] == "l2=0.001_seed=0_rerun=0"
    assert {"device", "wall_time_s", "config_hash", "split_hash", "epochs_run"} <= set(trial.user_attrs)


def test_pruned_trial_and_its_rerun_lineage(study, tmp_path):
    recorder = OptunaRecorder(study, RULE, max_reruns=1)
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0)), [epoch(1, 0.5), epoch(2, 0.6)])
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0, 1), "t1"), [epoch(1, 0.92), epoch(2, 0.93), finished(0.7)])
    first, second = study.get_trials()
    assert first.state == TrialState.PRUNED
    assert first.user_attrs["retune"]["check_epoch"] == 2
    assert first.user_attrs["retune"]["replaced_by"] == "l2=0.001_seed=0_rerun=1"
    assert "0.6000 < 0.9" in first.user_attrs["retune"]["reason"]
    assert second.state == TrialState.COMPLETE
    assert second.params["learning_rate"] == 1e-3 and second.params["rerun"] == 1
    assert second.user_attrs["lineage"]["rerun_of"] == first.number
    assert second.user_attrs["lineage"]["adjustment"] == {"learning_rate": 1e-3}


def test_last_rerun_pruned_has_no_replacement(study, tmp_path):
    recorder = OptunaRecorder(study, RULE, max_reruns=1)
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0, 1)), [epoch(1, 0.5), epoch(2, 0.6)])
    assert study.get_trials()[0].user_attrs["retune"]["replaced_by"] is None


def test_failed_trial_records_the_error(study, tmp_path):
    recorder = OptunaRecorder(study, RULE, max_reruns=1)
    trial = tune_trial(tmp_path, Attempt(1e-3, 0))
    recorder.on_trial_start(0, [], trial)
    recorder.on_trial_error(0, [], trial)
    (frozen,) = study.get_trials()
    assert frozen.state == TrialState.FAIL and frozen.user_attrs["error"] == "ValueError: boom"


def test_undefined_validation_miou_is_a_failure_not_a_value(study, tmp_path):
    recorder = OptunaRecorder(study, RULE, max_reruns=1)
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0)), [epoch(1, 0.95), finished(None)])
    (frozen,) = study.get_trials()
    assert frozen.state == TrialState.FAIL and "undefined" in frozen.user_attrs["error"]


def test_interrupted_trial_is_continued_not_duplicated(study, tmp_path):
    recorder = OptunaRecorder(study, RULE, max_reruns=1)
    trial = tune_trial(tmp_path, Attempt(1e-3, 0))
    recorder.on_trial_start(0, [], trial)
    recorder.on_trial_result(0, [], trial, epoch(1, 0.92))  # then the driver dies
    resumed = OptunaRecorder(study, RULE, max_reruns=1)
    drive(
        resumed,
        tune_trial(tmp_path, Attempt(1e-3, 0, 0, optuna_number=0), "t9"),
        [epoch(2, 0.93), epoch(3, 0.94), epoch(4, 0.95), finished(0.75)],
    )
    (frozen,) = study.get_trials()
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.75
    assert frozen.intermediate_values == {1: 0.92, 2: 0.93, 3: 0.94, 4: 0.95}
    assert frozen.user_attrs["ray_trial_id"] == "t9"


class FlakyStudy:
    """Wraps a study; its method ``method`` fails ``failures`` times before it works."""

    def __init__(self, study, failures: int, method: str = "tell"):
        self._study, self.failures, self._method = study, failures, method

    def __getattr__(self, name):
        real = getattr(self._study, name)
        if name != self._method:
            return real

        def flaky(*args, **kwargs):
            if self.failures > 0:
                self.failures -= 1
                raise RuntimeError("database is locked")
            return real(*args, **kwargs)

        return flaky


def test_failed_write_is_retried(study, tmp_path):
    recorder = OptunaRecorder(FlakyStudy(study, failures=3), RULE, max_reruns=1, retries=5, retry_wait=0)
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0)), [epoch(2, 0.95), finished(0.8)])
    recorder.close()
    assert study.get_trials()[0].state == TrialState.COMPLETE


def test_write_that_keeps_failing_is_kept_and_reported(study, tmp_path, caplog):
    flaky = FlakyStudy(study, failures=100)
    recorder = OptunaRecorder(flaky, RULE, max_reruns=1, retries=2, retry_wait=0)
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0)), [epoch(2, 0.95), finished(0.8)])
    assert any("Optuna write failed" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert study.get_trials()[0].state == TrialState.RUNNING
    with pytest.raises(UserError, match=r"not recorded \(first: .*: database is locked\)"):  # with its error
        recorder.close()
    flaky.failures = 0  # storage back: the kept write goes through, nothing was dropped
    recorder.close()
    assert study.get_trials()[0].state == TrialState.COMPLETE


def test_writes_after_a_failed_creation_are_kept_in_order(study, tmp_path):
    flaky = FlakyStudy(study, failures=100, method="ask")
    recorder = OptunaRecorder(flaky, RULE, max_reruns=1, retries=1, retry_wait=0)
    drive(recorder, tune_trial(tmp_path, Attempt(1e-3, 0)), [epoch(1, 0.92), epoch(2, 0.95), finished(0.8)])
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING]  # enqueued, never asked
    flaky.failures = 0
    recorder.close()
    (trial,) = study.get_trials()  # the retried creation did not enqueue a second trial
    assert trial.state == TrialState.COMPLETE and trial.value == 0.8
    assert trial.intermediate_values == {1: 0.92, 2: 0.95}
