"""A search study: Optuna's sampler proposes configurations, Ray Tune trains each one's seeds, one record.

:func:`run_search` is :func:`hpo.grid.run_grid` for a ``search:`` config: it opens (or, with ``resume``,
reopens) the record and the sampler study, reconciles them and works out what is owed
(:mod:`hpo.optuna_searcher`), runs the attempts on Ray Tune with the retune rule (and ASHA when the config
asks), and prints a summary of the configurations.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgeseg.config import config_hash
from lgeseg.errors import UserError
from lgeseg.tables import fmt, format_table

from .attempts import adjustment_for, close_unstarted
from .cluster import check_resources, start_ray
from .driver_lock import hold_study
from .grid import describe_data, fit, prepare_study
from .optuna_searcher import (
    OptunaSearcher,
    SeedAttempt,
    configuration_trials,
    plan_search,
    reconcile,
    sampler_study_name,
)
from .rule import RetuneRule
from .search_config import configuration_run_config, distributions, max_epochs
from .storage import default_storage, default_study_dir, mask_url, open_storage, resolve


@dataclass
class SearchResult:
    """What a search run leaves: where its record is and where each configuration stands."""

    study_name: str  #: the record's Optuna study name (the sampler's is :func:`sampler_study_name` of it)
    storage: str  #: its storage URL (unmasked: print it only through :func:`hpo.storage.mask_url`)
    out_dir: Path  #: the study folder
    rows: list[dict[str, Any]]  #: one per configuration, see :func:`configuration_rows`


def search_trial_config(config: dict, attempt: SeedAttempt, out: Path) -> dict[str, Any]:
    """What the Ray trial of ``attempt`` receives (the shape :func:`hpo.grid.trial_config` gives a grid's)."""
    adjustment = adjustment_for(config["retune"], attempt.rerun)
    run = configuration_run_config(config, attempt.params, attempt.seed, adjustment)
    return {
        "attempt": attempt.to_config(run["train"]["l2"]),
        "lineage": {"configuration": attempt.record_number, "configuration_index": attempt.configuration},
        "trial_name": attempt.name,
        "trial_dir": str(out / "trials" / attempt.name),
        "run": run,
        "adjustment": adjustment,
        "config_hash": config_hash(run),
        "threads": max(1, int(config["resources"]["cpu"])),
    }


def run_search(
    config: dict,
    storage: str | None = None,
    study_name: str | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    stream=None,
    wait: bool = False,
) -> SearchResult:
    """Run (or finish, with ``resume``) the search study ``config``; see the module docstring.

    Args:
        config: a validated search study config (:func:`hpo.config.load_study_config`).
        storage: Optuna storage URL or bare file path; default ``<out_dir>/study.db``.
        study_name: the record's name; default the config's ``name``.
        out_dir: study folder; default ``runs/<study_name>``.
        resume: finish an existing search of that name (otherwise an existing one is an error).
        address: a Ray cluster to join instead of starting a local Ray with ``num_cpus`` CPUs.
        stream: where progress and the summary are printed (default stdout).
        wait: when another driver holds the study, wait for it to end instead of refusing.

    Returns:
        the search's :class:`SearchResult`, one row per configuration.

    Raises:
        UserError: as :func:`hpo.grid.run_grid`, each before any trial runs.
    """
    import optuna

    stream = stream or sys.stdout
    name = study_name or config["name"]
    data = describe_data(config)
    start_ray(address, num_cpus)
    check_resources(config["resources"])
    out = Path(out_dir or default_study_dir(name)).resolve()
    out.mkdir(parents=True, exist_ok=True)
    storage = resolve(storage) if storage else default_storage(out)
    with hold_study(storage, name, wait=wait, stream=stream):  # one driver per study (hpo.driver_lock)
        record = prepare_study(config, name, storage, out, resume, data, stream)
        sampler_study = optuna.create_study(
            storage=open_storage(storage),
            study_name=sampler_study_name(name),
            direction="maximize",
            load_if_exists=True,
        )
        attrs = sampler_study.user_attrs  # its own, or a new one: never a study another command or tool made
        if attrs.get("record_study") != name and (attrs or sampler_study.get_trials(deepcopy=False)):
            raise UserError(
                f"study '{sampler_study_name(name)}' in {mask_url(storage)} is not the sampler study of search "
                f"'{name}': give another --study-name"
            )
        sampler_study.set_user_attr("record_study", name)
        dists = distributions(config)

        close_unstarted(record)
        reconcile(config, record, sampler_study, dists)
        plan = plan_search(config, record.get_trials(deepcopy=False))
        search = config["search"]
        to_sample = search["n_trials"] - plan.configurations
        print(
            f"study '{name}' in {mask_url(storage)}: {search['n_trials']} configurations "
            f"({search['sampler']} sampler, {search['seeds_per_trial']} seed(s) each), "
            f"{plan.configurations - len(plan.open)} finished, {len(plan.open)} in progress, {to_sample} to sample",
            file=stream,
        )
        if plan.open or to_sample:
            _tune(config, dists, record, sampler_study, plan, out, stream)
        rows = configuration_rows(record)
        print(format_configurations(rows), file=stream)
        print(
            f"storage: {mask_url(storage)} (studies '{name}' and '{sampler_study_name(name)}')\n"
            f"trials:  {out / 'trials'}",
            file=stream,
        )
        return SearchResult(name, storage, out, rows)


def _tune(config: dict, dists, record, sampler_study, plan, out: Path, stream) -> None:
    from .recorder import OptunaRecorder

    rule = RetuneRule.from_config(config["retune"])
    recorder = OptunaRecorder(record, rule, config["retune"]["max_reruns"])
    searcher = OptunaSearcher(
        config,
        dists,
        record,
        sampler_study,
        plan,
        rule,
        lambda a: search_trial_config(config, a, out),
        recorder.trial_number,
        stream,
    )
    scheduler = None
    if config["search"]["scheduler"] == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # ASHA stops every trial that reaches max_t; one past the last epoch lets a trial that survives the
        # rungs send its final report (the evaluated network) instead of being cut at its last epoch.
        scheduler = ASHAScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=max_epochs(config) + 1)
    fit(config, searcher, recorder, out, stream, scheduler=scheduler)


#: Summary status of a configuration trial's state (a PRUNED one whose seed ASHA stopped: "stopped by ASHA").
STATUS = {"COMPLETE": "complete", "PRUNED": "not converged", "FAIL": "failed", "RUNNING": "interrupted"}


def _status(trial) -> str:
    if any(seed["status"] == "pruned" for seed in trial.user_attrs.get("seeds", [])):
        return "stopped by ASHA"
    return STATUS.get(trial.state.name, trial.state.name)


def configuration_rows(record) -> list[dict[str, Any]]:
    """One row per configuration of the record: its params, status, value and spread over seeds."""
    rows = []
    for trial in configuration_trials(record.get_trials(deepcopy=False)):
        attrs = trial.user_attrs
        rows.append(
            {
                "configuration": attrs["configuration"],
                "trial": trial.number,
                "params": dict(trial.params),
                "status": _status(trial),
                "value": trial.value,
                "value_std": attrs.get("value_std"),
                "n_seeds": attrs.get("n_seeds"),
                "reruns": attrs.get("reruns"),
                "test_MeanIoU": attrs.get("test_MeanIoU_mean"),
                "seeds": attrs.get("seeds", []),
            }
        )
    return rows


def format_configurations(rows: list[dict[str, Any]]) -> str:
    """The summary table printed at the end of a search; the best configuration is marked with '*'."""

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else fmt(value)

    keys = list(rows[0]["params"]) if rows else []
    values = [r["value"] for r in rows if r["value"] is not None]
    best = max(values) if values else None
    header = ["config", *keys, "status", "seeds", "reruns", "val MeanIoU", "sd", "test MeanIoU"]
    return format_table(
        header,
        [
            [
                f"c{r['configuration']:03d}" + ("*" if best is not None and r["value"] == best else ""),
                *(cell(r["params"].get(k)) for k in keys),
                r["status"],
                fmt(r["n_seeds"]),
                fmt(r["reruns"]),
                fmt(r["value"]),
                fmt(r["value_std"]),
                fmt(r["test_MeanIoU"]),
            ]
            for r in rows
        ],
    )


__all__ = ["SearchResult", "configuration_rows", "format_configurations", "run_search", "search_trial_config"]
