"""``python -m hpo.run dashboard``: optuna-dashboard on a study's storage, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse

from lgeseg.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard", help="browse a study with optuna-dashboard",
        description="Serve optuna-dashboard on the Optuna storage of a grid study. It binds 127.0.0.1 unless "
                    "--host says otherwise; anyone who can reach the port can read and annotate the study.")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage URL (default: the only study folder under runs/)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.set_defaults(func=main)


def find_storage(runs: str = "runs") -> str:
    """The storage of the only study under ``runs/``; several or none is an error."""
    from pathlib import Path

    found = sorted(Path(runs).glob("*/study.db"))
    if len(found) != 1:
        names = ", ".join(str(p) for p in found) or "none"
        raise UserError(f"--storage not given and {len(found)} study databases found under {runs}/ ({names}); "
                        f"pass --storage sqlite:///PATH")
    return f"sqlite:///{found[0].resolve()}"


def main(args: argparse.Namespace) -> int:
    from dashboards.load import journal_path, mask_url, open_storage, sqlite_path

    storage = args.storage or find_storage()
    db = sqlite_path(storage) or journal_path(storage)
    if db is not None and not db.is_file():
        raise UserError(f"storage {mask_url(storage)}: file {db} not found")
    from optuna_dashboard import run_server

    print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {mask_url(storage)} (Ctrl-C stops it)",
          flush=True)
    run_server(open_storage(storage), host=args.host, port=args.port)
    return 0
