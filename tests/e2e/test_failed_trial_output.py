"""A failed trial prints its own one-line reason, not Ray's traceback (hpo.tune_progress.quiet_trial_failures).

Ray's Tune logs each failed trial's traceback at ERROR and, at the end, "Trials did not complete"; on a
terminal that is a 40-line traceback per failed trial. The grid runs as a real process, as a user starts it:
a learning rate that makes the loss NaN fails its one trial.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = "loss became nan at epoch 1"


@pytest.mark.slow
def test_a_failed_trial_is_one_line_and_its_traceback_stays_in_error_txt(make_dataset_dir, tmp_path):
    data = make_dataset_dir()
    sets = [
        "model.width=4",
        "model.depth=2",
        "train.epochs=1",
        "train.batch_size=4",
        "train.learning_rate=1e6",
        "train.precision=fp32",
        "grid.l2=[0.005]",
        "retune.max_reruns=0",
        "retune.adjustments=[]",
        "resources.cpu=1",
        "resources.gpu=0",
    ]
    command = [sys.executable, "-m", "hpo.run", "grid", "--data", str(data), "--out", str(tmp_path / "study")]
    command += ["--no-report", "--num-cpus", "1", *(arg for s in sets for arg in ("--set", s))]
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**clean, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # a failed replicate
    errors = [line for line in result.stdout.splitlines() if "] error " in line]
    assert len(errors) == 1 and EXPECTED in errors[0], result.stdout
    assert "Traceback" not in result.stderr and "Trial task failed" not in result.stderr, result.stderr
    assert "Trials did not complete" not in result.stderr, result.stderr
    (error_txt,) = (tmp_path / "study" / "ray").rglob("error.txt")  # the traceback, kept for who needs it
    assert 'File "' in error_txt.read_text() and EXPECTED in error_txt.read_text()
