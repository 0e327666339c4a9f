"""An exclusive lock on a file that dies with its process, and a record of who holds it.

Two processes must never write one run folder (or drive one study) at once: the second would take the
first's work for interrupted and redo it in the same place. :class:`HeldFile` takes ``fcntl.flock`` on a
lock file, which the kernel releases when the holding process ends in any way (exit, crash, SIGKILL,
a killed SLURM job), so a later run never needs a manual unlock. The holder writes ``host``, ``pid`` and
its start time into the file, only to name it in the message of whoever is refused.

Limits (documented in the README's reliability section): ``flock`` is local to one machine's kernel,
and on NFS it holds across machines only where the NFS client maps it to byte-range locks (Linux NFSv4
does); PostgreSQL studies use the server's advisory lock instead (:mod:`hpo.driver_lock`).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from .errors import UserError


class LockHeldError(UserError):
    """Another live process holds the lock; its message names the holder's host and pid."""


def holder_record() -> dict[str, Any]:
    """What a holder writes about itself: ``host``, ``pid``, ``started`` (UTC, ISO 8601) and ``command``."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv[:3]),
    }


def describe_holder(record: dict[str, Any] | None) -> str:
    """``process <pid> on host <host> (since <time>)`` of a holder record, or a plain phrase when unknown."""
    if not record:
        return "another process (it left no record)"
    text = f"process {record.get('pid')} on host {record.get('host')}"
    return text + (f" (since {record['started']})" if record.get("started") else "")


class HeldFile:
    """An exclusive ``flock`` on ``path`` (created when missing), held until :meth:`release` or process end.

    Args:
        path: the lock file; its parent folder must exist.
        what: the thing locked, for messages (``"study 'x'"``, ``"run folder runs/x/trials/a"``).
    """

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def read_holder(self) -> dict[str, Any] | None:
        """The record the current holder wrote, or None (no file, empty, or unreadable)."""
        try:
            return json.loads(self.path.read_text() or "null")
        except (OSError, ValueError):
            return None

    def acquire(self, wait: bool = False, on_wait=None) -> None:
        """Take the lock.

        Args:
            wait: block until the holder ends or releases instead of refusing.
            on_wait: called once with the holder's description before blocking (``wait`` only).

        Raises:
            LockHeldError: ``wait`` is False and a live process holds it; names host and pid.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(self.read_holder())
            if not wait:
                os.close(fd)
                raise LockHeldError(
                    f"{self.what} is held by {holder} (lock file {self.path}); wait for it to end, "
                    f"or pass --wait to start when it does"
                ) from None
            if on_wait is not None:
                on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        record = json.dumps(holder_record()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the record and release the lock (the file stays: removing it would race a waiter)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> HeldFile:
        if self._fd is None:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["HeldFile", "LockHeldError", "describe_holder", "holder_record"]
