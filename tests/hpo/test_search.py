"""Search studies without Ray running: the ``search:`` config, the study searcher and its sampling driven
with stand-in Tune trials (through the real recorder), the resume plan, and the record's configurations."""

from __future__ import annotations

import statistics

import optuna
import pytest
import yaml
from conftest import epoch_result, finished_result, report_results, tune_trial_stub
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.utils import flatten_dict

from hpo.record import sampler_study_name
from hpo.recorder import OptunaRecorder
from hpo.rule import RetuneRule
from hpo.sampling import Sampling, reconcile
from hpo.searcher import StudySearcher
from hpo.study import plan, trial_config
from hpo.study_config import space, study_config

SPACE = {"train.l2": {"low": 1e-6, "high": 1e-1, "log": True}, "model.width": {"choices": [4, 8]}}


def search_config(**search) -> dict:
    return study_config(
        {
            "name": "s",
            "model": {"width": 4, "depth": 2},
            "train": {"epochs": 2},
            "retune": {
                "check_fraction": 0.5,
                "target_accuracy": 0.9,
                "max_reruns": 1,
                "adjustments": [{"learning_rate": 1e-3}],
            },
            "search": {"sampler": "tpe", "n_trials": 2, "space": SPACE, **search},
        }
    )


class Driver:
    """The searcher and the recorder on two studies in one storage (in memory: the tests are about the
    logic; the Ray tests use SQLite), fed with stand-in Tune trials in the order Tune calls them (searcher
    before callbacks). A new Driver on the same storage is a restarted driver. Grids too (test_grid_sampler)."""

    def __init__(self, config: dict, tmp_path, storage=None) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.config, self.tmp_path = config, tmp_path
        self.storage = storage or optuna.storages.InMemoryStorage()
        self.record = optuna.create_study(
            storage=self.storage, study_name="s", direction="maximize", load_if_exists=True
        )
        self.sampler = optuna.create_study(
            storage=self.storage, study_name=sampler_study_name("s"), direction="maximize", load_if_exists=True
        )
        self.dists = space(config)
        reconcile(config, self.record, self.sampler)
        rule = RetuneRule.from_config(config["retune"])
        max_reruns = config["retune"]["max_reruns"]
        self.recorder = OptunaRecorder(self.record, rule, max_reruns)
        plans = plan(config, self.record, self.sampler)
        sampling = Sampling(config, self.record, self.sampler, plans)
        self.searcher = StudySearcher(
            [a for p in plans for a in p.owed],
            rule,
            max_reruns,
            lambda a: trial_config(config, a, tmp_path),
            sampling,
            self.recorder.trial_number,
        )
        self.count = 0

    def start(self):
        tid = f"t{self.count}"
        self.count += 1
        config = self.searcher.suggest(tid)
        if not isinstance(config, dict):
            return config
        trial = tune_trial_stub(tid, config)
        self.recorder.on_trial_start(0, [], trial)
        return trial

    def run(self, trial, results: list[dict]) -> None:
        report_results(self.recorder, trial, results)
        self.searcher.on_trial_complete(trial.trial_id, result=flatten_dict(trial.last_result))
        self.recorder.on_trial_complete(0, [], trial)

    def configurations(self, state=None) -> list:
        return sorted(
            (
                t
                for t in self.record.get_trials()
                if t.user_attrs.get("kind") == "configuration" and (state is None or t.state == state)
            ),
            key=lambda t: t.user_attrs["configuration"],
        )


def epoch(e: int, acc: float) -> dict:
    return epoch_result(e, 2, acc)


def finished(val_miou: float, test_miou: float = 0.5) -> dict:
    return finished_result(2, val_miou, test_miou)


PASS = [epoch(1, 0.95), epoch(2, 0.96)]


def test_rule_fires_inside_a_search_and_the_sampler_learns_the_reruns_value(tmp_path):
    drive = Driver(search_config(), tmp_path)
    first = drive.start()
    assert first.config["trial_name"] == "c000_seed=0_rerun=0"
    drive.run(first, [epoch(1, 0.5)])  # below 0.9 at the check epoch: stopped by the rule
    rerun = drive.start()  # the rerun comes before a new configuration
    assert rerun.config["trial_name"] == "c000_seed=0_rerun=1"
    assert rerun.config["run"]["train"]["learning_rate"] == 1e-3  # the adjustment
    assert rerun.config["run"]["train"]["l2"] == first.config["run"]["train"]["l2"]
    drive.run(rerun, [*PASS, finished(0.42, 0.40)])

    (told,) = drive.sampler.get_trials()
    assert told.state == TrialState.COMPLETE and told.value == 0.42  # the rerun's, not the stopped attempt's
    (configuration,) = drive.configurations()
    assert configuration.value == 0.42 and configuration.user_attrs["sampler_trial"] == told.number
    assert configuration.params == told.params
    attempts = {t.user_attrs["trial_name"]: t for t in drive.record.get_trials() if "lineage" in t.user_attrs}
    assert attempts["c000_seed=0_rerun=0"].state == TrialState.PRUNED
    assert configuration.user_attrs["seeds"] == [
        {
            "seed": 0,
            "fold": None,
            "status": "complete",
            "value": 0.42,
            "test_MeanIoU": 0.40,
            "trial": attempts["c000_seed=0_rerun=1"].number,
            "rerun": 1,
        }
    ]
    assert attempts["c000_seed=0_rerun=1"].user_attrs["lineage"]["rerun_of"] == attempts["c000_seed=0_rerun=0"].number
    assert attempts["c000_seed=0_rerun=1"].user_attrs["lineage"]["configuration"] == configuration.number

    second = drive.start()
    assert second.config["trial_name"] == "c001_seed=0_rerun=0"
    drive.run(second, [epoch(1, 0.5)])
    last = drive.start()
    drive.run(last, [epoch(1, 0.6)])  # the rerun is stopped too: no reruns left
    assert drive.start() == Searcher.FINISHED
    assert [t.state for t in drive.sampler.get_trials()] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert drive.sampler.get_trials()[1].intermediate_values == {1: 0.6}  # how far it got, for TPE's ranking
    assert drive.configurations()[1].state == TrialState.PRUNED


def test_seeds_are_aggregated_before_the_sampler_sees_them(tmp_path):
    drive = Driver(search_config(n_trials=1, seeds_per_trial=3, max_concurrent=1), tmp_path)
    trials = [drive.start() for _ in range(3)]  # all three seeds are handed out at once
    assert [t.config["run"]["seed"] for t in trials] == [0, 1, 2]
    assert len({t.config["run"]["model"]["width"] for t in trials}) == 1
    assert drive.start() is None  # max_concurrent 1: no second configuration while the first is open
    for trial, value, test in zip(trials, (0.5, 0.6, 0.7), (0.4, 0.5, 0.9)):
        drive.run(trial, [*PASS, finished(value, test)])
    (configuration,) = drive.configurations()
    assert configuration.value == pytest.approx(0.6)
    assert configuration.user_attrs["value_std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))  # 0.1
    assert configuration.user_attrs["value_std"] == pytest.approx(0.1)
    assert (configuration.user_attrs["value_min"], configuration.user_attrs["value_max"]) == (0.5, 0.7)
    assert configuration.user_attrs["test_MeanIoU_mean"] == pytest.approx(0.6)
    assert [s["seed"] for s in configuration.user_attrs["seeds"]] == [0, 1, 2]
    assert drive.sampler.get_trials()[0].value == pytest.approx(0.6)
    assert drive.start() == Searcher.FINISHED


def test_folds_are_replicates_and_the_sampler_sees_their_mean_validation_value(tmp_path):
    config = search_config(n_trials=1, seeds_per_trial=2, max_concurrent=1)
    config["split"] = {**config["split"], "folds": 2}
    drive = Driver(config, tmp_path)
    trials = [drive.start() for _ in range(4)]  # every (seed, fold) of the configuration at once
    assert [t.config["trial_name"] for t in trials] == [
        "c000_seed=0_fold=0_rerun=0",
        "c000_seed=0_fold=1_rerun=0",
        "c000_seed=1_fold=0_rerun=0",
        "c000_seed=1_fold=1_rerun=0",
    ]
    assert [(t.config["run"]["seed"], t.config["run"]["split"]["fold"]) for t in trials] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    # validation values 0.2, 0.4, 0.6, 1.0 (mean 0.55); test values chosen so a test mean (0.1) is told apart
    for trial, value, test in zip(trials, (0.2, 0.4, 0.6, 1.0), (0.1, 0.1, 0.1, 0.1)):
        drive.run(trial, [*PASS, finished(value, test)])
    (configuration,) = drive.configurations()
    assert configuration.value == pytest.approx(0.55)
    assert drive.sampler.get_trials()[0].value == pytest.approx(0.55)
    assert configuration.user_attrs["n_replicates"] == 4 and configuration.user_attrs["n_seeds"] == 2
    assert [(r["seed"], r["fold"]) for r in configuration.user_attrs["seeds"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    attempts = [t for t in drive.record.get_trials() if t.user_attrs.get("kind") != "configuration"]
    assert sorted(t.params["fold"] for t in attempts) == [0, 0, 1, 1]
    assert {t.user_attrs["lineage"]["point"] for t in attempts} == {
        "c000,seed=0,fold=0",
        "c000,seed=0,fold=1",
        "c000,seed=1,fold=0",
        "c000,seed=1,fold=1",
    }
    assert drive.start() == Searcher.FINISHED


@pytest.mark.parametrize("sampler", ["tpe", "random", "gp", "cmaes", "qmc", "grid"])
def test_every_sampler_records_n_complete_configurations_with_their_distributions(tmp_path, sampler):
    space = (
        {"model.width": {"choices": [4, 8]}, "train.batch_size": {"choices": [2, 4]}}
        if sampler == "grid"
        else {"train.l2": {"low": 1e-6, "high": 1e-1, "log": True}, "model.depth": {"low": 1, "high": 3}}
    )
    drive = Driver(search_config(sampler=sampler, n_trials=3, space=space, startup_trials=2), tmp_path)
    for value in (0.3, 0.5, 0.4):
        drive.run(drive.start(), [*PASS, finished(value)])
    assert drive.start() == Searcher.FINISHED
    configurations = drive.configurations(TrialState.COMPLETE)
    assert [t.value for t in configurations] == [0.3, 0.5, 0.4]
    assert all(t.distributions == drive.dists for t in configurations)
    if sampler != "grid":
        assert configurations[0].distributions["train.l2"] == FloatDistribution(1e-6, 1e-1, log=True)
        assert configurations[0].distributions["model.depth"] == IntDistribution(1, 3)
    if sampler in ("grid", "tpe", "random"):  # continuous or exhaustive: no configuration twice
        assert len({tuple(sorted(t.params.items())) for t in configurations}) == 3
    assert len(drive.sampler.get_trials(states=(TrialState.COMPLETE,))) == 3


def test_resume_rebuilds_the_search_from_storage(tmp_path):
    """A driver 'killed' at several points; each restart finishes with exactly n configurations."""
    config = search_config(n_trials=3, seeds_per_trial=2, max_concurrent=2)
    drive = Driver(config, tmp_path)
    a, b, c = drive.start(), drive.start(), drive.start()
    assert [t.config["trial_name"] for t in (a, b, c)] == [
        "c000_seed=0_rerun=0",
        "c000_seed=1_rerun=0",
        "c001_seed=0_rerun=0",
    ]  # c starts, then the driver dies
    drive.run(a, [*PASS, finished(0.5)])
    drive.recorder.on_trial_result(0, [], b, epoch(1, 0.95))  # b is mid-training when the driver dies
    b_number = drive.recorder.trial_number(b.config["trial_name"])

    again = Driver(config, tmp_path, drive.storage)  # c000 owes seed 1 (continued), c001 owes seeds 0 (restarted) and 1
    names = [again.start() for _ in range(3)]
    assert [t.config["trial_name"] for t in names] == [
        "c000_seed=1_rerun=0",
        "c001_seed=0_rerun=0",
        "c001_seed=1_rerun=0",
    ]
    assert names[0].config["attempt"]["optuna_number"] == b_number  # continued under its Optuna trial
    for trial in names:
        again.run(trial, [*PASS, finished(0.6)])
    # killed between the sampler's ask and the record: an orphan the next start adopts
    again.sampler.ask(again.dists)
    # and an ask killed half-way (one param written): closed as FAIL, not a configuration
    partial = again.sampler.ask()
    partial.suggest_float("train.l2", 1e-6, 1e-1, log=True)

    last = Driver(config, tmp_path, drive.storage)
    for _ in range(2):
        last.run(last.start(), [*PASS, finished(0.7)])
    assert last.start() == Searcher.FINISHED
    configurations = last.configurations()
    assert len(configurations) == 3 and all(t.state == TrialState.COMPLETE for t in configurations)
    assert [t.value for t in configurations] == [pytest.approx(0.55), pytest.approx(0.6), pytest.approx(0.7)]
    assert len({t.user_attrs["sampler_trial"] for t in configurations}) == 3
    sampled = last.sampler.get_trials()
    assert [t.state for t in sampled] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert sampled[3].user_attrs["error"].startswith("sampling interrupted")
    attempts = [t for t in last.record.get_trials() if "lineage" in t.user_attrs]
    assert len(attempts) == 6 and len({t.user_attrs["trial_name"] for t in attempts}) == 6  # none twice
    continued = next(t for t in attempts if t.user_attrs["trial_name"] == "c000_seed=1_rerun=0")
    assert continued.intermediate_values == {1: 0.95, 2: 0.96}


def test_config_kinds_and_round_trip(tmp_path):
    config = search_config()
    assert "grid" not in config and "seeds" not in config and config["train"]["l2"] == 5e-4
    assert config["search"]["space"]["train.l2"] == {"low": 1e-6, "high": 1e-1, "log": True}
    assert study_config(yaml.safe_load(yaml.safe_dump(config))) == config  # a stored config reloads as itself


@pytest.mark.parametrize(
    "space, message",
    [
        ({"train.l2": {"low": 1e-2, "high": 1e-3}}, "'search.space.train.l2': low (0.01) must be below high"),
        ({"train.l2": {"low": 0.0, "high": 1e-1, "log": True}}, "'search.space.train.l2': a log scale needs low > 0"),
        ({"model.width": {"choices": []}}, "'search.space.model.width.choices' must be a non-empty list"),
        ({"model.width": {"choices": [8, "16"]}}, "holds '16', but 'model.width' must be an integer"),
        ({"train.l2_mode": {"choices": ["coupled", "adamw"]}}, "choice 'adamw' is not a valid value"),
        ({"train.learning_rate": {"low": 0.0, "high": 1.0}}, "'search.space.train.learning_rate': low 0.0 is not"),
        ({"train.l2_mode": {"low": 1, "high": 2}}, "is a string, so it takes {choices"),
        ({"train.lr": {"low": 1e-4, "high": 1e-2}}, "'train.lr' is not a searchable run-config key"),
        ({"seed": {"choices": [0, 1]}}, "'seed' is not a searchable run-config key"),
        ({"train.device": {"choices": ["cpu"]}}, "'train.device' is not a searchable"),
        ({"train.l2": {"low": 1e-6, "high": 1e-1, "step": 2}}, "unknown config key 'search.space.train.l2.step'"),
        ({"model.depth": {"low": 1, "high": 3.5}}, "'search.space.model.depth.high' must be an integer"),
        ({}, "'search.space' is empty"),
    ],
)
def test_space_errors_are_one_line_naming_the_key(one_line_error, tmp_path, space, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"search": {"space": space}}))
    line = one_line_error(["search", "--config", str(path)])
    assert str(path) in line and message in line


@pytest.mark.parametrize(
    "values, message",
    [
        ({"grid": {"l2": [1e-3]}}, "'grid' and 'search' are both given"),
        ({"seeds": [0, 1]}, "'seeds' is for grids"),
        ({"search": {"sampler": "bayes"}}, "'search.sampler' must be one of tpe, random, gp, cmaes, qmc, grid"),
        ({"search": {"sampler": "grid"}}, "the grid sampler needs {choices: [...]}"),
        (
            {"search": {"sampler": "grid", "n_trials": 3, "space": {"model.width": {"choices": [4, 8]}}}},
            "'search.n_trials' is 3 but the grid sampler's space has 2 points",
        ),
        ({"search": {"sampler": "cmaes"}}, "cmaes needs at least two {low, high} keys"),
        ({"search": {"scheduler": "hyperband"}}, "'search.scheduler' must be null or one of asha"),
        ({"search": {"seeds_per_trial": 0}}, "'search.seeds_per_trial' must be >= 1"),
        ({"search": {"max_concurrent": 0}}, "'search.max_concurrent' must be >= 1"),
        ({"search": {"n_trails": 3}}, "unknown config key 'search.n_trails'"),
    ],
)
def test_search_section_errors_are_one_line(one_line_error, tmp_path, values, message):
    base = {"search": {"space": {"train.l2": {"low": 1e-6, "high": 1e-1, "log": True}}}}
    merged = {**base, **values, "search": {**base["search"], **values.get("search", {})}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(merged))
    assert message in one_line_error(["search", "--config", str(path)])


def test_the_grid_command_refuses_a_search_config(one_line_error, tmp_path):
    """``grid`` is the alias that insists on a grid; ``search`` runs any study config (one flow)."""
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"search": {"space": SPACE}}))
    assert "has a 'search:' section; run it with `python -m hpo.run search" in one_line_error(
        ["grid", "--config", str(path)]
    )


def test_an_attempt_stopped_by_asha_prunes_its_configuration_without_a_rerun(tmp_path):
    drive = Driver(search_config(n_trials=1, scheduler="asha"), tmp_path)
    trial = drive.start()
    stopped = {**epoch(1, 0.95), "done": True}  # Tune marks the result a scheduler stopped the trial on
    drive.run(trial, [stopped])
    assert drive.start() == Searcher.FINISHED  # no rerun: ASHA's verdict is part of the search
    (attempt,) = [t for t in drive.record.get_trials() if "lineage" in t.user_attrs]
    assert attempt.state == TrialState.PRUNED and "retune" not in attempt.user_attrs
    assert attempt.user_attrs["stopped_by_scheduler"] == {"epoch": 1, "val_accuracy": 0.95}
    (configuration,) = drive.configurations()
    assert configuration.state == TrialState.PRUNED
    assert configuration.user_attrs["seeds"][0]["status"] == "stopped by ASHA"
    (told,) = drive.sampler.get_trials()
    assert told.state == TrialState.PRUNED and told.intermediate_values == {1: 0.95}
