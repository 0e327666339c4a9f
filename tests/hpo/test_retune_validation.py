"""A study that validates every N iterations (``train.validation_frequency``) still validates at the end of
the retune rule's check epoch, so the rule judges the network of its check point
(:func:`hpo.study_config.run_config_of` puts that epoch into ``train.validation_epochs``)."""

from __future__ import annotations

from hpo.record import Replicate
from hpo.study_config import run_config_of, study_config

RETUNE = {"target_accuracy": 0.8, "max_reruns": 0, "adjustments": []}


def _validation_epochs(train: dict, check_fraction: float) -> list[int]:
    study = study_config({"train": train, "retune": {**RETUNE, "check_fraction": check_fraction}})
    return run_config_of(study, {"train.l2": 1e-4}, Replicate(0))["train"]["validation_epochs"]


def test_the_check_epoch_is_validated_when_validation_is_sparse():
    assert _validation_epochs({"epochs": 40, "validation_frequency": 50}, 0.25) == [10]
    assert _validation_epochs({"epochs": 40, "validation_frequency": 50, "validation_epochs": [3]}, 0.1) == [3, 4]


def test_no_extra_epoch_when_every_epoch_validates_or_the_rule_is_off():
    assert _validation_epochs({"epochs": 40}, 0.25) == []
    assert _validation_epochs({"epochs": 40, "validation_frequency": 50}, 0.0) == []  # check_fraction 0: rule off
