"""``record``: record run folders written by ``train`` (here or on a machine without Ray) into a grid study.

The checks and the writing are :mod:`hpo.recording`; a new study is created from ``--config`` and the runs'
data, as ``grid`` would have created it (:func:`hpo.study.prepare_study`). Nothing here imports Ray.
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
        "protocol, one not a point of the study, or one already recorded is refused and nothing is written.",
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
    parser.set_defaults(func=main)


def _existing(url: str, name: str):
    """The study ``name`` in ``url``, or None, without creating a database file that is not there."""
    import optuna

    from hpo.storage import open_storage, stored_studies

    if name not in [s.study_name for s in stored_studies(url)]:
        return None
    return optuna.load_study(study_name=name, storage=open_storage(url))


def main(args: argparse.Namespace) -> int:
    import io

    from hpo.artifacts import STORE_DIR, writing_store
    from hpo.recording import plan_recordings, write_recording
    from hpo.storage import default_study_dir, mask_url, resolve, storage_file
    from hpo.study import prepare_study
    from hpo.study_config import check_recordable, load_study_config
    from lgeseg.config import without_neutral
    from lgeseg.errors import ConfigError

    url = resolve(args.storage)
    study = _existing(url, args.study_name)
    given = load_study_config(args.config, args.overrides) if args.config else None
    if study is None and given is None:
        raise ConfigError(f"study '{args.study_name}' is not in {mask_url(url)}; give --config FILE to create it")
    config = dict(study.user_attrs["config"]) if study is not None and "config" in study.user_attrs else given
    if config is None:
        raise ConfigError(f"study '{args.study_name}' has no stored config; give --config FILE (its study config)")
    if study is not None and given is not None:
        given = {**given, "data": config.get("data")}
        if without_neutral(given) != without_neutral(config):
            raise ConfigError(f"{args.config}: not the config study '{args.study_name}' was started with")
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
