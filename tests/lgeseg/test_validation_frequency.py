"""MATLAB's ValidationFrequency in the training loop (``train.validation_frequency``, issue 24).

When the loop validates changes the history and the best network only, never the trained weights; the
retune rule's check epoch is validated at its end (``train.validation_epochs``, set by hpo's
run_config_of: tests/hpo/test_retune_validation.py).
"""

from __future__ import annotations

import pytest
import torch
from fit_spies import fit_data, record_learning_rates

import lgeseg.train as train_mod
from lgeseg.config import run_config
from lgeseg.errors import ConfigError
from lgeseg.train import fit, validation_due


def _options(frequency: int, epochs: list[int] | None = None) -> dict:
    return {"validation_frequency": frequency, "validation_epochs": epochs or []}


def _due(frequency: int, epochs: int, steps: int, check: list[int] | None = None) -> list[int]:
    """The iterations a run of ``epochs`` x ``steps`` validates after."""
    total = epochs * steps
    return [
        i
        for i in range(1, total + 1)
        if validation_due(i, total, i % steps == 0, (i - 1) // steps + 1, _options(frequency, check))
    ]


def test_frequency_zero_validates_at_every_epoch_end():
    assert _due(0, epochs=3, steps=4) == [4, 8, 12]


def test_frequency_n_validates_first_every_nth_and_last_iteration():
    # 3 epochs of 4 steps at N=5: iteration 1, 5, 10, and the last (12), as MATLAB does
    assert _due(5, epochs=3, steps=4) == [1, 5, 10, 12]
    # a listed epoch's end (epoch 2 ends at iteration 8) is validated too
    assert _due(5, epochs=3, steps=4, check=[2]) == [1, 5, 8, 10, 12]
    # N larger than the run: first and last only
    assert _due(50, epochs=2, steps=3) == [1, 6]


@pytest.mark.parametrize("bad", [-1, 1.5, "50"])
def test_bad_frequency_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="train.validation_frequency"):
        run_config({"train": {"validation_frequency": bad}})


@pytest.mark.parametrize("bad", [[0], [1.5], ["2"], 3])
def test_bad_validation_epochs_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="train.validation_epochs"):
        run_config({"train": {"validation_epochs": bad}})


def test_fit_weights_do_not_depend_on_when_it_validates(tiny_run_config, tmp_path, monkeypatch):
    dataset, split = fit_data()
    steps = len(split.train) // 4  # tiny_run_config's batch
    calls = []
    real = train_mod._validate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(out)
        return out

    monkeypatch.setattr(train_mod, "_validate", spy)
    every = fit(tiny_run_config({"train": {"epochs": 3}}), dataset, split, tmp_path / "a")
    assert len(calls) == 3
    calls.clear()
    frequency = steps + 1
    sparse = fit(
        tiny_run_config({"train": {"epochs": 3, "validation_frequency": frequency}}), dataset, split, tmp_path / "b"
    )
    due = _due(frequency, epochs=3, steps=steps)
    assert len(calls) == len(due) and due[1] % steps != 0  # one validation falls inside an epoch
    for key, value in every.model.state_dict().items():
        assert torch.equal(value, sparse.model.state_dict()[key]), key
    # each epoch's row carries the latest validation up to its end; the last one is the run's end, as in `every`
    for epoch, row in enumerate(sparse.history, 1):
        latest = max(k for k, i in enumerate(due) if i <= epoch * steps)
        assert row["val_accuracy"] == calls[latest][1] and row["val_loss"] == calls[latest][0]
    assert sparse.history[2]["val_accuracy"] == every.history[2]["val_accuracy"]
    assert sparse.best_val_accuracy == max(c[1] for c in calls)


def test_onecycle_schedule_steps_every_iteration(tiny_run_config, tmp_path, monkeypatch):
    """``onecycle``: the rate starts at 1/25 of the top, peaks after 30 % of the iterations, ends near 0;
    upconv biases keep their factor 2 throughout."""
    dataset, split = fit_data()
    steps = len(split.train) // 4
    config = tiny_run_config({"train": {"epochs": 5, "learning_rate": 1e-3, "lr_schedule": "onecycle"}})
    seen = record_learning_rates(monkeypatch)
    fit(config, dataset, split, tmp_path)
    total = 5 * steps
    assert len(seen) == total
    assert seen[0] == pytest.approx([1e-3 / 25, 2e-3 / 25])  # OneCycleLR's div_factor 25
    peak = round(0.3 * total) - 1  # OneCycleLR reaches the top at iteration pct_start * total - 1
    assert seen[peak] == pytest.approx([1e-3, 2e-3])
    assert max(s[0] for s in seen) == pytest.approx(1e-3)
    assert seen[-1][0] == pytest.approx(1e-3 / 25 / 1e4)  # the last iteration trains at 1/(25 * 10^4) of the top
