"""``predict`` and ``export`` on a study: which networks, the recorded test metrics again, zips, one-line errors.

The study is written as the recorder writes a grid's (params, value = validation MeanIoU, ``trial_name``,
``trial_dir``, ``lineage``, ``test_metrics``; README's record table) over run folders trained by
:func:`lgeseg.run.run`, so no Ray is started.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import optuna
import pytest
from conftest import copy_test_split, tiny_config, write_dataset_dir
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpo.networks import select_networks
from hpo.run import main
from lgeseg.errors import UserError
from lgeseg.run import run


def record_trial(
    study, number_hint: str, run_dir: Path | None, l2: float, seed: int, value, state=TrialState.COMPLETE, **attrs
):
    """One trial as the grid's recorder writes it (``attrs``: more user attrs)."""
    attrs.update(trial_name=number_hint, lineage={"point": f"l2={l2:g},seed={seed}", "rerun": 0})
    if run_dir is not None:
        attrs["trial_dir"] = str(run_dir)
        attrs["test_metrics"] = json.loads((run_dir / "metrics.json").read_text())
    study.add_trial(
        create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params={"l2": l2, "seed": seed},
            distributions={"l2": FloatDistribution(1e-12, 1.0, log=True), "seed": IntDistribution(0, 2**31 - 1)},
            user_attrs=attrs,
        )
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Three runs (L2 5e-3 seeds 0 and 1, L2 5e-5 seed 0) recorded as trials 0-2, a trial 3 without a run
    folder and a trial 4 whose folder lost its checkpoints; the test images of the split in a folder."""
    root = tmp_path_factory.mktemp("predict_cli")
    data = write_dataset_dir(root / "data")
    storage = f"sqlite:///{root / 'study.db'}"
    record = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    runs = {}
    for l2, seed in ((5e-3, 0), (5e-3, 1), (5e-5, 0)):
        name = f"l2={l2:g}_seed={seed}_rerun=0"
        result = run(tiny_config(data=str(data), seed=seed, train__l2=l2), root / "trials" / name)
        runs[name] = result
        record_trial(record, name, result.out_dir, l2, seed, result.val_metrics["dataset"]["MeanIoU"])
    record_trial(record, "l2=0.0005_seed=0_rerun=0", None, 5e-4, 0, None, TrialState.FAIL)
    empty = root / "trials" / "emptied"
    shutil.copytree(root / "trials" / "l2=5e-05_seed=0_rerun=0", empty, ignore=shutil.ignore_patterns("*.pt"))
    record_trial(record, "emptied", empty, 5e-4, 1, 0.1)
    split = json.loads((root / "trials" / "l2=0.005_seed=0_rerun=0" / "split.json").read_text())
    # with the patients, for the per-patient field metrics
    images, truth = copy_test_split(data, split["test"], root / "test_images", root / "test_masks", ("manifest.csv",))
    return {"root": root, "storage": storage, "runs": runs, "images": images, "truth": truth, "test": split["test"]}


def cli(study, *args: str) -> list[str]:
    return ["--storage", study["storage"], "--study-name", "tiny", *args]


def test_predict_then_evaluate_gives_the_recorded_test_metrics(study, tmp_path, capsys):
    trial = optuna.load_study(study_name="tiny", storage=study["storage"]).trials[2]
    argv = ["predict", *cli(study, "--trial", "2"), "--input", str(study["images"]), "--out", str(tmp_path / "p")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"{len(study['test'])} slices" in out and "2:l2=5e-05_seed=0_rerun=0" in out
    argv = [
        "evaluate",
        "--pred",
        str(tmp_path / "p"),
        "--truth",
        str(study["truth"]),
        "--json",
        str(tmp_path / "m.json"),
    ]
    assert main(argv) == 0
    assert json.loads((tmp_path / "m.json").read_text()) == trial.user_attrs["test_metrics"]


def test_export_then_predict_model_equals_predict_trial(study, tmp_path, capsys):
    zip_path = tmp_path / "model.zip"
    assert main(["export", *cli(study, "--trial", "1"), "--out", str(zip_path)]) == 0
    assert "exported trial 1" in capsys.readouterr().out
    common = ["--input", str(study["images"]), "--tta", "flip", "--device", "cpu"]
    assert main(["predict", *cli(study, "--trial", "1"), *common, "--out", str(tmp_path / "a")]) == 0
    assert main(["predict", "--model", str(zip_path), *common, "--out", str(tmp_path / "b")]) == 0
    for name in study["test"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with (tmp_path / "b" / "predictions.csv").open() as table:  # the zip names the study trial it holds
        assert {row["networks"] for row in csv.DictReader(table)} == {"tiny:1:l2=0.005_seed=1_rerun=0"}
    import zipfile

    with zipfile.ZipFile(zip_path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
    assert manifest["source"]["study_name"] == "tiny" and manifest["source"]["trial"] == 1
    assert manifest["source"]["trial_name"] == "l2=0.005_seed=1_rerun=0"
    assert "storage" not in json.dumps(manifest)  # never a storage URL (it may hold a password)


def test_configuration_and_best_pick_replicates_by_validation_value(study):
    trials = optuna.load_study(study_name="tiny", storage=study["storage"]).get_trials()
    numbers = lambda chosen: [c.number for c in chosen]  # noqa: E731
    assert numbers(select_networks(trials, "tiny", configuration=0)) == [0, 1]
    assert numbers(select_networks(trials, "tiny", configuration=1)) == [0, 1]
    assert numbers(select_networks(trials, "tiny", configuration=2)) == [2]
    by_mean = {"l2=0.005": (trials[0].value + trials[1].value) / 2, "l2=5e-05": trials[2].value, "l2=0.0005": 0.1}
    ranked = sorted(by_mean, key=lambda k: -by_mean[k])
    groups = {"l2=0.005": [0, 1], "l2=5e-05": [2], "l2=0.0005": [4]}
    assert numbers(select_networks(trials, "tiny", best=1)) == groups[ranked[0]]
    assert numbers(select_networks(trials, "tiny", best=3)) == [n for key in ranked for n in groups[key]]
    chosen = select_networks(trials, "tiny", trial=0)
    assert (
        chosen[0].name == "0:l2=0.005_seed=0_rerun=0"
        and chosen[0].run_dir == study["runs"]["l2=0.005_seed=0_rerun=0"].out_dir
    )


def test_best_never_ranks_by_test_value():
    """Two configurations whose validation and test orders disagree: the validation order decides."""
    trials = []
    for number, (val, test) in enumerate(((0.9, 0.1), (0.2, 0.99))):
        trial = create_trial(
            value=val,
            params={},
            distributions={},
            user_attrs={
                "trial_dir": f"/runs/t{number}",
                "lineage": {"point": f"l2={number},seed=0"},
                "test_metrics": {"dataset": {"MeanIoU": test}},
            },
        )
        trial.number = number
        trials.append(trial)
    assert [c.number for c in select_networks(trials, "s", best=1)] == [0]


def test_search_configurations_group_their_seed_attempts():
    def attempt(number, configuration, value, state=TrialState.COMPLETE):
        trial = create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params={},
            distributions={},
            user_attrs={"trial_dir": f"/r/{number}", "lineage": {"configuration": configuration}},
        )
        trial.number = number
        return trial

    configuration = create_trial(value=0.5, params={}, distributions={}, user_attrs={"kind": "configuration"})
    configuration.number = 0
    trials = [configuration, attempt(1, 0, 0.4), attempt(2, 0, 0.6), attempt(3, 0, None, TrialState.PRUNED)]
    assert [c.number for c in select_networks(trials, "s", configuration=0)] == [1, 2]
    assert [c.number for c in select_networks(trials, "s", configuration=2)] == [1, 2]
    # said for export too, which has no --configuration: the way to its networks is predict's
    with pytest.raises(
        UserError,
        match=r"trial 0 is a configuration of the search, not a network: its networks are "
        r"its attempts' \(predict --configuration 0 uses them all\)$",
    ):
        select_networks(trials, "s", trial=0)


def test_errors_are_one_line(study, tmp_path, one_line_error):
    base = ["--input", str(study["images"]), "--out", str(tmp_path / "o")]
    assert "no study 'nope'" in one_line_error(
        ["predict", "--storage", study["storage"], "--study-name", "nope", "--trial", "0", *base]
    )
    assert "study 'tiny' has no trial 9 (trials 0-4)" in one_line_error(["predict", *cli(study, "--trial", "9"), *base])
    assert "trial 3 is FAIL: its run evaluated no network" in one_line_error(
        ["predict", *cli(study, "--trial", "3"), *base]
    )
    last = ["--checkpoint", "last"]
    assert "trial 3 has no trial_dir" in one_line_error(["predict", *cli(study, "--trial", "3"), *last, *base])
    assert "emptied/last.pt: checkpoint not found" in one_line_error(["predict", *cli(study, "--trial", "4"), *base])
    assert "has 3 configurations with a COMPLETE trial; --best 4" in one_line_error(
        ["predict", *cli(study, "--best", "4"), *base]
    )
    assert "missing.zip: model zip not found" in one_line_error(
        ["predict", "--model", str(tmp_path / "missing.zip"), *base]
    )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.png").write_bytes(b"")
    assert "full: already holds files" in one_line_error(
        ["predict", *cli(study, "--trial", "0"), "--input", str(study["images"]), "--out", str(tmp_path / "full")]
    )
    assert "missing.db" in one_line_error(
        [
            "export",
            "--storage",
            f"sqlite:///{tmp_path / 'missing.db'}",
            "--study-name",
            "x",
            "--trial",
            "0",
            "--out",
            "m.zip",
        ]
    )
    assert "emptied/last.pt: checkpoint not found" in one_line_error(
        ["export", *cli(study, "--trial", "4"), "--out", str(tmp_path / "e.zip")]
    )
    assert not (tmp_path / "e.zip").exists()


@pytest.mark.parametrize("state", [TrialState.RUNNING, TrialState.PRUNED, TrialState.FAIL])
def test_a_trial_that_evaluated_no_network_needs_an_explicit_checkpoint(state):
    """``--trial N`` of a RUNNING (or stopped, or failed) trial: its run evaluated no network, so the default
    ``selected`` checkpoint is refused in one line; ``last`` and ``best`` take its latest checkpoint."""
    trial = create_trial(
        state=state,
        value=None,
        params={},
        distributions={},
        user_attrs={"trial_dir": "/runs/t0", "trial_name": "l2=0.005_seed=0_rerun=0"},
        intermediate_values={1: 0.5} if state == TrialState.PRUNED else None,
    )
    trial.number = 0
    with pytest.raises(UserError, match=rf"trial 0 is {state.name}: its run evaluated no network; give --checkpoint"):
        select_networks([trial], "tiny", trial=0)
    for checkpoint in ("last", "best"):
        (chosen,) = select_networks([trial], "tiny", trial=0, checkpoint=checkpoint)
        assert chosen.number == 0 and chosen.run_dir == Path("/runs/t0")


def test_a_folder_holding_another_run_without_a_registered_checkpoint_is_refused(study, tmp_path, one_line_error):
    """The trial recorded one run config (``config_hash``); its folder now holds another and the study has no
    checkpoint of the trial: refused, never the folder's other network. Export alike."""
    folder = study["runs"]["l2=0.005_seed=0_rerun=0"].out_dir
    storage = f"sqlite:///{tmp_path / 'swapped.db'}"
    swapped = optuna.create_study(study_name="swapped", storage=storage, direction="maximize")
    record_trial(swapped, "l2=0.005_seed=0_rerun=0", folder, 5e-3, 0, 0.5, config_hash="0123456789abcdef")
    argv = ["--storage", storage, "--study-name", "swapped", "--trial", "0"]
    for command in (
        ["predict", *argv, "--input", str(study["images"]), "--out", str(tmp_path / "o")],
        ["export", *argv, "--out", str(tmp_path / "m.zip")],
    ):
        line = one_line_error(command)
        assert f"trial 0: its run folder {folder} now holds another run" in line, line
        assert "the trial recorded 0123456789abcdef" in line and "holds no checkpoint of it" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.zip").exists()


def test_a_model_zip_refuses_study_options_and_a_second_copy_of_itself(study, tmp_path, one_line_error):
    zip_path = tmp_path / "model.zip"
    assert main(["export", *cli(study, "--trial", "1"), "--out", str(zip_path)]) == 0
    base = ["predict", "--model", str(zip_path), "--input", str(study["images"]), "--out", str(tmp_path / "o")]
    assert one_line_error([*base, "--checkpoint", "best"]).endswith(
        "--checkpoint: for a study's networks; a --model zip holds one network"
    )
    assert "--storage, --study-name: for a study's" in one_line_error([*base[:3], *cli(study), *base[3:]])
    copy = ["--model", str(tmp_path / "." / "model.zip")]  # the same file by another spelling
    assert one_line_error([*base, *copy]).endswith("is given twice: an ensemble member would count double")
    assert not (tmp_path / "o").exists()
