"""What the training-loop tests give :func:`lgeseg.train.fit` and watch it do, shared by tests/lgeseg/test_train.py
and tests/lgeseg/test_validation_frequency.py.

* :func:`fit_data`: 30 synthetic 16x16 images (10 patients of 3 slices) split 0.6/0.2/0.2, so batches of 4
  leave a partial last batch;
* :func:`record_learning_rates`: the learning rates every training iteration runs at.
"""

from __future__ import annotations

import pytest
from conftest import build_dataset

import lgeseg.train as train_mod
from lgeseg.data import Dataset, Split, split_dataset


def fit_data() -> tuple[Dataset, Split]:
    """The dataset and split of the fit tests (see the module docstring)."""
    dataset = build_dataset(n=30, size=16)
    return dataset, split_dataset(dataset, 0.6, 0.2, 0.2)


def record_learning_rates(monkeypatch: pytest.MonkeyPatch) -> list[list[float]]:
    """Spy on the next :func:`lgeseg.train.fit`: returns a list that gets, for each training iteration, the
    sorted distinct learning rates of the optimizer's parameter groups at that iteration (read when its
    batch is augmented, before the step).

    The spies wrap :func:`lgeseg.train.build_optimizer` (to find the run's optimizer) and
    :func:`lgeseg.train.augment_batch` (called once per iteration); both still do their work.
    """
    optimizers, seen = [], []
    real_build, real_augment = train_mod.build_optimizer, train_mod.augment_batch

    def build_spy(*args, **kwargs):
        optimizers.append(real_build(*args, **kwargs))
        return optimizers[-1]

    def augment_spy(*args, **kwargs):
        seen.append(sorted({g["lr"] for g in optimizers[0].param_groups}))
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(train_mod, "build_optimizer", build_spy)
    monkeypatch.setattr(train_mod, "augment_batch", augment_spy)
    return seen
