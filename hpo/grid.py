"""A grid study: one Ray Tune trial per (L2, seed), the retune rule with reruns, an Optuna record.

:func:`run_grid` opens (or, with ``resume``, reopens) the Optuna study, works out from it what is still
owed, starts or joins Ray, checks the cluster can hold a trial, runs the trials, and prints the summary.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lgeseg.config import config_hash
from lgeseg.data import load_dataset
from lgeseg.errors import ConfigError, UserError

from .config import point_config
from .retune import RetuneRule
from .storage import default_storage, default_study_dir, mask_url, resolve, start_study
from .searcher import Attempt, adjustment_for, plan_attempts

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the recorder keeps the results
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")


@dataclass
class GridResult:
    study_name: str
    storage: str
    out_dir: Path
    rows: list[dict[str, Any]]


def describe_data(data: str | None) -> dict[str, Any]:
    """Read the data set once in the driver, so a bad folder fails here with one clear line, not in every
    trial; the synthetic phantom is generated here, once."""
    dataset = load_dataset(data)
    return {"data_dir": str(Path(dataset.root).resolve()), "labels": dataset.labels,
            "synthetic": dataset.synthetic}


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if a == b else f"{where} ({b!r} stored, {a!r} now)"


def trial_config(config: dict, attempt: Attempt, out_dir: Path) -> dict[str, Any]:
    """What the Ray trial of ``attempt`` receives."""
    adjustment = adjustment_for(config["retune"], attempt.rerun)
    run = point_config(config, attempt.l2, attempt.seed, adjustment)
    return {"attempt": {"l2": attempt.l2, "seed": attempt.seed, "rerun": attempt.rerun,
                        "optuna_number": attempt.optuna_number},
            "trial_name": attempt.name, "trial_dir": str(out_dir / "trials" / attempt.name),
            "run": run, "adjustment": adjustment, "config_hash": config_hash(run),
            "threads": max(1, int(config["resources"]["cpu"]))}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on a ``host:port`` nobody listens on; Ray itself retries for minutes."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # 'auto', ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def _start_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if address:
        _check_reachable(address)
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                               "log_to_driver": False, "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--address {address}: cannot join the Ray cluster ({str(exc).splitlines()[0]})") from None
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=256 * 1024**2, **options)


def check_resources(resources: dict[str, float]) -> None:
    """Fail at once where Ray would leave a trial pending forever."""
    import ray

    cluster = ray.cluster_resources()
    gpus, cpus = cluster.get("GPU", 0.0), cluster.get("CPU", 0.0)
    if resources["gpu"] > gpus:
        raise UserError(f"config key 'resources.gpu' asks for {resources['gpu']:g} GPU per trial but the Ray "
                        f"cluster has {gpus:g}; use --set resources.gpu=0 to train on CPUs, or join a cluster "
                        f"with GPUs (--address)")
    if resources["cpu"] > cpus:
        raise UserError(f"config key 'resources.cpu' asks for {resources['cpu']:g} CPUs per trial but the Ray "
                        f"cluster has {cpus:g}; lower it with --set resources.cpu=N")


def run_grid(config: dict, storage: str | None = None, study_name: str | None = None,
             out_dir: str | Path | None = None, resume: bool = False, address: str | None = None,
             num_cpus: int | None = None, stream=None) -> GridResult:
    """Run (or finish, with ``resume``) the grid study ``config``; see the module docstring."""
    stream = stream or sys.stdout
    name = study_name or config["name"]
    data = describe_data(config["data"])
    _start_ray(address, num_cpus)  # before anything is stored: a cluster that cannot run a trial is an error
    check_resources(config["resources"])
    out = Path(out_dir or default_study_dir(name)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = resolve(storage) if storage else default_storage(out)
    study = start_study(storage, name, resume)

    stored = study.user_attrs.get("config")
    if stored is not None and stored != config:
        raise ConfigError(f"the config differs from the one study '{name}' was started with: "
                          f"{_first_difference(config, stored)}; resume with the same config or use a new "
                          f"--study-name")
    if stored is None:
        for key, value in {"config": config, "out_dir": str(out), **data}.items():
            study.set_user_attr(key, value)
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if data["synthetic"]:
        print(f"data: SYNTHETIC phantom at {data['data_dir']} (no --data given)", file=stream)
    else:
        print(f"data: {data['data_dir']}", file=stream)

    _close_waiting(study)
    plan = plan_attempts(config, study.get_trials(deepcopy=False))
    attempts = [o.attempt for o in plan.values() if o.attempt is not None]
    done = len(plan) - len(attempts)
    print(f"study '{name}' in {mask_url(storage)}: {len(plan)} grid points, {done} already finished, "
          f"{len(attempts)} to run", file=stream)
    if attempts:
        _tune(config, study, attempts, out, stream)
    rows = summary_rows(config, study)
    print(format_summary(rows), file=stream)
    print(f"storage: {mask_url(storage)}\ntrials:  {out / 'trials'}", file=stream)
    return GridResult(name, storage, out, rows)


def _close_waiting(study) -> None:
    """A WAITING trial can only be left by a driver killed between enqueue and ask: close it as FAIL."""
    from optuna.trial import TrialState

    for _ in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        trial.set_user_attr("error", "left unstarted by an interrupted driver")
        study.tell(trial, state=TrialState.FAIL)


def _tune(config: dict, study, attempts: list[Attempt], out: Path, stream) -> None:
    from ray import tune

    from .progress import ProgressPrinter
    from .recorder import OptunaRecorder
    from .retune import RetuneStopper
    from .searcher import GridSearcher
    from .trainable import train_trial

    rule = RetuneRule.from_config(config["retune"])
    max_reruns = config["retune"]["max_reruns"]
    searcher = GridSearcher(attempts, rule, max_reruns, lambda a: trial_config(config, a, out))
    recorder = OptunaRecorder(study, rule, max_reruns)
    resources = {"cpu": config["resources"]["cpu"], "gpu": config["resources"]["gpu"]}
    tuner = tune.Tuner(
        tune.with_resources(train_trial, resources),
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(
            name="tune", storage_path=str(out / "ray"), stop=RetuneStopper(rule),
            callbacks=[recorder, ProgressPrinter(rule, max_reruns, stream)], verbose=0,
            failure_config=tune.FailureConfig(max_failures=0)),
    )
    try:
        tuner.fit()
    finally:
        recorder.close()


def summary_rows(config: dict, study) -> list[dict[str, Any]]:
    """One row per grid point from the storage: its last attempt and the test metrics."""
    from optuna.trial import TrialState

    rows = []
    for seed in config["seeds"]:
        for l2 in config["grid"]["l2"]:
            point = Attempt(l2, seed).point
            attempts = sorted((t for t in study.get_trials(deepcopy=False)
                               if t.user_attrs.get("lineage", {}).get("point") == point),
                              key=lambda t: t.params.get("rerun", 0))
            last = attempts[-1] if attempts else None
            state = "pending" if last is None else {
                TrialState.COMPLETE: "complete", TrialState.PRUNED: "not converged",
                TrialState.FAIL: "failed", TrialState.RUNNING: "interrupted"}.get(last.state, last.state.name)
            test = (last.user_attrs.get("test_metrics") or {}).get("dataset", {}) if last else {}
            rows.append({"l2": l2, "seed": seed, "status": state,
                         "reruns": sum(t.state == TrialState.PRUNED for t in attempts),
                         "epochs": last.user_attrs.get("epochs_run") if last else None,
                         "val_accuracy": last.user_attrs.get("best_val_accuracy") if last else None,
                         "GlobalAccuracy": test.get("GlobalAccuracy"), "MeanIoU": test.get("MeanIoU"),
                         "MeanBFScore": test.get("MeanBFScore"),
                         "trial": last.number if last else None})
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    header = ["L2", "seed", "status", "reruns", "epochs", "val acc", "test GlobalAcc", "test MeanIoU",
              "test MeanBF"]
    table = [header] + [[f"{r['l2']:g}", str(r["seed"]), r["status"], str(r["reruns"]), fmt(r["epochs"]),
                         fmt(r["val_accuracy"]), fmt(r["GlobalAccuracy"]), fmt(r["MeanIoU"]),
                         fmt(r["MeanBFScore"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in table)
