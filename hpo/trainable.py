"""The Ray Tune function trainable: one :func:`lgeseg.run.run` per trial, reported epoch by epoch.

Every epoch goes to Tune with ``tune.report`` (the retune stopper and the Optuna recorder read it); the
last report carries the finished run's metrics, so the driver never has to read a worker's files. The
run writes its checkpoints into its own trial folder, so an interrupted trial continues from there.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import ray
import torch
from ray import tune

from lgeseg.run import run
from lgeseg.train import EpochStats

from .record import TrialReport


def _epoch_report(stats: EpochStats, node_id: str) -> dict[str, Any]:
    """An epoch's stats as its Tune report (:class:`TrialReport` calls ``seconds`` ``epoch_seconds``)."""
    values = asdict(stats)
    values["epoch_seconds"] = values.pop("seconds")
    return TrialReport(**values, node_id=node_id).to_result()


def train_trial(config: dict[str, Any]) -> None:
    """Run one attempt; ``config`` is built by :func:`hpo.study.trial_config`."""
    torch.set_num_threads(config["threads"])
    node_id = ray.get_runtime_context().get_node_id()  # recorded per trial: which cluster node ran it
    result = run(config["run"], config["trial_dir"], on_epoch=lambda stats: tune.report(_epoch_report(stats, node_id)))
    tune.report(TrialReport.of_run(result, config["run"]["train"]["epochs"], node_id).to_result())
