"""A batch size larger than the training split fails every trial that uses it (MATLAB drops the last partial
mini-batch, so an epoch has none): the driver says so once, naming the config key, before Ray starts.

The rule has one home, :func:`lgeseg.train.steps_per_epoch`, which ``fit`` applies to every run; the driver
(:func:`hpo.study.describe_data`) applies it to every batch size a study can use
(:func:`hpo.study_config.values_of`: the train section, the space's choices or bounds, the retune
adjustments), against the smallest training split of its folds.
"""

from __future__ import annotations

import pytest

from hpo.study import describe_data
from hpo.study_config import max_epochs, study_config, values_of
from lgeseg.data import load_dataset, split_from_config
from lgeseg.errors import TrainingError
from lgeseg.train import steps_per_epoch

TINY = {"model": {"width": 4, "depth": 2}, "resources": {"cpu": 1, "gpu": 0}}


def test_steps_per_epoch_by_hand():
    assert steps_per_epoch(15, 4) == 3 and steps_per_epoch(16, 16) == 1  # 15 // 4: the partial batch is dropped
    with pytest.raises(TrainingError, match=r"^train.batch_size 16 is larger than the training split \(15 images\)$"):
        steps_per_epoch(15, 16)


def test_values_of_names_every_source():
    config = study_config(
        {
            **TINY,
            "train": {"batch_size": 8},
            "retune": {"max_reruns": 1, "adjustments": [{"batch_size": 4}, {"learning_rate": 1e-3}]},
        }
    )
    assert values_of(config, "train.batch_size") == [("train.batch_size", 8), ("retune.adjustments[0].batch_size", 4)]
    assert values_of(config, "train.l2") == [("grid.l2", v) for v in config["grid"]["l2"]]
    search = study_config({"search": {"space": {"train.batch_size": {"low": 2, "high": 12}}}})
    assert values_of(search, "train.batch_size") == [  # the train section's 16 is not used: the space replaces it
        ("search.space.train.batch_size", 2),
        ("search.space.train.batch_size", 12),
        ("retune.adjustments[2].batch_size", 8),  # the default third adjustment
    ]


def test_max_epochs_is_the_largest_of_values_of():
    """ASHA's max_t: the space's high (or choices) replaces the train section's epochs; an adjustment may add more."""
    space = {"train.epochs": {"low": 2, "high": 9}}
    assert max_epochs(study_config({"search": {"space": space}, "train": {"epochs": 30}})) == 9
    longer = {"max_reruns": 1, "adjustments": [{"epochs": 12}]}
    assert max_epochs(study_config({"search": {"space": space}, "retune": longer})) == 12
    choices = {"train.epochs": {"choices": [3, 7]}}
    assert max_epochs(study_config({"search": {"space": choices}, "retune": {"max_reruns": 0, "adjustments": []}})) == 7
    l2_only = {"train.l2": {"low": 1e-5, "high": 1e-2, "log": True}}
    assert max_epochs(study_config({"search": {"space": l2_only}})) == 180  # the train section's (paper) epochs


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"train": {"batch_size": 64}}, "train.batch_size"),
        (
            {"train": {"batch_size": 4}, "retune": {"max_reruns": 1, "adjustments": [{"batch_size": 64}]}},
            "retune.adjustments[0].batch_size",
        ),
        (
            {"search": {"space": {"train.batch_size": {"choices": [4, 64]}}}, "train": {"batch_size": 4}},
            "search.space.train.batch_size",
        ),
    ],
)
def test_a_batch_larger_than_the_training_split_is_refused_once_naming_its_key(values, key, tiny_data_dir):
    config = study_config({**TINY, **values, "data": str(tiny_data_dir)})
    n_train = len(split_from_config(load_dataset(str(tiny_data_dir)), config["split"]).train)
    with pytest.raises(TrainingError) as raised:
        describe_data(config)
    assert str(raised.value) == f"config key '{key}': 64 is larger than the training split ({n_train} images)"


def test_under_cross_validation_the_smallest_fold_decides(tiny_data_dir):
    config = study_config({**TINY, "split": {"folds": 4}, "data": str(tiny_data_dir)})
    dataset = load_dataset(str(tiny_data_dir))
    sizes = [len(split_from_config(dataset, {**config["split"], "fold": f}).train) for f in range(4)]
    smallest = min(sizes)
    describe_data({**config, "train": {**config["train"], "batch_size": smallest}})  # fits every fold
    with pytest.raises(TrainingError) as raised:
        describe_data({**config, "train": {**config["train"], "batch_size": smallest + 1}})
    fold = sizes.index(smallest)
    assert str(raised.value) == (
        f"config key 'train.batch_size': {smallest + 1} is larger than the training split of fold {fold} "
        f"({smallest} images)"
    )
