"""The one study driver: a space of configurations times replicates, trained on Ray Tune, recorded in Optuna.

:func:`run_study` holds only the flow, the same for a grid and a sampled search: it reads the data once
(:func:`describe_data`), starts or joins Ray and checks the cluster (:mod:`hpo.cluster`), opens (or, with
``resume``, reopens) the record (:func:`prepare_study`, :mod:`hpo.storage`), works out from it what is
still owed (:func:`hpo.record.plan_study`), runs the attempts on Ray Tune with the retune rule
(:func:`tune_study`) and prints the closing table (:mod:`hpo.closing_table`). Every study's configurations
come from Optuna's sampler (:mod:`hpo.sampling`), a grid's from its ``GridSampler``. The report is the
command's business.
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from lgeseg.config import config_hash, first_difference, without_neutral
from lgeseg.data import folds_record, load_dataset, split_from_config
from lgeseg.errors import ConfigError, UserError
from lgeseg.fingerprint import check_same, data_fingerprint
from lgeseg.models import halvings
from lgeseg.padding import check_size
from lgeseg.train import steps_per_epoch

from .closing_table import format_summary, summary_rows
from .cluster import check_device, check_resources, start_ray
from .driver_lock import hold_study
from .record import (
    Attempt,
    ConfigurationPlan,
    close_unstarted,
    sampler_study_name,
)
from .rule import RetuneRule
from .sampling import Sampling, plan, reconcile
from .storage import (
    check_resumable,
    default_storage,
    default_study_dir,
    mask_url,
    open_storage,
    resolve,
    start_study,
)
from .study_config import (
    check_recordable,
    max_epochs,
    replicates,
    run_config_of,
    sampler_settings,
    space,
    values_of,
)
from .study_owner import claim_study, study_command

os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the recorder keeps the results
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")


@dataclass
class StudyResult:
    """What a study run leaves: where its record is and where each configuration's replicates stand."""

    study_name: str  #: the record's Optuna study name
    storage: str  #: its storage URL (unmasked: print it only through :func:`hpo.storage.mask_url`)
    out_dir: Path  #: the study folder (``config.yaml``, ``trials/``, the SQLite file by default)
    rows: list[dict[str, Any]]  #: one per configuration and replicate, see :func:`hpo.closing_table.summary_rows`
    unfinished: bool  #: whether ``--resume`` still has work (attempts owed, configurations to sample)


def model_variants(config: dict) -> list[dict]:
    """Every ``model`` section a study's trials can use: the config's own with each combination of the
    space's categorical ``model.*`` choices (a grid's ``architecture`` axis included)."""
    axes = {k: d.choices for k, d in space(config).items() if k.startswith("model.") and hasattr(d, "choices")}
    variants = []
    for values in itertools.product(*axes.values()):
        model = dict(config["model"])
        model.update({k.split(".", 1)[1]: v for k, v in zip(axes, values)})
        variants.append(model)
    return variants


def describe_data(config: dict) -> dict[str, Any]:
    """Read the data set once in the driver, so a bad folder, or images a network of the study cannot take,
    fail here with one clear line, not in every trial; the synthetic phantom is generated here, once.

    The image-size rule is :func:`lgeseg.models.halvings`, as ``train`` applies it: a MONAI U-Net with
    strides [1, 2, 2, 2] takes any sides divisible by 8.

    Returns the study attributes of the data: folder, labels, and the data and split fingerprints that
    ``--resume`` compares (:mod:`lgeseg.fingerprint`; under ``split.folds`` the split covers every fold).

    Raises:
        DataError: a bad folder, ``split.folds`` above the number of patients, a ``split.stratify`` column
            missing from the manifest (one line each, before anything is written).
        TrainingError: a batch size the study can use (its train section, space or retune adjustments) is
            larger than the (smallest fold's) training split (:func:`lgeseg.train.steps_per_epoch`).
    """
    dataset = load_dataset(config["data"])
    for model in model_variants(config):
        check_size(*dataset.images.shape[1:], halvings(model), model["pad"])
    # Too many folds or a stratify column missing: one line, here. A cross-validated study's split
    # fingerprint covers every fold (lgeseg.data.folds_record); each trial still records its own fold's.
    if config["split"].get("folds") is not None:
        split = folds_record(dataset, config["split"])
        parts = {f" of fold {f}": len(p["train"]) for f, p in enumerate(split["fold_splits"])}
    else:
        split = split_from_config(dataset, config["split"]).to_json(dataset)
        parts = {"": len(split["train"])}
    fold, n_train = min(parts.items(), key=lambda kv: kv[1])
    for where, batch_size in values_of(config, "train.batch_size"):  # every trial would fail: say it once, here
        steps_per_epoch(n_train, batch_size, f"config key '{where}':", fold)
    return {
        "data_dir": str(Path(dataset.root).resolve()),
        "labels": dataset.labels,
        "synthetic": dataset.synthetic,
        "data_fingerprint": data_fingerprint(dataset),
        "split": split,
    }


def trial_config(config: dict, attempt: Attempt, out_dir: Path) -> dict[str, Any]:
    """What the Ray trial of ``attempt`` receives."""
    # the hyperparameter changes a rerun carries (None for the protocol's own attempt)
    adjustment = dict(config["retune"]["adjustments"][attempt.rerun - 1]) if attempt.rerun > 0 else None
    run = run_config_of(config, attempt.configuration.values, attempt.replicate, adjustment)
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
    """Open (or create) the record a run writes into; store its config and data attributes when new, or
    refuse a resume whose config differs from the stored one, naming the first differing key."""
    study = start_study(storage, name, resume)
    claim_study(study, study_command(config), mask_url(storage))  # --resume continues only its own kind
    stored = study.user_attrs.get("config")
    if stored is not None and without_neutral(stored) != without_neutral(config):  # keys added since: neutral
        key, now, was = first_difference(config, stored)
        raise ConfigError(
            f"the config differs from the one study '{name}' was started with: {key} ({was!r} stored, {now!r} "
            f"now); resume with the same config or use a new --study-name"
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


def open_sampler_study(config: dict, record: optuna.Study, storage: str) -> optuna.Study:
    """The study's sampler study beside the record (created on first use), reconciled with it."""
    sampler_study = optuna.create_study(
        storage=open_storage(storage),
        study_name=sampler_study_name(record.study_name),
        direction="maximize",
        load_if_exists=True,
    )
    attrs = sampler_study.user_attrs  # its own, or a new one: never a study another command or tool made
    if attrs.get("record_study") != record.study_name and (attrs or sampler_study.get_trials(deepcopy=False)):
        raise UserError(
            f"study '{sampler_study.study_name}' in {mask_url(storage)} is not the sampler study of study "
            f"'{record.study_name}': give another --study-name"
        )
    sampler_study.set_user_attr("record_study", record.study_name)
    reconcile(config, record, sampler_study)
    return sampler_study


def _header(config: dict, name: str, storage: str, plans: list[ConfigurationPlan]) -> str:
    sampler = sampler_settings(config)
    open_ = [p for p in plans if not p.told]
    return (
        f"study '{name}' in {mask_url(storage)}: {sampler['n_trials']} configurations "
        f"({sampler['sampler']} sampler, {len(replicates(config))} replicate(s) each), "
        f"{len(plans) - len(open_)} finished, {len(open_)} in progress, {sampler['n_trials'] - len(plans)} to sample"
    )


def _unfinished(config: dict, plans: list[ConfigurationPlan]) -> bool:
    """Whether ``--resume`` has work: attempts owed, or configurations still to sample."""
    return any(p.owed for p in plans) or len(plans) < sampler_settings(config)["n_trials"]


def run_study(
    config: dict,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    stream=None,
    wait: bool = False,
) -> StudyResult:
    """Run (or finish, with ``resume``) the study ``config``, a grid or a search; see the module docstring.

    Args:
        config: a validated study config (:func:`hpo.study_config.load_study_config`).
        storage: Optuna storage URL or bare file path; default ``<out_dir>/study.db``.
        study_name: default the config's ``name``.
        out_dir: study folder; default ``runs/<study_name>``.
        resume: finish an existing study of that name (otherwise an existing one is an error).
        address: a Ray cluster to join instead of starting a local Ray with ``num_cpus`` CPUs.
        stream: where progress and the closing table are printed (default stdout).
        wait: when another driver holds the study, wait for it to end instead of refusing.

    Returns:
        the study's :class:`StudyResult`.

    Raises:
        UserError: a value the record cannot store (:func:`hpo.study_config.check_recordable`), bad data,
            images a network of the study cannot take, a batch larger than the training split, data that
            changed since the study began, ``train.device: cuda`` without a GPU per trial, a cluster that cannot
            hold a trial, a storage that cannot be opened or stays busy, a study another live driver holds
            (:mod:`hpo.driver_lock`), an existing study without ``resume`` (a missing one with it), or a config
            that differs from the stored one (:class:`~lgeseg.errors.ConfigError`); each before any trial runs.
    """
    stream = stream or sys.stdout
    name = study_name or config["name"]
    check_recordable(config)
    data = describe_data(config)
    check_device(config["resources"], config["train"]["device"])
    out = Path(out_dir or default_study_dir(name)).resolve()
    storage = resolve(storage) if storage else default_storage(out)
    if resume:  # a mistyped --study-name or --storage must not start a new study
        check_resumable(storage, name)
    start_ray(address, num_cpus)  # before anything is stored: a cluster that cannot run a trial is an error
    check_resources(config["resources"])
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with hold_study(storage, name, wait=wait, stream=stream):  # one driver per study (hpo.driver_lock)
            record = prepare_study(config, name, storage, out, resume, data, stream)
            close_unstarted(record)
            sampler_study = open_sampler_study(config, record, storage)
            plans = plan(config, record, sampler_study)
            print(_header(config, name, storage, plans), file=stream)
            if _unfinished(config, plans):
                tune_study(config, record, sampler_study, plans, out, stream)
            whole = plan(config, record, sampler_study, unsampled=True)  # a grid's unsampled points too
            rows = summary_rows(whole)
            print(format_summary(rows), file=stream)
            also = f" (studies '{name}' and '{sampler_study_name(name)}')"
            print(f"storage: {mask_url(storage)}{also}\ntrials:  {out / 'trials'}", file=stream)
            sampled = [p for p in whole if p.sampler_number is not None]  # plan() without unsampled
            return StudyResult(name, storage, out, rows, _unfinished(config, sampled))
    except UserError:
        if made and not any(out.iterdir()):  # refused (held, bad storage, ...): leave no empty folder
            out.rmdir()
        raise


def tune_study(
    config: dict, record, sampler_study, plans: list[ConfigurationPlan], out: Path, stream, scheduler=None
) -> None:
    """Run Ray Tune until the searcher has nothing left: one trainable per attempt with the config's
    resources, the retune stopper, the recorder and the progress lines (a search may add ASHA). The
    recorder's queued writes are flushed at the end."""
    from ray import tune

    from .artifacts import STORE_DIR, writing_store
    from .recorder import OptunaRecorder
    from .searcher import RetuneStopper, StudySearcher
    from .trainable import train_trial
    from .tune_progress import ProgressPrinter, quiet_trial_failures

    rule = RetuneRule.from_config(config["retune"])
    max_reruns = config["retune"]["max_reruns"]
    recorder = OptunaRecorder(record, rule, max_reruns, artifact_store=writing_store(record, out / STORE_DIR))
    attempts = [a for p in plans for a in p.owed]
    sampling = Sampling(config, record, sampler_study, plans, stream)
    if sampler_settings(config)["scheduler"] == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # ASHA stops every trial that reaches max_t; one past the last epoch lets a trial that survives
        # the rungs send its final report (the evaluated network) instead of being cut at its last epoch.
        scheduler = ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=max_epochs(config) + 1)
    searcher = StudySearcher(
        attempts, rule, max_reruns, lambda a: trial_config(config, a, out), sampling, recorder.trial_number
    )
    resources = {"cpu": config["resources"]["cpu"], "gpu": config["resources"]["gpu"]}
    tuner = tune.Tuner(
        tune.with_resources(train_trial, resources),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=-1, reuse_actors=True),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(out / "ray"),
            stop=RetuneStopper(rule),
            callbacks=[recorder, ProgressPrinter(rule, max_reruns, stream)],
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )
    try:
        with quiet_trial_failures():  # a failed trial is its one-line reason, not Ray's traceback
            tuner.fit()
    finally:
        recorder.close()
