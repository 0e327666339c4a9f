"""A grid runs through the one sampler path: Optuna's GridSampler asks its points, its sampler trials stand
for its configurations (the record keeps only attempts, as grids always did), a resumed grid continues
without running a point twice, and a grid recorded before the one flow (no sampler study) resumes."""

from __future__ import annotations

import itertools

import optuna
from optuna.trial import TrialState
from test_search import PASS, Driver, finished

from hpo.closing_table import summary_rows
from hpo.study import plan
from hpo.study_config import grid_configurations, sampler_settings, study_config

GRID = {"l2": [5e-3, 5e-5], "loss": ["cross-entropy", "dice"]}


def grid_config(**grid) -> dict:
    return study_config(
        {
            "name": "s",
            "seeds": [0, 1],
            "model": {"width": 4, "depth": 2},
            "train": {"epochs": 2},
            "grid": {**GRID, **grid},
            "retune": {"check_fraction": 0.5, "target_accuracy": 0.9, "max_reruns": 0, "adjustments": []},
        }
    )


def run_all(drive: Driver, limit: int | None = None) -> list[str]:
    """Start trials until the searcher has none (or ``limit``), completing each; their names in order."""
    names = []
    while limit is None or len(names) < limit:
        trial = drive.start()
        if not hasattr(trial, "config"):
            break
        names.append(trial.config["trial_name"])
        drive.run(trial, [*PASS, finished(0.6)])
    return names


def test_sampler_settings_of_a_grid_are_the_grid_sampler_over_every_point():
    settings = sampler_settings(grid_config())
    assert (settings["sampler"], settings["n_trials"], settings["max_concurrent"]) == ("grid", 4, 4)


def test_a_grid_is_asked_from_the_grid_sampler_and_covers_every_point_once(tmp_path):
    drive = Driver(grid_config(), tmp_path)
    names = run_all(drive)
    sampled = drive.sampler.get_trials()
    # every sampler trial was given its point by GridSampler (its grid_id), all four ids once, told COMPLETE
    assert sorted(t.system_attrs["grid_id"] for t in sampled) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE and t.value == 0.6 for t in sampled)
    points = {(t.params["train.l2"], t.params["train.loss"]) for t in sampled}
    assert points == set(itertools.product(GRID["l2"], GRID["loss"]))
    # the trial folders keep their names; two seeds of each point, each once
    expected = {f"l2={l2:g}_seed={seed}_loss={loss}_rerun=0" for l2, loss in points for seed in (0, 1)}
    assert len(names) == 8 and set(names) == expected
    # the record holds attempts only, as grids always did
    assert all("kind" not in t.user_attrs for t in drive.record.get_trials())
    assert all(t.user_attrs["seeds"][0]["status"] == "complete" for t in sampled)


def test_the_plan_and_table_list_a_grid_in_config_order_whatever_order_it_ran(tmp_path):
    config = grid_config(architecture=["monai-unet", "matlab-unet"], l2=[5e-3])
    drive = Driver(config, tmp_path)
    names = run_all(drive)
    assert "l2=0.005_seed=0_architecture=monai-unet_loss=dice_rerun=0" in names
    plans = plan(config, drive.record, drive.sampler)
    assert [p.configuration.params for p in plans] == [c.params for c in grid_configurations(config)]
    assert [p.configuration.values["model.architecture"] for p in plans] == ["monai-unet"] * 2 + ["matlab-unet"] * 2
    assert all(p.told and not p.owed for p in plans)
    rows = summary_rows(plans)
    assert list(rows[0]["space"]) == ["L2", "architecture", "loss"]
    assert [r["point"] for r in rows[:2]] == ["l2=0.005,seed=0,architecture=monai-unet,loss=cross-entropy"] + [
        "l2=0.005,seed=1,architecture=monai-unet,loss=cross-entropy"
    ]


def test_a_resumed_grid_continues_without_running_a_point_twice(tmp_path):
    config = grid_config()
    storage = optuna.storages.InMemoryStorage()
    first = Driver(config, tmp_path, storage)
    done = run_all(first, limit=3)  # a driver killed after three attempts (one point and a half)
    second = Driver(config, tmp_path, storage)
    rest = run_all(second)
    assert len(done) + len(rest) == 8 and len(set(done) | set(rest)) == 8
    assert sorted(t.system_attrs["grid_id"] for t in second.sampler.get_trials()) == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in second.record.get_trials())


def test_a_grid_recorded_before_the_one_flow_resumes_from_its_attempts(tmp_path):
    """An old grid's storage holds attempts and no sampler study: the points it finished are told at once,
    the rest run, and nothing is repeated."""
    config = grid_config()
    storage = optuna.storages.InMemoryStorage()
    old = Driver(config, tmp_path, storage)
    done = run_all(old, limit=4)
    optuna.delete_study(study_name="s/sampler", storage=storage)  # what d5d5804's grid left: attempts only
    again = Driver(config, tmp_path, storage)
    rest = run_all(again)
    assert len(done) + len(rest) == 8 and not set(done) & set(rest)
    assert len(again.record.get_trials()) == 8
    assert [t.state for t in again.sampler.get_trials()] == [TrialState.COMPLETE] * 4


def test_a_grid_storage_given_alone_opens_its_record_not_its_sampler_study(tmp_path):
    from hpo.storage import open_study
    from hpo.study import open_sampler_study

    url = f"sqlite:///{tmp_path / 'study.db'}"
    record = optuna.create_study(storage=url, study_name="s", direction="maximize")
    sampler_study = open_sampler_study(grid_config(), record, url)
    assert sampler_study.study_name == "s/sampler" and sampler_study.user_attrs["record_study"] == "s"
    assert open_study(url, None).study_name == "s"


def test_a_grid_point_whose_ask_a_killed_driver_interrupted_is_not_lost(tmp_path):
    """A driver killed inside the grid sampler's ask leaves a sampler trial holding its grid point (Optuna's
    ``grid_id``) but not its params: on --resume it is closed as no configuration, and its point still runs
    (Optuna's GridSampler counts a finished trial's point as visited, so it would be lost and another run
    twice)."""
    config = grid_config()
    storage = optuna.storages.InMemoryStorage()
    first = Driver(config, tmp_path, storage)
    done = run_all(first, limit=2)  # one point, both seeds
    sampler = optuna.samplers.GridSampler({k: list(d.choices) for k, d in first.dists.items()})
    killed = optuna.load_study(study_name="s/sampler", storage=storage, sampler=sampler).ask()  # no params yet
    assert "grid_id" in first.sampler.get_trials()[killed.number].system_attrs
    again = Driver(config, tmp_path, storage)
    rest = run_all(again)
    assert len(done) + len(rest) == 8 and len(set(done) | set(rest)) == 8
    sampled = [t for t in again.sampler.get_trials() if t.params]
    points = {(t.params["train.l2"], t.params["train.loss"]) for t in sampled}
    assert len(sampled) == 4 and points == set(itertools.product(GRID["l2"], GRID["loss"]))
    assert again.sampler.get_trials()[killed.number].state == TrialState.FAIL


def test_the_closing_table_of_an_interrupted_grid_lists_every_point(tmp_path):
    """A driver stopped with points still unsampled: its closing table shows the whole space, the unsampled
    points pending; the attempt cut off mid-run shows how far it got (epochs and best validation accuracy so far)."""
    config = grid_config()
    drive = Driver(config, tmp_path)
    run_all(drive, limit=1)
    cut = drive.start()  # the second attempt reports one epoch, then the driver stops
    drive.recorder.on_trial_result(0, [], cut, PASS[0])
    sampled = plan(config, drive.record, drive.sampler)
    whole = plan(config, drive.record, drive.sampler, unsampled=True)
    assert len(sampled) < 4 and [p.configuration.params for p in whole] == [
        c.params for c in grid_configurations(config)
    ]
    rows = summary_rows(whole)
    assert len(rows) == 8
    statuses = {r["point"]: r["status"] for r in rows}
    unsampled = {p.configuration.params for p in whole} - {p.configuration.params for p in sampled}
    for p in whole:
        if p.configuration.params in unsampled:
            assert all(statuses[step.first.point] == "pending" for step in p.replicates.values())
    (interrupted,) = [r for r in rows if r["status"] == "interrupted"]
    assert interrupted["epochs"] == PASS[0]["epoch"] and interrupted["val_accuracy"] == PASS[0]["val_accuracy"]
