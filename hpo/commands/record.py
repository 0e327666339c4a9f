"""``record``: record run folders written by ``train`` (here or on a machine without Ray) into a grid study.

The checks and the writing are :mod:`hpo.recording`; a new study is created from ``--config`` and the runs'
data, as ``grid`` would have created it (:func:`hpo.study.prepare_study`). It holds the study's driver lock
(:func:`hpo.driver_lock.hold_study`) around every read and write, so a grid running the study meanwhile
cannot train a point it records (nor it record one the grid is about to train). Nothing here imports Ray.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``record`` subcommand."""
    parser = subparsers.add_parser(
        "record",
        help="record finished train run folders into a grid study (no Ray needed)",
        description="Record run folders written by train into a grid study as the trials the grid would have "
        "written (params, validation accuracy per epoch, metrics, lineage; the checkpoint into the study's "
        "artifact store), so report, dashboard and predict treat them like any trial. A new study is created "
        "from --config and the runs' data. Every folder is checked first: a folder of other data or another "
        "protocol, one not a point of the study, or one already recorded is refused and nothing is written. "
        "Like a driver, record holds the study (hpo.driver_lock): while grid or search runs it, record is refused "
        "(or, with --wait, waits for it to end).",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by train")
    parser.add_argument("--storage", required=True, metavar="URL", help="Optuna storage URL or database file path")
    parser.add_argument("--study-name", required=True, metavar="NAME", help="the study to record into")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="study config of a new study (an existing study keeps its own; if given, it must be the same)",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a --config key"
    )
    parser.add_argument("--out", metavar="DIR", help="study folder of a new study (default: the storage file's folder)")
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if a driver (grid, search, another record) holds the study, wait for it to end instead of refusing",
    )
    parser.set_defaults(func=main)


def _existing(url: str, name: str):
    """The study ``name`` in ``url``, or None, without creating a database file that is not there."""
    import optuna

    from hpo.storage import open_storage, stored_studies

    if name not in [s.study_name for s in stored_studies(url)]:
        return None
    return optuna.load_study(study_name=name, storage=open_storage(url))


def main(args: argparse.Namespace) -> int:
    import sys

    from hpo.driver_lock import hold_study
    from hpo.storage import resolve
    from hpo.study_config import load_study_config

    url = resolve(args.storage)
    given = load_study_config(args.config, args.overrides) if args.config else None
    # a grid driver of the study would train a point recorded meanwhile too: one writer at a time, and
    # every check below is made under the lock, so nothing it read can change before the writing
    with hold_study(url, args.study_name, wait=args.wait, stream=sys.stderr):
        return _record(args, url, given)


def _record(args: argparse.Namespace, url: str, given: dict | None) -> int:
    import io

    from hpo.artifacts import STORE_DIR, writing_store
    from hpo.recording import plan_recordings, write_recording
    from hpo.storage import default_study_dir, mask_url, storage_file
    from hpo.study import prepare_study
    from hpo.study_config import check_recordable
    from hpo.study_owner import check_owner
    from lgeseg.config import first_difference, without_neutral
    from lgeseg.errors import ConfigError

    study = _existing(url, args.study_name)
    if study is not None:  # a search's study or its sampler study, another tool's: refused before any check
        check_owner(study, "grid", mask_url(url), "record")
    if study is None and given is None:
        raise ConfigError(f"study '{args.study_name}' is not in {mask_url(url)}; give --config FILE to create it")
    config = dict(study.user_attrs["config"]) if study is not None and "config" in study.user_attrs else given
    if config is None:
        raise ConfigError(f"study '{args.study_name}' has no stored config; give --config FILE (its study config)")
    if study is not None and given is not None:
        given = {**given, "data": config.get("data")}
        if without_neutral(given) != without_neutral(config):
            key, now, was = first_difference(without_neutral(given), without_neutral(config))
            raise ConfigError(
                f"{args.config}: not the config study '{args.study_name}' was started with: {key} is {now!r}, "
                f"the study's is {was!r} (leave --config out to use the study's)"
            )
    check_recordable(config)
    plans, data = plan_recordings(args.run_dirs, config, args.study_name, study)  # every check, nothing written
    if study is None:
        config = {**config, "data": plans[0].run.config["data"]}
        path = storage_file(url)
        out = Path(args.out or (path.parent if path is not None else default_study_dir(args.study_name))).resolve()
    else:
        out = Path(study.user_attrs.get("out_dir") or args.out or default_study_dir(args.study_name))
    out.mkdir(parents=True, exist_ok=True)
    study = prepare_study(config, args.study_name, url, out, study is not None, data, io.StringIO())
    store = writing_store(study, out / STORE_DIR)
    for plan in plans:
        trial = write_recording(study, store, plan)
        print(f"recorded {plan.run.out_dir} as trial {trial.number} ({plan.attempt.name}, {trial.state.name})")
    print(f"study '{args.study_name}' in {mask_url(url)}: {len(plans)} run(s) recorded")
    return 0
