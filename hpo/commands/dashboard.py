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
    from hpo.storage import existing_storage, find_storage, mask_url, resolve, storage_file

    url = resolve(args.storage) if args.storage else find_storage()
    storage = existing_storage(url)  # a missing file, bad URL, missing driver or unreachable server: one line
    path = storage_file(url)
    from optuna.artifacts import FileSystemArtifactStore

    from hpo.artifacts import store_folder

    folder = store_folder([s.user_attrs for s in storage.get_all_studies()], path, args.artifacts)
    store = FileSystemArtifactStore(str(folder)) if folder is not None else None
    # a port that cannot be had is one line, before any banner
    server = bind_server(storage, args.host, args.port, artifact_store=store)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {mask_url(url)} (Ctrl-C stops it)", flush=True)
    if folder is not None:
        print(f"artifacts: {folder}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def bind_server(storage, host: str, port: int, artifact_store=None):
    """optuna-dashboard's WSGI app (``optuna_dashboard.wsgi``, listing ``artifact_store``'s files) on a wsgiref
    server bound to ``host:port``.

    optuna-dashboard's own ``run_server`` prints "Listening on" before it binds and ends in a traceback
    when the port is busy (optuna#5030); here the bind comes first and every failure is one line.

    Raises:
        UserError: a port outside 1-65535, a port in use, or a host that is no address of this machine.
    """
    import errno
    import socket
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from optuna_dashboard import wsgi

    from lgeseg.errors import UserError

    if not 1 <= port <= 65535:
        raise UserError(f"--port {port}: a port must be 1-65535")

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args) -> None:  # one line per request on stderr otherwise
            pass

    try:
        return make_server(host, port, wsgi(storage, artifact_store=artifact_store), handler_class=Quiet)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: not a known host name or address ({exc.strerror})") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use (another dashboard or server?); pick another --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = f"{host} is not an address of this machine; use 127.0.0.1"
        elif exc.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need privileges); pick a port above 1023"
        else:
            reason = exc.strerror or str(exc)
        raise UserError(f"dashboard cannot listen on {host}:{port}: {reason}") from None
