"""``predict`` on a real (tiny) grid study: the networks the recorder points at give its recorded test metrics."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import copy_test_split, tiny_study

from hpo.run import main
from hpo.study import run_study
from lgeseg.phantom import generate_phantom

pytestmark = pytest.mark.slow


def test_grid_trials_predict_their_recorded_test_metrics(ray_cluster, tmp_path, capsys):
    data = generate_phantom(tmp_path / "phantom", n_patients=5, seed=3)
    config = tiny_study(data, seeds=[0, 1], grid={"l2": [5e-3]}, retune={"max_reruns": 0, "adjustments": []})
    run_study(config, out_dir=tmp_path / "study")
    storage = f"sqlite:///{tmp_path / 'study' / 'study.db'}"
    trials = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    assert len(trials) == 2
    split = json.loads((Path(trials[0].user_attrs["trial_dir"]) / "split.json").read_text())
    # with the phantom's label map and patients, for evaluate
    images, truth = copy_test_split(
        data, split["test"], tmp_path / "images", tmp_path / "truth", ("dataset.json", "manifest.csv")
    )
    study = ["--storage", storage, "--study-name", "tiny"]
    for trial in trials:
        out = tmp_path / f"pred{trial.number}"
        assert main(["predict", *study, "--trial", str(trial.number), "--input", str(images), "--out", str(out)]) == 0
        scored = tmp_path / f"m{trial.number}.json"
        assert main(["evaluate", "--pred", str(out), "--truth", str(truth), "--json", str(scored)]) == 0
        assert json.loads(scored.read_text()) == trial.user_attrs["test_metrics"]
    # the grid point's two seeds are one configuration: --configuration and --best 1 take both
    assert main(["predict", *study, "--best", "--input", str(images), "--out", str(tmp_path / "best")]) == 0
    assert f"2 network(s) ({trials[0].number}:l2=0.005_seed=0_rerun=0, " in capsys.readouterr().out
