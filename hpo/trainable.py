"""The Ray Tune function trainable: one :func:`lgeseg.run.run` per trial, reported epoch by epoch.

Every epoch goes to Tune with ``tune.report`` (the retune stopper and the Optuna recorder read it); the
last report carries the finished run's metrics, so the driver never has to read a worker's files. The
run writes its checkpoints into its own trial folder, so an interrupted trial continues from there.
"""

from __future__ import annotations

from typing import Any

import ray
import torch
from ray import tune

from lgeseg.run import run
from lgeseg.train import EpochStats

from .record import TrialReport


def _epoch_report(stats: EpochStats, node_id: str) -> dict[str, Any]:
    return TrialReport(
        epoch=stats.epoch,
        epochs=stats.epochs,
        train_loss=stats.train_loss,
        train_accuracy=stats.train_accuracy,
        val_loss=stats.val_loss,
        val_accuracy=stats.val_accuracy,
        best_val_accuracy=stats.best_val_accuracy,
        epoch_seconds=stats.seconds,
        replayed=stats.replayed,
        node_id=node_id,
    ).to_result()


def train_trial(config: dict[str, Any]) -> None:
    """Run one attempt; ``config`` is built by :func:`hpo.study.trial_config`."""
    torch.set_num_threads(config["threads"])
    node_id = ray.get_runtime_context().get_node_id()  # recorded per trial: which cluster node ran it
    result = run(config["run"], config["trial_dir"], on_epoch=lambda stats: tune.report(_epoch_report(stats, node_id)))
    history, info = result.history, result.info
    final = TrialReport(
        epoch=len(history),
        epochs=config["run"]["train"]["epochs"],
        finished=True,
        val_accuracy=history[-1]["val_accuracy"] if history else float("nan"),
        best_val_accuracy=info["best_val_accuracy"],
        val_MeanIoU=result.val_metrics["dataset"]["MeanIoU"],
        val_metrics=result.val_metrics["dataset"],
        test_metrics=result.test_metrics,
        run_info=info,
        node_id=node_id,
    )
    tune.report(final.to_result())
