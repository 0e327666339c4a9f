"""``retune.check_fraction: 0`` switches the retune rule off, as the README says (it used to be refused)."""

from __future__ import annotations

import pytest
from conftest import tiny_study
from optuna.trial import TrialState
from study_driver import sqlite_study as load

from hpo.rule import RetuneRule
from hpo.searcher import RetuneStopper
from hpo.study import run_study
from hpo.study_config import study_config
from lgeseg.errors import ConfigError


def _epoch(epoch: int, best: float, epochs: int = 10) -> dict:
    return {"epoch": epoch, "epochs": epochs, "best_val_accuracy": best}


def test_zero_is_accepted_and_never_fires():
    config = study_config({"retune": {"check_fraction": 0, "target_accuracy": 0.99}})
    rule = RetuneRule.from_config(config["retune"])
    assert not rule.enabled
    stopper = RetuneStopper(rule)
    assert not any(rule.fails(_epoch(e, 0.0)) or stopper("t", _epoch(e, 0.0)) for e in range(1, 11))
    on = RetuneRule(0.1, 0.99)  # the same trial with the rule on: stopped after epoch 1 of 10
    assert on.enabled and on.fails(_epoch(1, 0.0)) and not on.fails(_epoch(1, 0.995))


@pytest.mark.parametrize(
    "value, match",
    [(-0.1, r"must be in \[0, 1\]"), (1.5, r"must be in \[0, 1\]"), (float("nan"), r"must be a number, got nan")],
)
def test_values_outside_0_to_1_are_still_refused(value, match):
    with pytest.raises(ConfigError, match=r"retune\.check_fraction' " + match):
        study_config({"retune": {"check_fraction": value}})


@pytest.mark.slow
def test_a_grid_with_the_rule_off_runs_every_trial_to_the_end(ray_cluster, tmp_path):
    from lgeseg.phantom import generate_phantom

    data_dir = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    # target 0.999 stops every trial at its check epoch when the rule is on (test_grid's retune test)
    config = tiny_study(data_dir, grid={"l2": [5e-4]}, retune={"check_fraction": 0, "target_accuracy": 0.999})
    result = run_study(config, out_dir=tmp_path / "study")
    trials = load(tmp_path / "study").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE]
    assert trials[0].user_attrs["epochs_run"] == 2 and result.rows[0]["status"] == "complete"
