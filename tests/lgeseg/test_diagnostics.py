"""Not-learning warnings: the rules on hand-made numbers, then a run that cannot learn, through the CLI
and the grid's progress printer."""

from __future__ import annotations

import io
import json
import logging
import math
from types import SimpleNamespace

import pytest
from conftest import tiny_config_args

from lgeseg.diagnostics import below_baseline, fixes, learning_warnings, stalled_loss
from lgeseg.run import run


def test_below_baseline_needs_a_tenth_of_the_headroom():
    # baseline 0.3: headroom 0.7, so a network must reach 0.3 + 0.07 = 0.37
    assert below_baseline(0.38, 0.3) is None
    line = below_baseline(0.36, 0.3)
    assert line is not None and "0.360" in line and "0.300" in line and "train.epochs" in line
    assert "\n" not in line
    assert "undefined" in below_baseline(math.nan, 0.3)
    assert below_baseline(None, 0.3) is not None
    assert below_baseline(0.1, math.nan) is None and below_baseline(0.1, None) is None


def test_stalled_loss_looks_at_epochs_2_to_6():
    # epoch 2 at 0.5: stalled unless some epoch 3-6 is below 0.98 * 0.5 = 0.49 (epoch 1 is ignored)
    line = stalled_loss([9.0, 0.5, 0.495, 0.4905, 0.492, 0.493, 0.1])
    assert line is not None and "0.5000" in line and "0.4905" in line and "3-6" in line
    assert stalled_loss([9.0, 0.5, 0.495, 0.4899, 0.492, 0.493]) is None
    assert stalled_loss([9.0, 0.5, 0.5, 0.5, 0.5]) is None  # too short to tell


def test_learning_warnings_collects_both():
    history = [{"train_loss": v} for v in (1.0, 0.5, 0.5, 0.5, 0.5, 0.5)]
    assert len(learning_warnings(history, 0.2, 0.3)) == 2
    assert learning_warnings(history[:2], 0.9, 0.3) == []


@pytest.fixture(scope="module")
def stuck_run(tmp_path_factory):
    """A tiny run at a learning rate of 1e-12: its weights never move."""
    from conftest import tiny_config, write_dataset_dir

    root = tmp_path_factory.mktemp("stuck")
    data = write_dataset_dir(root / "data", n_patients=8, slices=3, size=16)
    config = tiny_config(data=str(data), train__epochs=6, train__learning_rate=1e-12)
    return config, root / "out"


def test_a_run_that_cannot_learn_warns_in_run_json_and_the_log(stuck_run, caplog):
    config, out = stuck_run
    with caplog.at_level(logging.WARNING, logger="lgeseg"):
        result = run(config, out)
    warnings = json.loads((out / "run.json").read_text())["warnings"]
    assert warnings == result.info["warnings"] and len(warnings) == 2
    assert warnings[0].startswith("training loss stalled") and warnings[1].startswith("not learning")
    assert [r.getMessage() for r in caplog.records] == [f"{out}: {w}" for w in warnings]


def test_train_cli_prints_the_warnings(stuck_run, capsys):
    import hpo.run

    config, out = stuck_run  # finished by the test above, or trained here
    argv = [
        "train",
        "--data",
        config["data"],
        "--l2",
        str(config["train"]["l2"]),
        *tiny_config_args(epochs=6),
        "--set",
        "train.learning_rate=1e-12",
        "--out",
        str(out),
    ]
    assert hpo.run.main(argv) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(err) == 2 and "not learning" in err[1]


def test_grid_progress_prints_a_finished_trials_warnings():
    from hpo.rule import RetuneRule
    from hpo.tune_progress import ProgressPrinter

    stream = io.StringIO()
    printer = ProgressPrinter(RetuneRule(check_fraction=0.5, target_accuracy=0.0), max_reruns=0, stream=stream)
    result = {
        "finished": True,
        "epoch": 2,
        "epochs": 2,
        "val_accuracy": 0.88,
        "val_MeanIoU": 0.29,
        "best_val_accuracy": 0.88,
        "test_metrics": {"dataset": {"MeanIoU": 0.3}},
        "run_info": {"warnings": ["not learning: validation MeanIoU 0.290 is not clearly above ..."]},
    }
    trial = SimpleNamespace(
        config={"trial_name": "l2=0.005_seed=0_rerun=0", "attempt": {"rerun": 0}}, last_result=result
    )
    printer.on_trial_complete(0, [], trial)
    lines = stream.getvalue().splitlines()
    assert "finish" in lines[0] and "warning" in lines[1] and "not learning" in lines[1]
    assert "l2=0.005_seed=0_rerun=0" in lines[1]


def test_the_fixes_leave_out_zscore_where_the_run_uses_it():
    zscore, zerocenter = {"model": {"normalization": "zscore"}}, {"model": {"normalization": "zerocenter"}}
    assert "zscore" not in below_baseline(0.1, 0.3, zscore) and "zscore" not in stalled_loss([1.0] * 7, zscore)
    assert "model.normalization: zscore" in below_baseline(0.1, 0.3, zerocenter)
    assert fixes() == fixes(zerocenter) and "another train.learning_rate" in fixes(zscore)
