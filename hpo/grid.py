"""A grid study: one Ray Tune trial per (L2, seed), the retune rule with reruns, an Optuna record.

:func:`run_grid` holds only the study's flow: it reads the data once, starts or joins Ray and checks the
cluster (:mod:`hpo.cluster`), opens (or, with ``resume``, reopens) the Optuna study (:mod:`hpo.storage`),
works out from it what is still owed (:func:`hpo.attempts.plan_attempts`), runs the trials on Ray Tune
and prints the summary (:mod:`hpo.summary`). The report is the ``grid`` command's business.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lgeseg.config import config_hash
from lgeseg.data import load_dataset, split_dataset
from lgeseg.errors import ConfigError
from lgeseg.fingerprint import check_same, data_fingerprint
from lgeseg.padding import check_size

from .attempts import Attempt, adjustment_for, close_unstarted, plan_attempts
from .cluster import check_resources, start_ray
from .config import point_config
from .driver_lock import hold_study
from .rule import RetuneRule
from .storage import default_storage, default_study_dir, mask_url, resolve, start_study
from .study_owner import claim_study, study_command
from .summary import format_summary, summary_rows

if TYPE_CHECKING:
    import optuna

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the recorder keeps the results
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")


@dataclass
class GridResult:
    """What a grid run leaves: where its record is and where each grid point stands."""

    study_name: str  #: the Optuna study name
    storage: str  #: its storage URL (unmasked: print it only through :func:`hpo.storage.mask_url`)
    out_dir: Path  #: the study folder (``config.yaml``, ``trials/``, the SQLite file by default)
    rows: list[dict[str, Any]]  #: one per grid point, see :func:`hpo.summary.summary_rows`


def describe_data(config: dict) -> dict[str, Any]:
    """Read the data set once in the driver, so a bad folder, or images the network cannot take, fail here
    with one clear line, not in every trial; the synthetic phantom is generated here, once.

    Returns the study attributes of the data: folder, labels, and the data and split fingerprints that
    ``--resume`` compares (:mod:`lgeseg.fingerprint`).
    """
    dataset = load_dataset(config["data"])
    check_size(*dataset.images.shape[1:], config["model"]["depth"], config["model"]["pad"])
    s = config["split"]
    split = split_dataset(dataset, s["train"], s["val"], s["test"], seed=s["seed"])
    return {
        "data_dir": str(Path(dataset.root).resolve()),
        "labels": dataset.labels,
        "synthetic": dataset.synthetic,
        "data_fingerprint": data_fingerprint(dataset),
        "split": split.to_json(dataset),
    }


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
    run = point_config(config, attempt.l2, attempt.seed, adjustment, attempt.choices)
    return {
        "attempt": attempt.to_config(),
        "trial_name": attempt.name,
        "trial_dir": str(out_dir / "trials" / attempt.name),
        "run": run,
        "adjustment": adjustment,
        "config_hash": config_hash(run),
        "threads": max(1, int(config["resources"]["cpu"])),
    }


def prepare_study(
    config: dict, name: str, storage: str, out: Path, resume: bool, data: dict[str, Any], stream
) -> optuna.Study:
    """Open (or create) the study a run records into; store its config and data attributes when new, or
    refuse a resume whose config differs from the stored one, naming the first differing key (grid and
    search)."""
    study = start_study(storage, name, resume)
    claim_study(study, study_command(config), mask_url(storage))  # --resume continues only its own kind
    stored = study.user_attrs.get("config")
    if stored is not None and stored != config:
        raise ConfigError(
            f"the config differs from the one study '{name}' was started with: "
            f"{_first_difference(config, stored)}; resume with the same config or use a new "
            f"--study-name"
        )
    check_same(
        f"study '{name}'",
        study.user_attrs.get("data_fingerprint"),
        study.user_attrs.get("split"),
        data["data_fingerprint"],
        data["split"],
        "start a new study with --study-name NAME (and --out DIR)",
    )
    if stored is None:
        for key, value in {"config": config, "out_dir": str(out), **data}.items():
            study.set_user_attr(key, value)
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    elif "data_fingerprint" not in study.user_attrs:  # a study started before fingerprints were recorded
        for key in ("data_fingerprint", "split"):
            study.set_user_attr(key, data[key])
    if data["synthetic"]:
        print(f"data: SYNTHETIC phantom at {data['data_dir']} (no --data given)", file=stream)
    else:
        print(f"data: {data['data_dir']}", file=stream)
    return study


def run_grid(
    config: dict,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    stream=None,
    wait: bool = False,
) -> GridResult:
    """Run (or finish, with ``resume``) the grid study ``config``; see the module docstring.

    Args:
        config: a validated study config (:func:`hpo.config.load_study_config`).
        storage: Optuna storage URL or bare file path; default ``<out_dir>/study.db``.
        study_name: default the config's ``name``.
        out_dir: study folder; default ``runs/<study_name>``.
        resume: finish an existing study of that name (otherwise an existing one is an error).
        address: a Ray cluster to join instead of starting a local Ray with ``num_cpus`` CPUs.
        stream: where progress and the summary are printed (default stdout).
        wait: when another driver holds the study, wait for it to end instead of refusing.

    Returns:
        the study's :class:`GridResult`, one row per grid point.

    Raises:
        UserError: bad data, images the network cannot take, data that changed since the study began, a
            cluster that cannot hold a trial, a storage that cannot be opened or stays busy, a study
            another live driver holds (:mod:`hpo.driver_lock`), an existing study without ``resume``, or a
            config that differs from the stored one (:class:`~lgeseg.errors.ConfigError`); each before any trial runs.
    """
    stream = stream or sys.stdout
    name = study_name or config["name"]
    data = describe_data(config)
    start_ray(address, num_cpus)  # before anything is stored: a cluster that cannot run a trial is an error
    check_resources(config["resources"])
    out = Path(out_dir or default_study_dir(name)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = resolve(storage) if storage else default_storage(out)
    with hold_study(storage, name, wait=wait, stream=stream):  # one driver per study (hpo.driver_lock)
        study = prepare_study(config, name, storage, out, resume, data, stream)
        close_unstarted(study)
        plan = plan_attempts(config, study.get_trials(deepcopy=False))
        attempts = [o.attempt for o in plan.values() if o.attempt is not None]
        done = len(plan) - len(attempts)
        print(
            f"study '{name}' in {mask_url(storage)}: {len(plan)} grid points, {done} already finished, "
            f"{len(attempts)} to run",
            file=stream,
        )
        if attempts:
            _tune(config, study, attempts, out, stream)
        rows = summary_rows(config, study)
        print(format_summary(rows), file=stream)
        print(f"storage: {mask_url(storage)}\ntrials:  {out / 'trials'}", file=stream)
        return GridResult(name, storage, out, rows)


def _tune(config: dict, study, attempts: list[Attempt], out: Path, stream) -> None:
    from .recorder import OptunaRecorder
    from .searcher import GridSearcher

    rule = RetuneRule.from_config(config["retune"])
    max_reruns = config["retune"]["max_reruns"]
    searcher = GridSearcher(attempts, rule, max_reruns, lambda a: trial_config(config, a, out))
    fit(config, searcher, OptunaRecorder(study, rule, max_reruns), out, stream)


def fit(config: dict, searcher, recorder, out: Path, stream, scheduler=None) -> None:
    """Run Ray Tune until ``searcher`` finishes: one trainable per trial with the config's resources, the
    retune stopper, ``recorder`` and the progress lines (grid and search; a search may add a trial
    scheduler). The recorder's queued writes are flushed at the end."""
    from ray import tune

    from .progress import ProgressPrinter
    from .retune import RetuneStopper
    from .trainable import train_trial

    rule = RetuneRule.from_config(config["retune"])
    resources = {"cpu": config["resources"]["cpu"], "gpu": config["resources"]["gpu"]}
    tuner = tune.Tuner(
        tune.with_resources(train_trial, resources),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(out / "ray"),
            stop=RetuneStopper(rule),
            callbacks=[recorder, ProgressPrinter(rule, config["retune"]["max_reruns"], stream)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    try:
        tuner.fit()
    finally:
        recorder.close()
