"""A study whose attempts would carry a value its record cannot store is refused before anything runs.

Every attempt trial is recorded with the wide distributions of :data:`hpo.record.DISTRIBUTIONS` (``l2`` on
a log scale from 1e-12 to 1, ...). Optuna cannot store a value its distribution cannot represent (``l2 = 0``
on a log scale raises), so such a study used to train its trials and then fail to record them; a value
outside the bounds it stores only with a warning, leaving params that contradict their distributions.
:func:`hpo.study_config.check_recordable` refuses it before a driver (or ``record``) writes anything, naming
the key, from wherever the value comes; ``train`` alone records nothing and takes any valid run value.
"""

from __future__ import annotations

import re

import optuna
import pytest

from hpo.record import DISTRIBUTIONS, attempt_params
from hpo.study_config import check_recordable, replicates, run_config_of, space, study_config
from lgeseg.errors import ConfigError

SEARCH = "study_configs/paper-l2-search.yaml"


def test_the_record_cannot_store_what_is_refused():
    """The premise, by hand: the record's l2 distribution takes neither 0 nor 2; its bounds it takes."""
    dist = DISTRIBUTIONS["l2"]
    with pytest.raises(ValueError):
        dist.to_internal_repr(0.0)
    assert not dist._contains(dist.to_internal_repr(2.0))
    assert dist._contains(dist.to_internal_repr(1e-12)) and dist._contains(dist.to_internal_repr(1.0))


@pytest.mark.parametrize(
    ("values", "key", "shown"),
    [
        ({"search": {"space": {"train.l2": {"choices": [0.0, 1e-3]}}}}, "search.space.train.l2", "0.0"),
        ({"search": {"space": {"train.l2": {"low": 1e-6, "high": 2.0, "log": True}}}}, "search.space.train.l2", "2.0"),
        ({"search": {"space": {"train.l2": {"low": 0.0, "high": 0.1}}}}, "search.space.train.l2", "0.0"),
        ({"search": {"space": {"train.epochs": {"low": 10, "high": 20}}}, "train": {"l2": 0.0}}, "train.l2", "0.0"),
        (
            {"search": {"space": {"train.learning_rate": {"low": 1e-3, "high": 2e6}}}},
            "search.space.train.learning_rate",
            "2000000.0",
        ),
        (
            {"search": {"space": {"train.batch_size": {"low": 1, "high": 70000}}}},
            "search.space.train.batch_size",
            "70000",
        ),
        ({"grid": {"l2": [5e-4, 1e-13]}}, "grid.l2", "1e-13"),
        ({"grid": {"l2": [0.0]}}, "grid.l2", "0.0"),
        ({"grid": {"l2": [1.5]}}, "grid.l2", "1.5"),
        ({"train": {"learning_rate": 2e6}}, "train.learning_rate", "2000000.0"),
        (
            {"retune": {"adjustments": [{"learning_rate": 5e6}, {"learning_rate": 1e-5}, {"batch_size": 8}]}},
            "retune.adjustments[0].learning_rate",
            "5000000.0",
        ),
        ({"seeds": [0, 2**31]}, "seeds", str(2**31)),
        (
            {"search": {"space": {"train.l2": {"low": 1e-6, "high": 0.1}}, "seeds_per_trial": 2**31 + 1}},
            "search.seeds_per_trial",
            str(2**31 + 1),
        ),
        ({"split": {"folds": 1002}}, "split.folds", "1002"),
    ],
)
def test_a_value_the_record_cannot_hold_is_refused_naming_its_key(values, key, shown):
    with pytest.raises(
        ConfigError, match=re.escape(f"config key '{key}': {shown} is outside what the study record holds")
    ):
        check_recordable(study_config(values))


def test_l2_zero_gets_a_hint_and_one_error_line_from_the_command_line(one_line_error, tmp_path):
    line = one_line_error(
        [
            "search",
            "--config",
            SEARCH,
            "--set",
            "search.space={train.l2: {choices: [0.0, 0.001]}}",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert "search.space.train.l2" in line and "1e-12 stands for no L2" in line
    assert not (tmp_path / "s").exists()  # refused before anything was written
    line = one_line_error(["grid", "--set", "grid.l2=[0.0005, 0]", "--out", str(tmp_path / "g")])
    assert "'grid.l2': 0.0 is outside" in line and not (tmp_path / "g").exists()


def test_values_at_the_bounds_are_accepted_and_recorded():
    """The extreme values the check lets through are stored by Optuna as an attempt trial is."""
    config = study_config(
        {
            "search": {
                "space": {"train.l2": {"choices": [1e-12, 1.0]}, "train.learning_rate": {"low": 1e-10, "high": 1e6}}
            },
            "train": {"epochs": 1_000_000, "batch_size": 65536},
        }
    )
    check_recordable(config)
    study = optuna.create_study()
    dists = space(config)
    for l2 in dists["train.l2"].choices:
        for lr in (dists["train.learning_rate"].low, dists["train.learning_rate"].high):
            run = run_config_of(config, {"train.l2": l2, "train.learning_rate": lr}, replicates(config)[0])
            params = attempt_params(run, rerun=1000)
            study.enqueue_trial(params)
            trial = study.ask({k: DISTRIBUTIONS[k] for k in params})
            study.tell(trial, 0.5)
            assert study.trials[-1].params == params


def test_train_alone_records_nothing_and_takes_any_valid_run_value(tiny_data_dir, tmp_path, one_line_error):
    """A learning rate below the record's bounds is a valid run: ``train`` loads it; a study refuses it."""
    config = study_config({"train": {"learning_rate": 1e-12}})
    with pytest.raises(ConfigError, match="'train.learning_rate': 1e-12 is outside what the study record holds"):
        check_recordable(config)
    line = one_line_error(["grid", "--data", str(tiny_data_dir), "--set", "train.learning_rate=1e-12"])
    assert "'train.learning_rate': 1e-12 is outside" in line
