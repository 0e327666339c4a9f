"""``search`` end to end on Ray Tune: tiny U-Nets on the tiny 16x16 data set of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from conftest import sqlite_study_ready
from optuna.trial import TrialState
from study_driver import kill_mid_trial, resume, study_command

from hpo.commands.study import write_report
from hpo.record import sampler_study_name
from hpo.study import run_study
from hpo.study_config import study_config

pytestmark = pytest.mark.slow


def tiny(data_dir: Path, search: dict, **sections) -> dict:
    values = {
        "name": "tiny",
        "data": str(data_dir),
        "model": {"width": 4, "depth": 2},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3},
        "retune": {
            "check_fraction": 0.5,
            "target_accuracy": 0.0,
            "max_reruns": 1,
            "adjustments": [{"learning_rate": 3e-3, "batch_size": 4}],
        },
        "resources": {"gpu": 0, "cpu": 1},
        "search": {"sampler": "tpe", "space": {"train.l2": {"low": 1e-6, "high": 1e-1, "log": True}}, **search},
    }
    for key, value in sections.items():
        values[key] = {**values[key], **value}
    return study_config(values)


def studies(out: Path, name: str = "tiny") -> tuple[optuna.Study, optuna.Study]:
    url = f"sqlite:///{out / 'study.db'}"
    return (
        optuna.load_study(study_name=name, storage=url),
        optuna.load_study(study_name=sampler_study_name(name), storage=url),
    )


def configurations(record: optuna.Study) -> list:
    return sorted(
        (t for t in record.get_trials() if t.user_attrs.get("kind") == "configuration"),
        key=lambda t: t.user_attrs["configuration"],
    )


def test_tpe_search_records_configurations_with_seed_means(ray_cluster, tiny_data_dir, tmp_path, capsys):
    config = tiny(tiny_data_dir, {"n_trials": 2, "seeds_per_trial": 2, "max_concurrent": 2})
    result = run_study(config, out_dir=tmp_path / "study")
    report = write_report(result)
    record, sampler = studies(tmp_path / "study")
    found = configurations(record)
    assert [t.state for t in found] == [TrialState.COMPLETE] * 2
    assert all(
        t.distributions == {"train.l2": optuna.distributions.FloatDistribution(1e-6, 1e-1, log=True)} for t in found
    )
    attempts = [t for t in record.get_trials() if "lineage" in t.user_attrs]
    assert len(attempts) == 4 and all(t.state == TrialState.COMPLETE for t in attempts)
    for configuration in found:
        mine = sorted(
            (t for t in attempts if t.user_attrs["lineage"]["configuration"] == configuration.number),
            key=lambda t: t.params["seed"],
        )
        assert [t.params["seed"] for t in mine] == [0, 1]
        assert all(t.params["l2"] == configuration.params["train.l2"] for t in mine)
        assert configuration.value == pytest.approx((mine[0].value + mine[1].value) / 2)
        assert configuration.user_attrs["value_std"] == pytest.approx(abs(mine[0].value - mine[1].value) / 2**0.5)
        assert sorted(mine[0].intermediate_values) == [1]
    told = sampler.get_trials()
    assert [t.value for t in told] == [t.value for t in found]  # the sampler saw configuration values only
    assert [t.params for t in told] == [t.params for t in found]
    assert "Sensitivity to L2 (continuous)" in report.read_text()
    out = capsys.readouterr().out
    assert "sample  c000 (tpe, 1/2)" in out and "told    c001" in out
    run_study(config, out_dir=tmp_path / "study", resume=True)  # nothing is owed: nothing runs
    assert len(studies(tmp_path / "study")[0].get_trials()) == 6


def test_rule_fires_inside_a_search(ray_cluster, tiny_data_dir, tmp_path):
    config = tiny(tiny_data_dir, {"n_trials": 1}, retune={"target_accuracy": 0.999})
    result = run_study(config, out_dir=tmp_path / "study")
    record, sampler = studies(tmp_path / "study")
    (configuration,) = configurations(record)
    attempts = sorted((t for t in record.get_trials() if "lineage" in t.user_attrs), key=lambda t: t.number)
    assert [t.state for t in attempts] == [TrialState.PRUNED, TrialState.PRUNED]
    assert [(t.params["learning_rate"], t.params["batch_size"]) for t in attempts] == [(1e-3, 8), (3e-3, 4)]
    assert attempts[1].user_attrs["lineage"]["rerun_of"] == attempts[0].number
    # the configuration's outcome is its rerun's (not converged), and that is what the sampler was told
    assert configuration.state == TrialState.PRUNED and sampler.get_trials()[0].state == TrialState.PRUNED
    assert configuration.user_attrs["seeds"][0]["trial"] == attempts[1].number
    assert configuration.user_attrs["seeds"][0]["status"] == "not converged"
    assert result.rows[0]["status"] == "not converged"


def test_driver_killed_mid_search_then_resumed(tiny_data_dir, tmp_path):
    """SIGKILL the driver's process group mid-attempt; --resume ends with exactly n configurations."""
    # 60 short epochs: the configuration seen at epoch 2 is still far from its end when the driver is killed
    config = tiny(tiny_data_dir, {"n_trials": 3, "max_concurrent": 1}, train={"epochs": 60})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "study"
    command = study_command(path, out, kind="search")
    kill_mid_trial(
        command,
        lambda: studies(out)[0].get_trials(),
        lambda trials: any(
            t.user_attrs.get("trial_name") == "c001_seed=0_rerun=0"
            and len(t.intermediate_values) >= 2
            and t.state == TrialState.RUNNING
            for t in trials
        ),
        what="got two epochs into its second configuration",
        timeout=300,
        ready=lambda: sqlite_study_ready(out / "study.db", studies=2),  # the record and its sampler study
        poll=0.2,
    )
    before = configurations(studies(out)[0])
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    resume(command)
    record, sampler = studies(out)
    after = configurations(record)
    assert len(after) == 3 and all(t.state == TrialState.COMPLETE for t in after)
    assert len({t.params["train.l2"] for t in after}) == 3  # no configuration twice
    assert [t.params for t in sampler.get_trials()] == [t.params for t in after]
    assert [t.value for t in sampler.get_trials()] == [t.value for t in after]
    attempts = [t for t in record.get_trials() if "lineage" in t.user_attrs]
    assert sorted(t.user_attrs["trial_name"] for t in attempts) == [f"c00{i}_seed=0_rerun=0" for i in range(3)]
    assert all(sorted(t.intermediate_values) == list(range(1, 61)) for t in attempts)
