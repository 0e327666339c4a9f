"""``python -m hpo.run dashboard``: optuna-dashboard on a study's storage, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="browse a study with optuna-dashboard",
        description="Serve optuna-dashboard on the Optuna storage of a grid study. It binds 127.0.0.1 unless "
        "--host says otherwise; anyone who can reach the port can read and annotate the study.",
    )
    parser.add_argument(
        "--storage", metavar="URL", help="Optuna storage URL or database file path (default: the only runs/*/study.db)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help="artifact store whose checkpoints the dashboard lists (default: the studies' artifact_store "
        "attr, else artifacts/ beside the storage file)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hpo.storage import StorageError, find_storage, mask_url, open_storage, resolve, storage_file

    url = resolve(args.storage) if args.storage else find_storage()
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise StorageError(f"storage {mask_url(url)}: file {path} not found")
    storage = open_storage(url)  # a bad URL, missing driver or unreachable server is one line here
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import run_server

    from hpo.artifacts import dashboard_store

    folder = dashboard_store(storage, path, args.artifacts)
    store = FileSystemArtifactStore(str(folder)) if folder is not None else None
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {mask_url(url)} (Ctrl-C stops it)", flush=True)
    if folder is not None:
        print(f"artifacts: {folder}", flush=True)
    run_server(storage, host=args.host, port=args.port, artifact_store=store)
    return 0
