"""Cross-validation folds as a replicate axis of a study: names, run configs, params, the resume plan, the
study's split fingerprint over every fold, and the one-line errors of a bad fold setup (nothing written)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState, create_trial

from hpo.record import (
    ATTR,
    Attempt,
    Outcome,
    Replicate,
    Status,
    attempt_params,
    configuration_outcome,
    plan_study,
)
from hpo.study import describe_data
from hpo.study_config import grid_configurations, replicates, run_config_of, study_config
from lgeseg.data import load_dataset, split_from_config
from lgeseg.errors import ConfigError, DataError
from lgeseg.fingerprint import split_difference


def grid(data=None, **split) -> dict:
    return study_config(
        {
            "name": "cv",
            "data": None if data is None else str(data),
            "seeds": [0, 1],
            "split": split,
            "model": {"width": 4, "depth": 2},
            "train": {"epochs": 1, "batch_size": 2},  # fits a fold's training split of 6 images
            "retune": {"max_reruns": 0, "adjustments": []},
            "grid": {"l2": [5e-3, 5e-5]},
        }
    )


def test_folds_multiply_the_seeds_and_fold_less_names_stay_as_they_were():
    assert replicates(grid()) == [Replicate(0), Replicate(1)]
    assert replicates(grid(folds=3)) == [Replicate(s, f) for s in (0, 1) for f in (0, 1, 2)]
    configuration = grid_configurations(grid(folds=3))[0]
    assert Attempt(configuration, Replicate(1, 2)).name == "l2=0.005_seed=1_fold=2_rerun=0"
    assert Attempt(configuration, Replicate(1, 2)).point == "l2=0.005,seed=1,fold=2"
    assert Attempt(configuration, Replicate(1)).name == "l2=0.005_seed=1_rerun=0"  # as before folds
    assert Attempt(configuration, Replicate(1)).point == "l2=0.005,seed=1"


def test_a_fold_replicate_sets_seed_and_fold_of_the_run_and_its_params():
    config = grid(folds=3, stratify="pathology")
    run = run_config_of(config, {"train.l2": 5e-3}, Replicate(1, 2))
    assert run["seed"] == 1
    assert run["split"] == {**config["split"], "fold": 2}
    assert attempt_params(run, 0)["fold"] == 2
    plain = run_config_of(grid(), {"train.l2": 5e-3}, Replicate(1))
    assert "fold" not in attempt_params(plain, 0)  # fold-less studies record the params they always did


def test_a_study_config_may_not_pin_one_fold():
    with pytest.raises(ConfigError, match="split.fold.*leave split.fold out"):
        grid(folds=3, fold=1)


def test_configuration_outcome_is_the_mean_validation_value_over_seeds_and_folds():
    outcomes = {
        Replicate(0, 0): Outcome(Status.COMPLETE, 1, 0, 0.5, test_MeanIoU=0.9),
        Replicate(0, 1): Outcome(Status.COMPLETE, 2, 0, 0.7, test_MeanIoU=0.9),
        Replicate(1, 0): Outcome(Status.COMPLETE, 3, 0, 0.6, test_MeanIoU=0.9),
    }
    state, value, attrs = configuration_outcome(outcomes)
    assert state == TrialState.COMPLETE
    assert value == pytest.approx(0.6)  # (0.5 + 0.7 + 0.6) / 3, never the test 0.9
    assert attrs["n_replicates"] == 3 and attrs["n_seeds"] == 2
    assert [(r["seed"], r["fold"]) for r in attrs[ATTR.REPLICATES]] == [(0, 0), (0, 1), (1, 0)]


def _attempt_trial(point: str, state: TrialState, number: int):
    value = 0.5 if state == TrialState.COMPLETE else None
    return create_trial(
        state=state,
        value=value,
        params={},
        distributions={},
        user_attrs={ATTR.LINEAGE: {"point": point, "rerun": 0}},
    )


def test_the_resume_plan_matches_attempts_to_their_fold():
    config = grid(folds=2)
    trials = [
        _attempt_trial("l2=0.005,seed=0,fold=0", TrialState.COMPLETE, 0),
        _attempt_trial("l2=0.005,seed=0,fold=1", TrialState.RUNNING, 1),
    ]
    plans = plan_study(grid_configurations(config), replicates(config), trials, 0)
    first = plans[0].replicates
    assert first[Replicate(0, 0)].status == Status.COMPLETE
    assert first[Replicate(0, 1)].status == Status.INTERRUPTED
    assert first[Replicate(1, 0)].status == Status.PENDING
    assert sum(len(p.owed) for p in plans) == 2 * 4 - 1  # everything but the complete fold


def test_the_study_split_covers_every_fold(make_dataset_dir):
    data = make_dataset_dir(n_patients=6, slices=2)
    config = grid(data, folds=3)
    split = describe_data(config)["split"]
    dataset = load_dataset(data)
    folds = [split_from_config(dataset, {**config["split"], "fold": f}).to_json(dataset) for f in range(3)]
    assert split["fold_splits"] == folds
    assert split["folds"] == 3
    assert sorted(f for part in folds for f in part["test"]) == sorted(dataset.files)  # each image tested once
    other = describe_data(grid(data, folds=3, seed=1))["split"]
    assert other["hash"] != split["hash"]
    assert split_difference(split, other).startswith("fold ")
    assert split_difference(split, describe_data(grid(data, folds=2))["split"]).startswith(
        "the cross-validation fold changed"
    )


def test_too_many_folds_or_a_missing_stratify_column_fail_in_the_driver(make_dataset_dir):
    data = make_dataset_dir(n_patients=4, slices=2)
    with pytest.raises(DataError, match="split.folds is 5 but there are only 4 patients"):
        describe_data(grid(data, folds=5))
    with pytest.raises(DataError, match="no column 'pathology'"):
        describe_data(grid(data, folds=2, stratify="pathology"))


@pytest.mark.parametrize(
    "setting, words",
    [("split.folds=9", "split.folds is 9 but there are only 4 patients"), ("split.stratify=pathology", "pathology")],
)
def test_bad_folds_are_one_error_line_and_nothing_is_written(
    make_dataset_dir, tmp_path, one_line_error, setting, words
):
    data = make_dataset_dir(n_patients=4, slices=2)
    out = tmp_path / "study"
    argv = ["grid", "--data", str(data), "--out", str(out), "--set", "model.width=4", "--set", "split.folds=2"]
    line = one_line_error([*argv, "--set", setting])
    assert words in line
    assert not out.exists()
