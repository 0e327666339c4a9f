"""``grid`` end to end on a shared local Ray instance: tiny U-Nets on a small synthetic data set."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import RUN_OUTPUTS, sqlite_study_ready, tiny_study
from optuna.trial import TrialState
from study_driver import any_trial_reached, grid_on_data, kill_mid_trial, resume, study_command
from study_driver import sqlite_study as load

from hpo.commands.study import write_report
from hpo.run import main
from hpo.study import run_study
from lgeseg.errors import UserError
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return generate_phantom(tmp_path_factory.mktemp("data") / "phantom", n_patients=5, seed=3)


def test_one_complete_trial_per_l2_with_metrics(ray_cluster, data_dir, tmp_path, capsys):
    result = run_study(tiny_study(data_dir), out_dir=tmp_path / "study")
    report = write_report(result)
    study = load(tmp_path / "study")
    trials = study.get_trials()
    assert sorted(t.params["l2"] for t in trials) == [5e-5, 5e-3]
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        folder = Path(trial.user_attrs["trial_dir"])
        val = json.loads((folder / "val_metrics.json").read_text())
        assert trial.value == pytest.approx(val["dataset"]["MeanIoU"])
        assert trial.user_attrs["test_metrics"] == json.loads((folder / "metrics.json").read_text())
        assert sorted(trial.intermediate_values) == [1, 2]
        assert trial.user_attrs["lineage"]["rerun"] == 0 and trial.params["rerun"] == 0
        for name in RUN_OUTPUTS:
            assert (folder / name).is_file(), name
        assert len(list((folder / "predictions").glob("*.png"))) == len(trial.user_attrs["test_metrics"]["images"])
    assert study.user_attrs["data_dir"] == str(data_dir.resolve())
    assert study.user_attrs["config"]["grid"]["l2"] == [5e-3, 5e-5]
    assert [r["status"] for r in result.rows] == ["complete", "complete"]
    assert report is not None and report.is_file()
    out = capsys.readouterr().out
    assert "start   l2=0.005_seed=0_rerun=0" in out and "finish  l2=5e-05_seed=0_rerun=0" in out
    assert "test MeanIoU" in out and "report:" in out
    # The same study again without --resume is refused; with --resume nothing is redone.
    with pytest.raises(UserError, match="already exists.*--resume"):
        run_study(tiny_study(data_dir), out_dir=tmp_path / "study")
    run_study(tiny_study(data_dir), out_dir=tmp_path / "study", resume=True)
    assert len(load(tmp_path / "study").get_trials()) == 2
    # Resuming with another config is refused, naming the key.
    with pytest.raises(UserError, match="train.epochs"):
        run_study(tiny_study(data_dir, train={"epochs": 3}), out_dir=tmp_path / "study", resume=True)


def test_retune_rule_fires_and_reruns_carry_adjustments(ray_cluster, data_dir, tmp_path):
    config = tiny_study(data_dir, grid={"l2": [5e-4]}, retune={"target_accuracy": 0.999})
    result = run_study(config, out_dir=tmp_path / "study")
    trials = sorted(load(tmp_path / "study").get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 3
    assert [t.params["rerun"] for t in trials] == [0, 1, 2]
    assert [(t.params["learning_rate"], t.params["batch_size"]) for t in trials] == [(1e-3, 8), (3e-3, 8), (1e-4, 4)]
    assert all(t.params["l2"] == 5e-4 for t in trials)
    assert [t.user_attrs["lineage"]["rerun_of"] for t in trials] == [None, trials[0].number, trials[1].number]
    assert trials[2].user_attrs["lineage"]["adjustment"] == {"batch_size": 4, "learning_rate": 1e-4}
    assert [t.user_attrs["retune"]["replaced_by"] for t in trials] == [
        "l2=0.0005_seed=0_rerun=1",
        "l2=0.0005_seed=0_rerun=2",
        None,
    ]
    assert all(t.user_attrs["epochs_run"] == 1 for t in trials)  # stopped at the check epoch
    assert result.rows[0]["status"] == "not converged" and result.rows[0]["reruns"] == 2  # the reruns that ran


def test_gpu_request_without_gpu_fails_at_once(ray_cluster, data_dir, tmp_path):
    config = tiny_study(data_dir, resources={"gpu": 1})
    with pytest.raises(UserError, match="resources.gpu.*cluster has 0"):  # raised, not left pending
        run_study(config, out_dir=tmp_path / "study")
    assert not (tmp_path / "study" / "study.db").exists()  # nothing stored, so a corrected rerun needs no --resume


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["grid", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.yaml" in err and "Traceback" not in err
    assert main(["grid", "--set", "grid.l2=[-1]"]) == 2
    assert "grid.l2" in capsys.readouterr().err
    assert main(["grid", "--set", "retune.adjustments=[{l2: 0.1}]"]) == 2
    assert "may not touch L2" in capsys.readouterr().err
    assert main(["grid", "--set", "trian.epochs=3"]) == 2
    assert "unknown config key 'trian'" in capsys.readouterr().err


def test_driver_killed_mid_run_then_resumed(data_dir, tmp_path):
    """Kill the whole driver process group mid-trial; --resume must finish with exactly the right trials."""
    import yaml

    config = tiny_study(data_dir, train={"epochs": 6, "checkpoint_every": 1})
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    command = study_command(config_path, out)
    kill_mid_trial(
        command,
        lambda: load(out).get_trials(),
        any_trial_reached(2),
        what="got two epochs into a trial",
        ready=lambda: sqlite_study_ready(out / "study.db"),
    )
    before = load(out).get_trials()
    assert all(t.state == TrialState.RUNNING for t in before)  # nothing was finished by the dead driver

    resume(command)
    after = load(out).get_trials()
    assert len(after) == 2  # no duplicates
    assert sorted(t.params["l2"] for t in after) == [5e-5, 5e-3]
    assert all(t.state == TrialState.COMPLETE for t in after)
    for trial in after:
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]
        run_info = json.loads((Path(trial.user_attrs["trial_dir"]) / "run.json").read_text())
        assert run_info["epochs_run"] == 6
    assert any(
        json.loads((Path(t.user_attrs["trial_dir"]) / "run.json").read_text())["resumed_from_epoch"] >= 1 for t in after
    )


def test_journal_file_storage(ray_cluster, data_dir, tmp_path):
    log = tmp_path / "study.log"
    config = tiny_study(data_dir, grid={"l2": [5e-4]}, train={"epochs": 1})
    run_study(config, storage=f"journal:///{log}", out_dir=tmp_path / "study")
    from hpo.storage import open_storage

    (trial,) = optuna.load_study(study_name="tiny", storage=open_storage(str(log))).get_trials()
    assert trial.state == TrialState.COMPLETE and trial.intermediate_values.keys() == {1}


def test_bad_data_folder_fails_before_anything_is_stored(tmp_path, capsys):
    (tmp_path / "data" / "images").mkdir(parents=True)
    assert main(["grid", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "study")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "data") in err
    assert not (tmp_path / "study" / "study.db").exists()


def test_unreachable_address_fails_fast(data_dir, tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a loopback port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(grid_on_data(data_dir, tmp_path / "study", "--address", f"127.0.0.1:{port}"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "no Ray cluster" in err
    assert not (tmp_path / "study" / "study.db").exists()


def finished_study(data_dir: Path, tmp_path: Path) -> tuple[dict, Path, Path]:
    """A one-point study whose point is already COMPLETE (so ``--resume`` trains nothing): config, its
    YAML file and the study folder."""
    import yaml
    from conftest import grid_attempt as Attempt

    from hpo.record import DISTRIBUTIONS

    config = tiny_study(data_dir, grid={"l2": [5e-4]})
    out = tmp_path / "study"
    out.mkdir()
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name="tiny", direction="maximize")
    study.set_user_attr("config", config)
    attempt = Attempt(5e-4, 0)
    params = {"l2": 5e-4, "learning_rate": 1e-3, "batch_size": 8, "epochs": 2, "seed": 0, "rerun": 0}
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions={k: DISTRIBUTIONS[k] for k in params},
            value=0.5,
            user_attrs={
                "trial_name": attempt.name,
                "lineage": {"point": attempt.point, "rerun": 0},
                "epochs_run": 2,
                "best_val_accuracy": 0.9,
            },
        )
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return config, path, out


def test_grid_waits_for_a_lock_shorter_than_the_wait(ray_cluster, data_dir, tmp_path, monkeypatch, caplog):
    from test_storage import locked

    config, _, out = finished_study(data_dir, tmp_path)
    monkeypatch.setenv("LGESEG_STORAGE_WAIT_S", "30")
    with locked(out / "study.db", 1.5):
        result = run_study(config, out_dir=out, resume=True)
    assert [r["status"] for r in result.rows] == ["complete"] and "is busy" in caplog.text


def test_grid_gives_up_on_a_longer_lock_in_one_line(ray_cluster, data_dir, tmp_path, monkeypatch, one_line_error):
    from test_storage import locked

    _, path, out = finished_study(data_dir, tmp_path)
    before = load(out).trials
    monkeypatch.setenv("LGESEG_STORAGE_WAIT_S", "0.5")
    with locked(out / "study.db", 60):
        line = one_line_error(["grid", "--config", str(path), "--out", str(out), "--resume", "--no-report"])
    assert "stayed busy" in line and "--resume" in line and "max length" not in line
    assert load(out).trials == before


def test_unopenable_storage_is_one_line_for_grid(ray_cluster, data_dir, tmp_path, one_line_error):
    from test_storage import BAD_STORAGES

    _, path, out = finished_study(data_dir, tmp_path)
    for url, expected in BAD_STORAGES:
        line = one_line_error(["grid", "--config", str(path), "--out", str(out), "--storage", url, "--no-report"])
        assert expected in line and "s3cret" not in line


def test_grid_to_report_with_a_forced_retune(ray_cluster, data_dir, tmp_path, capsys):
    """The grid command writes the report of its own study: the retuned attempt is linked to its rerun by
    the name the recorder wrote, and the check epoch drawn is the one the stopper used."""
    import yaml

    from dashboards.figures import training_curves
    from dashboards.load import load_study
    from hpo.rule import RetuneRule
    from hpo.storage import open_study

    config = tiny_study(data_dir, grid={"l2": [5e-4]}, retune={"max_reruns": 1})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    assert main(["grid", "--config", str(path), "--out", str(out), "--set", "retune.target_accuracy=0.999"]) == 0
    assert (out / "report.html").is_file() and "report:" in capsys.readouterr().out
    storage = str(out / "study.db")  # a bare path, as optuna-dashboard takes it
    record = load_study(open_study(storage, "tiny"), storage)
    first, rerun = record.trials
    assert (first.state, rerun.state) == ("PRUNED", "PRUNED") and first.retune["replaced_by"] == rerun.name
    curves = {t.meta["number"]: t for t in training_curves(record).data}
    assert f"→ #{rerun.number}" in curves[first.number].name
    assert f"rerun of #{first.number}" in curves[rerun.number].text
    check = RetuneRule(0.5, 0.999).check_epoch(config["train"]["epochs"])
    assert first.retune["check_epoch"] == check
    assert [s.x0 for s in training_curves(record).layout.shapes if s.x0 == s.x1] == [check]


def test_grid_over_two_architectures_is_recorded_and_reported_side_by_side(ray_cluster, data_dir, tmp_path, capsys):
    """Two L2 values x the MATLAB U-Net and a width-4 MONAI U-Net with Dice-CE, one epoch each."""
    config = tiny_study(
        data_dir,
        train={"epochs": 1, "loss": "dice-ce"},
        model={
            "monai_unet": {
                "channels": [4, 8, 16],
                "strides": [2, 2],
                "num_res_units": 1,
                "norm": "batch",
                "dropout": 0.0,
            }
        },
        grid={"architecture": ["matlab-unet", "monai-unet"]},
    )
    result = run_study(config, out_dir=tmp_path / "study")
    report = write_report(result)
    trials = load(tmp_path / "study").get_trials()
    assert sorted((t.params["architecture"], t.params["l2"]) for t in trials) == [
        ("matlab-unet", 5e-5),
        ("matlab-unet", 5e-3),
        ("monai-unet", 5e-5),
        ("monai-unet", 5e-3),
    ]
    assert {t.params["loss"] for t in trials} == {"dice-ce"}
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        info = json.loads((Path(trial.user_attrs["trial_dir"]) / "run.json").read_text())
        assert info["architecture"] == trial.params["architecture"] and info["loss"] == "dice-ce"
        assert trial.user_attrs["lineage"]["point"].endswith(f"architecture={trial.params['architecture']}")
    assert [(r["space"]["architecture"], r["status"]) for r in result.rows] == [
        ("matlab-unet", "complete"),
        ("monai-unet", "complete"),
    ] * 2
    out = capsys.readouterr().out
    assert "architecture" in out and "l2=5e-05_seed=0_architecture=monai-unet_rerun=0" in out
    page = report.read_text()
    for architecture in ("matlab-unet", "monai-unet"):
        assert f"<h1>architecture={architecture}</h1>" in page
        assert f'id="fig-figure1-architecture-{architecture}"' in page
