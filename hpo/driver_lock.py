"""One driver per study: ``with hold_study(storage, name):`` around everything a driver reads and writes.

Two drivers on one study (a requeued SLURM job while the first still runs, ``--resume`` typed in a
second terminal) would each take the other's RUNNING trials for interrupted and train them in the same
folders at once. :func:`hold_study` lets one driver in; a second refuses with one line naming the
holder's host and pid, or with ``wait`` blocks until the holder ends.

Why OS and database locks rather than a lease with a heartbeat in the Optuna storage: a lease must
expire before a crashed driver's study can be resumed (a guess: too short and a slow, live driver loses
its study; too long and ``--resume`` after a crash waits), and the heartbeat writes compete with the
trials' own writes on a busy SQLite file. The locks used here belong to the holding process and vanish
with it, at once, however it ends (exit, exception, SIGKILL, OOM killer, a cancelled job):

- SQLite and journal files: ``fcntl.flock`` on a side file next to the storage file,
  ``<file>.<study>.driver.lock`` (:class:`lgeseg.filelock.HeldFile`), holding the holder's host, pid
  and start time as JSON for the message;
- PostgreSQL: ``pg_try_advisory_lock`` on a connection kept open for the driver's lifetime; the server
  drops the lock when that connection ends (TCP keepalives bound how long a vanished machine keeps it),
  and the connection's ``application_name`` carries host and pid, so the refusal can name the holder
  from ``pg_stat_activity``;
- other database servers (MySQL, ...): no lock; a warning says so once.

Optuna only (no Ray), so the drivers, the report and the tests can use it.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lgeseg.filelock import HeldFile, LockHeldError, describe_holder

from .storage import StorageError, mask_url, open_storage, resolve, storage_file

#: First key of every advisory lock this tool takes (``'lges'``), so its locks never meet another tool's.
ADVISORY_NAMESPACE = 0x6C676573


def lock_file(storage_file_path: Path, study_name: str) -> Path:
    """The side file that locks ``study_name`` of the SQLite/journal file ``storage_file_path``.

    The study name is kept readable where it can be and made unique by a hash (names may hold ``/``).
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name)[:60]
    digest = hashlib.sha1(study_name.encode()).hexdigest()[:8]
    return storage_file_path.with_name(f"{storage_file_path.name}.{safe}-{digest}.driver.lock")


def advisory_key(study_name: str) -> int:
    """The second (int4) key of the study's PostgreSQL advisory lock: the first 4 bytes of its SHA-1."""
    return int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:4], "big", signed=True)


def _say(stream, text: str) -> None:
    print(f"warning: {text}", file=stream or sys.stderr, flush=True)


@contextmanager
def hold_study(storage: str, study_name: str, wait: bool = False, stream=None) -> Iterator[None]:
    """Hold ``study_name`` in ``storage`` for the block: the only driver of that study while inside it.

    Args:
        storage: Optuna storage URL or bare path (:func:`hpo.storage.resolve`).
        study_name: the study the driver runs (a search's record study; its sampler study goes with it).
        wait: block until the holder ends (saying once on ``stream`` whom it waits for) instead of refusing.
        stream: where the waiting line goes (default stderr).

    Raises:
        LockHeldError: another live driver holds the study and ``wait`` is False; one line naming its
            host and pid.
        StorageError: the PostgreSQL server cannot be reached for the lock; a storage without a driver lock
            cannot be opened (a missing driver, a bad URL: one line, and no warning before it).
    """
    url = resolve(storage)
    what = f"study '{study_name}' in {mask_url(url)}"
    path = storage_file(url)
    if path is not None and not path.parent.is_dir():
        yield  # no such folder: opening the storage next fails with its own one line (never created here)
    elif path is not None:
        lock = HeldFile(lock_file(path, study_name), what)
        lock.acquire(wait, on_wait=lambda holder: _say(stream, f"{what} is held by {holder}: waiting for it to end"))
        try:
            yield
        finally:
            lock.release()
    elif url.startswith(("postgresql", "postgres")):
        with _advisory_lock(url, study_name, what, wait, stream):
            yield
    else:  # a storage that cannot be opened is its one error line, never this warning before it
        open_storage(url)
        _say(stream, f"{what}: no driver lock on this kind of storage; make sure only one driver runs this study")
        yield


@contextmanager
def _advisory_lock(url: str, study_name: str, what: str, wait: bool, stream) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    key = advisory_key(study_name)
    record = f"lgeseg driver pid={os.getpid()} host={socket.gethostname()}"[:63]  # application_name: 63 bytes at most
    try:
        engine = sqlalchemy.create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": record,
                "keepalives": 1,
                "keepalives_idle": 30,
                "keepalives_interval": 10,
            },
        )
        connection = engine.connect()
    except Exception as exc:  # noqa: BLE001 - a driver, URL or network error: one line, password masked
        text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StorageError(
            f"{what}: cannot take the driver lock ({mask_url(text[0] if text else type(exc).__name__)})"
        ) from None
    try:
        args = {"ns": ADVISORY_NAMESPACE, "key": key}
        got = connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:ns, :key)"), args).scalar()
        if not got:
            holder = _advisory_holder(connection, key)
            if not wait:
                raise LockHeldError(
                    f"{what} is held by {holder}; wait for it to end, or pass --wait to start when it does"
                )
            _say(stream, f"{what} is held by {holder}: waiting for it to end")
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:ns, :key)"), args)
        connection.commit()
        yield
    finally:
        connection.close()  # ends the session: the server releases its advisory locks
        engine.dispose()


def _advisory_holder(connection, key: int) -> str:
    """The holder of the study's advisory lock as ``process <pid> on host <host> (since <time>)``."""
    import sqlalchemy

    row = connection.execute(
        sqlalchemy.text(
            "SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :ns "
            "AND l.objid::bigint = :key AND l.objsubid = 2"
        ),
        {"ns": ADVISORY_NAMESPACE, "key": key & 0xFFFFFFFF},
    ).first()
    connection.rollback()
    if row is None:
        return describe_holder(None)
    found = dict(re.findall(r"(pid|host)=(\S+)", row[0] or ""))
    if not found:
        return f"database session '{row[0]}' (since {row[1]:%Y-%m-%dT%H:%M:%S%z})"
    return describe_holder({**found, "started": f"{row[1]:%Y-%m-%dT%H:%M:%S%z}"})


__all__ = ["ADVISORY_NAMESPACE", "advisory_key", "hold_study", "lock_file"]
