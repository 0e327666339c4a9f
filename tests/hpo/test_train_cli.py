"""``python -m hpo.run train``: one run of the protocol from the command line, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import RUN_OUTPUTS, tiny_train_args

import hpo.run

TINY = tiny_train_args(epochs=2)


def test_train_cli_writes_everything_and_resumes(capsys, tiny_data_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data_dir), "--l2", "0.0005", *TINY, "--out", str(out)]
    assert hpo.run.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "GlobalAccuracy" in stdout and str(out) in stdout
    assert "Field metrics, mean over " in stdout and "patients (NSD at 2 pixels" in stdout  # lgeseg.field_metrics
    for name in RUN_OUTPUTS:
        assert (out / name).is_file(), name
    split = json.loads((out / "split.json").read_text())
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(split["test"])
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["l2"] == 0.0005
    assert {k: config["model"][k] for k in ("width", "depth", "pad", "normalization", "normalization_dimension")} == {
        "width": 4,
        "depth": 2,
        "pad": False,
        "normalization": "zerocenter",
        "normalization_dimension": "channel",
    }
    assert config["model"]["architecture"] == "matlab-unet" and config["train"]["loss"] == "cross-entropy"
    assert config["train"]["epochs"] == 2 and config["train"]["batch_size"] == 4
    # the rest is the study protocol of paper.yaml
    assert config["train"]["learning_rate"] == 1e-4 and config["train"]["l2_mode"] == "coupled"
    assert config["train"]["augment"] == {"reflect": True, "translate": 10}
    assert config["data"] == str(tiny_data_dir.resolve())
    info = json.loads((out / "run.json").read_text())
    assert info["l2"] == 0.0005 and info["seed"] == 0 and info["epochs_run"] == 2

    # a second call into the same folder returns the finished run without training again
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    assert hpo.run.main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()} == stamps
    printed = capsys.readouterr()
    assert "GlobalAccuracy" in printed.out
    assert f"{out} holds this config's finished run: its results are read back, not retrained" in printed.err


def test_train_cli_resumes_after_a_crash_before_evaluation(capsys, tiny_data_dir, tmp_path):
    """Training finished (last.pt at the final epoch) but the run died before run.json: rerun resumes."""
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data_dir), "--l2", "0.005", *TINY, "--out", str(out)]
    assert hpo.run.main(argv) == 0
    first = json.loads((out / "metrics.json").read_text())
    (out / "run.json").unlink()
    (out / "metrics.json").unlink()
    best_stamp = (out / "best.pt").stat().st_mtime_ns
    assert hpo.run.main(argv) == 0
    assert f"{out / 'last.pt'}: continuing from epoch 2 of 2" in capsys.readouterr().err
    info = json.loads((out / "run.json").read_text())
    assert info["resumed_from_epoch"] == 2 and info["epochs_run"] == 2
    assert (out / "best.pt").stat().st_mtime_ns == best_stamp  # no epoch trained again
    assert json.loads((out / "metrics.json").read_text()) == first


def test_train_cli_bad_data_dir(one_line_error, tmp_path):
    line = one_line_error(["train", "--data", str(tmp_path / "nowhere"), *TINY, "--out", str(tmp_path / "o")])
    assert "nowhere" in line


def test_train_cli_default_l2_is_first_grid_value(capsys, tiny_data_dir, tmp_path, monkeypatch):
    seen = {}

    def fake_run(config, out, **kwargs):
        seen["config"], seen["out"] = config, out
        raise SystemExit(0)

    monkeypatch.setattr("lgeseg.run.run", fake_run)
    with pytest.raises(SystemExit):
        hpo.run.main(["train", "--data", str(tiny_data_dir), *TINY])
    assert seen["config"]["train"]["l2"] == 5e-3
    assert str(seen["out"]).endswith("paper-l2-grid-train/l2=0.005_seed=0")


@pytest.mark.parametrize("cpu", [1, 64])
def test_train_cli_runs_with_a_trials_threads_and_records_them(cpu, tiny_data_dir, tmp_path):
    """``train`` uses ``resources.cpu`` torch threads as the study's trial does (at most the machine's cores),
    records them in run.json, and leaves the caller's thread count as it was."""
    import os

    import torch

    before = torch.get_num_threads()
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_data_dir), *TINY, "--epochs", "1", "--set", f"resources.cpu={cpu}"]
    assert hpo.run.main([*argv, "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["torch_threads"] == min(cpu, os.cpu_count())
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"metrics.json": '{"my": "result"}', "history.csv": "epoch,mine\n"}, "not a run folder (no config.yaml"),
        ({"config.yaml": "my precious notes\n"}, "config.yaml: is not a run config (a str, not a mapping)"),
    ],
)
def test_train_cli_refuses_a_folder_that_is_not_a_run_folder(files, expected, tiny_data_dir, tmp_path, one_line_error):
    """The user's files are left as they were, and the data are not even loaded (the folder is checked first)."""
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in files.items():
        (out / name).write_text(text)
    line = one_line_error(["train", "--data", str(tiny_data_dir), *TINY, "--out", str(out)])
    assert line.startswith(f"error: {out}") and expected in line and len(line) < 300
    assert {p.name: p.read_text() for p in out.iterdir()} == files
