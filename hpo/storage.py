"""Optuna storage for every command: one resolver, one opener, one password mask, one busy-database wait.

``grid``, ``report`` and ``dashboard`` (and :mod:`dashboards`) reach the storage only through this
module, after the example of ``optuna.storages.get_storage``: one place turns what a user typed into a
storage, and one place decides what a failure means.

- :func:`resolve` accepts an Optuna URL as it is, a bare file path ending in ``.log`` as a journal file
  and any other bare path (``runs/x/study.db``, as optuna-dashboard takes it) as a SQLite file.
- :func:`repair_journal` runs whenever a journal file is opened: a record cut off by a crash mid-append
  (optuna#5138) is moved, byte for byte, into a side file ``<file>.torn-<time>``, a warning says so and
  the study goes on; without it the next append would glue a record onto the half line and make the
  whole journal unreadable.
- :func:`open_storage` wraps the Optuna storage so that every call waits while another process (a
  report, optuna-dashboard) holds the SQLite database locked: it says once that it is waiting, tries
  again until :attr:`StorageWait.total_s` has passed, then raises :class:`StorageBusyError`, one line.
  A missing database driver, an unreachable server or a bad URL is a :class:`StorageError`, one line with
  the password masked, never a SQLAlchemy traceback or Optuna's "exceeding max length" guess.
- :class:`RetriedWrites` makes the driver's record writes outlast a storage that fails for a while, and
  says "no space left on device" (:func:`disk_full`) when that is why they failed.

Optuna only: nothing here imports Ray.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from lgeseg.errors import UserError

_log = logging.getLogger(__name__)

#: URL schemes of Optuna's storages (SQLAlchemy dialects): a value starting ``<scheme>:`` without ``//`` is a
#: mistyped URL, not a file name.
_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")

#: Folder of the study folders when neither ``--out`` nor ``--storage`` says otherwise.
RUNS_DIR = Path("runs")
#: Environment variable with the seconds every storage access waits for a busy database (default 60).
WAIT_ENV = "LGESEG_STORAGE_WAIT_S"


class StorageError(UserError):
    """The storage cannot be opened or used: bad URL, missing driver, unreachable server, missing file."""


class StorageBusyError(StorageError):
    """Another process kept the database locked for longer than the wait allows; nothing was written."""


@dataclass(frozen=True)
class StorageWait:
    """How long a storage access waits for a busy database.

    Attributes:
        total_s: seconds from the first "database is locked" until giving up (:class:`StorageBusyError`).
        poll_s: seconds the SQLite driver itself blocks on the lock per try (its ``timeout``), and the
            longest pause between tries.
    """

    total_s: float = 60.0
    poll_s: float = 1.0

    @classmethod
    def from_env(cls) -> StorageWait:
        """The wait of :data:`WAIT_ENV` (seconds), else the default; tests set it short."""
        text = os.environ.get(WAIT_ENV)
        if text is None:
            return cls()
        try:
            total = float(text)
        except ValueError:
            total = -1.0
        if not total >= 0:
            raise StorageError(f"environment variable {WAIT_ENV}: expected seconds >= 0, got {text!r}")
        return cls(total_s=total, poll_s=min(cls.poll_s, max(total / 4, 0.05)))


# ------------------------------------------------------------------------------------------ names


def mask_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``user:***@`` so it can be printed."""
    return re.sub(r"//([^:/@]+):([^@/]*)@", r"//\1:***@", url)


def resolve(storage: str | Path) -> str:
    """The Optuna storage URL of a ``--storage`` value.

    A value with ``://`` or starting ``journal:`` is a URL and kept as it is; a bare path ending in
    ``.log`` becomes ``journal:<path>``; any other bare path becomes ``sqlite:///<path>`` (relative paths
    stay relative to the working folder, as optuna-dashboard reads them).

    Raises:
        StorageError: a database URL missing its ``//`` (``sqlite:/x.db``), which would be taken for a file name.
    """
    text = str(storage)
    if "://" in text or text.startswith("journal:"):
        return text
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", text)  # two letters at least: C:\ is a path
    if scheme and scheme.group(1).split("+")[0].lower() in _SCHEMES:
        raise StorageError(
            f"--storage: a URL needs '://' after '{scheme.group(1)}:' (e.g. sqlite:///PATH, "
            f"postgresql://USER@HOST/DB); the value is not shown, it may hold a password"
        )
    return f"journal:{text}" if text.endswith(".log") else f"sqlite:///{text}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other back ends or in-memory SQLite)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def journal_path(url: str) -> Path | None:
    """The log file of an Optuna journal storage (``journal:///abs/file.log``, ``journal:rel.log`` or a
    bare path ending in ``.log``); None for database URLs."""
    url = resolve(url)
    return Path(url[len("journal:") :].removeprefix("//")) if url.startswith("journal:") else None


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage lives in, None for database servers."""
    return sqlite_path(url) or journal_path(url)


def default_study_dir(study_name: str) -> Path:
    """The folder a grid run of ``study_name`` writes when ``--out`` is not given: ``runs/<name>``."""
    return RUNS_DIR / study_name


def default_storage(study_dir: str | Path) -> str:
    """The storage a grid run keeps in its study folder: ``sqlite:///<study_dir>/study.db``."""
    return f"sqlite:///{Path(study_dir) / 'study.db'}"


def find_storage(runs: str | Path = RUNS_DIR) -> str:
    """The storage of the only study folder under ``runs`` (``runs/*/study.db``); none or several is an error."""
    found = sorted(Path(runs).glob("*/study.db"))
    if len(found) != 1:
        names = ", ".join(str(p) for p in found) or "none"
        raise StorageError(
            f"--storage not given and {len(found)} study databases found under {runs}/ ({names}); "
            f"pass --storage PATH or URL"
        )
    return default_storage(found[0].parent.resolve())


# ---------------------------------------------------------------------------------- busy database


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then each cause (or context) behind it, once each; a wrapped driver error counts too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _busy_reason(exc: BaseException) -> str | None:
    """The "database is locked" message somewhere in ``exc``'s chain, or None for any other error."""
    for current in _chain(exc):
        text = str(getattr(current, "orig", None) or current).splitlines()[0] if str(current) else ""
        if re.search(r"database (table )?is (locked|busy)", text):
            return text.strip()
    return None


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or its cause) says the disk is full: ENOSPC/EDQUOT, or SQLite's "database or disk is full"."""
    return any(
        getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
        or re.search(r"disk is full|no space left on device", str(getattr(e, "orig", None) or e), re.IGNORECASE)
        for e in _chain(exc)
    )


def _root_message(exc: BaseException) -> str:
    """The first line of the innermost cause: the driver's own words rather than a wrapper's."""
    while exc.__cause__ is not None or getattr(exc, "orig", None) is not None:
        exc = getattr(exc, "orig", None) or exc.__cause__  # type: ignore[assignment]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_storage_failure(exc: BaseException) -> bool:
    """Errors of the database layer (as opposed to Optuna's own answers such as a missing study)."""
    if isinstance(exc, (optuna.exceptions.StorageInternalError, OSError)):
        return True
    try:
        import sqlalchemy.exc
    except ImportError:  # journal storages work without SQLAlchemy
        return False
    return isinstance(exc, sqlalchemy.exc.SQLAlchemyError)


def call_with_wait(url: str, what: str, fn: Callable[[], Any], wait: StorageWait | None = None) -> Any:
    """Run one storage access ``fn``, waiting while the database is locked by another process.

    The first "database is locked" logs one warning that it is waiting; tries go on until
    ``wait.total_s`` has passed since then. Any other failure of the database layer is turned into one
    line naming the (masked) storage.

    Raises:
        StorageBusyError: the database stayed locked for the whole wait.
        StorageError: the driver is missing, the server unreachable, the URL bad, or the database broken.
    """
    wait = wait or StorageWait.from_env()
    deadline: float | None = None
    while True:
        try:
            return fn()
        except Exception as exc:
            reason = _busy_reason(exc)
            if reason is None:
                if isinstance(exc, ImportError):
                    raise StorageError(
                        f"storage {mask_url(url)}: its database driver is not installed "
                        f"({_root_message(exc)}); pip install it"
                    ) from None
                if _is_storage_failure(exc):
                    raise StorageError(
                        f"storage {mask_url(url)}: {what} failed ({mask_url(_root_message(exc))})"
                    ) from None
                raise
            now = time.monotonic()
            if deadline is None:
                deadline = now + wait.total_s
                _log.warning(
                    "storage %s is busy (%s; another process such as optuna-dashboard or a report "
                    "holds it): waiting up to %g s",
                    mask_url(url),
                    reason,
                    wait.total_s,
                )
            if now >= deadline:
                raise StorageBusyError(
                    f"storage {mask_url(url)} stayed busy for {wait.total_s:g} s ({reason}) during {what}; "
                    f"nothing stored was lost: close the other process (optuna-dashboard, a report) and run "
                    f"the command again (grid: with --resume), or wait longer with {WAIT_ENV}=SECONDS"
                ) from None
            time.sleep(min(wait.poll_s, deadline - now))


class _WaitingStorage(BaseStorage):
    """An Optuna storage whose every call goes through :func:`call_with_wait`."""

    def __init__(self, inner: BaseStorage, url: str, wait: StorageWait) -> None:
        self._inner = inner
        self._url = url
        self._wait = wait

    @property
    def url(self) -> str:
        """The storage URL (unmasked: print it only through :func:`mask_url`)."""
        return self._url


def _waiting(name: str) -> Callable[..., Any]:
    def method(self: _WaitingStorage, *args: Any, **kwargs: Any) -> Any:
        return call_with_wait(
            self._url, name.replace("_", " "), lambda: getattr(self._inner, name)(*args, **kwargs), self._wait
        )

    method.__name__ = name
    method.__doc__ = getattr(BaseStorage, name).__doc__
    return method


#: Every public method of Optuna's storage API, each delegated with the wait.
WaitingStorage = type(
    "WaitingStorage",
    (_WaitingStorage,),
    {
        name: _waiting(name)
        for name in dir(BaseStorage)
        if not name.startswith("_") and callable(getattr(BaseStorage, name))
    },
)


class RetriedWrites:
    """Storage writes that outlast a storage failing for a while (the driver's recorder makes them).

    A write is retried with backoff; one that keeps failing (or that found the database busy for
    :func:`call_with_wait`'s whole wait) is kept and tried again, in order, before the next write and at
    :meth:`close`, which raises if any is still unwritten.
    """

    def __init__(self, url: str | None, retries: int = 5, retry_wait: float = 0.2) -> None:
        self.url = url  #: the storage written to (None: unnamed); printed only masked
        self.retries = retries
        self.retry_wait = retry_wait
        self._unwritten: list[tuple[str, Callable[[], None], Exception | None]] = []  # (what, write, its error)

    def write(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one storage write (``what`` names it), retrying with backoff; a write that keeps failing is kept."""
        self.flush()
        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                return fn()
            except StorageBusyError as exc:  # call_with_wait has already waited its whole wait: keep it now
                error = exc
                break
            except Exception as exc:  # noqa: BLE001 - any storage error is retried, then kept
                error = exc
                time.sleep(self.retry_wait * 2**attempt)
        _log.warning("Optuna write failed %d times (%s: %s); will retry", self.retries, what, error)
        self._unwritten.append((what, fn, error))
        return None

    def flush(self) -> None:
        """Try the kept writes again, in order; those that fail again stay kept."""
        pending, self._unwritten = self._unwritten, []
        for what, fn, _ in pending:
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                self._unwritten.append((what, fn, exc))

    def close(self) -> None:
        """Write what is still kept; raise if any write could not be made.

        Raises:
            UserError: writes still unwritten after ``retries`` flushes: "no space left on device" naming the
                (masked) storage when the disk is full, else how many failed and the first of them with its
                error.
        """
        for _ in range(self.retries):
            self.flush()
            if not self._unwritten:
                return
            time.sleep(self.retry_wait)
        what, _, error = self._unwritten[0]
        if any(disk_full(e) for _, _, e in self._unwritten):
            where = f"storage {mask_url(self.url)}" if self.url else "the Optuna storage"
            raise UserError(
                f"{where}: no space left on device; {len(self._unwritten)} writes were not recorded (first: "
                f"{what}): free space there, then rerun with --resume"
            )
        reason = mask_url(_root_message(error)) if error is not None else "unknown error"
        raise UserError(
            f"{len(self._unwritten)} Optuna storage writes failed and were not recorded (first: {what}: "
            f"{reason}); rerun with --resume once the storage is reachable"
        )


# ------------------------------------------------------------------------------------ open studies


def open_storage(storage: str | Path, wait: StorageWait | None = None) -> BaseStorage:
    """Open the storage of a ``--storage`` value (URL or bare path; see :func:`resolve`).

    SQLite and journal files are created when missing (``grid`` starts a study so); check
    :func:`storage_file` first where a missing file is an error.

    Raises:
        StorageError: bad URL, missing driver, unreachable server (one line, password masked);
        StorageBusyError: the database stayed locked.
    """
    url = resolve(storage)
    wait = wait or StorageWait.from_env()
    journal = journal_path(url)

    def connect() -> BaseStorage:
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            repair_journal(journal)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite") and "timeout=" not in url:
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": wait.poll_s}}
        return optuna.storages.get_storage(optuna.storages.RDBStorage(url, **kwargs))

    try:
        inner = call_with_wait(url, "opening it", connect, wait)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a URL SQLAlchemy cannot parse raises ValueError, ArgumentError, ...
        raise StorageError(f"storage {mask_url(url)}: opening it failed ({mask_url(_root_message(exc))})") from None
    return WaitingStorage(inner, url, wait)


#: Every record Optuna's journal writes is a JSON object on one line starting with this key.
_RECORD_START = b'{"op_code":'


def _split_torn(line: bytes) -> tuple[bytes, bytes] | None:
    """``(torn, record)`` when ``line`` is a cut-off record with a whole one glued after it, else None."""
    start = line.find(_RECORD_START, 1)
    while start > 0:
        try:
            json.loads(line[start:])
            return line[:start], line[start:]
        except ValueError:
            start = line.find(_RECORD_START, start + 1)
    return None


def repair_journal(path: Path) -> Path | None:
    """Move what a crash mid-append left in the Optuna journal file ``path`` into a side file, and go on.

    Runs under Optuna's own journal lock (``JournalFileSymlinkLock``, the one every append holds), so a
    record another live process is writing is never taken for a torn one. Two damages are mended:

    - an unfinished last line (no newline; Optuna's reader stops there and the next append glues onto it);
    - a line that is a cut-off record with a whole record glued after it (a journal appended to after
      such a crash): the cut-off part goes, the whole record stays in place.

    Returns:
        the side file ``<path>.torn-<UTC time>`` that received the removed bytes, or None when the file
        was whole (or does not exist).

    Raises:
        StorageError: a line that is not a record and cannot be mended this way, naming the file and line.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" when the file is whole
        torn: list[bytes] = [tail] if tail else []
        kept: list[bytes] = []
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)
                kept.append(line)
                continue
            except ValueError:
                pass
            split = _split_torn(line)
            if split is None:
                raise StorageError(
                    f"journal {path}: line {number} is not an Optuna record ({line[:60]!r}...); move the file "
                    f"aside or cut that line out"
                )
            torn.append(split[0])
            kept.append(split[1])
        if not torn:
            return None
        side = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        side.write_bytes(b"\n".join(torn) + b"\n")
        if len(kept) == len(lines) and torn == [tail]:  # only the tail: cut it off in place
            os.truncate(path, len(data) - len(tail))
        else:
            tmp = path.with_name(path.name + ".repair")
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, path)
    finally:
        lock.release()
    _log.warning(
        "journal %s: its last write was cut off (a crash mid-append); the unfinished record (%d bytes) was "
        "moved to %s and the study goes on from the records before it",
        path,
        sum(len(t) for t in torn),
        side,
    )
    return side


def study_storage(storage: str | None, study_name: str | None) -> str:
    """The storage URL of the ``--storage`` / ``--study-name`` options of ``report``: ``--storage``
    resolved, else the grid run's default for the study name (``runs/<name>/study.db``)."""
    if storage is not None:
        return resolve(storage)
    if study_name is None:
        raise StorageError("give --study-name NAME (storage defaults to runs/NAME/study.db) or --storage URL")
    return default_storage(default_study_dir(study_name))


def existing_storage(storage: str | Path) -> BaseStorage:
    """:func:`open_storage` for a storage that must exist already (``report``, ``dashboard``, ...): a SQLite or
    journal file that is not there, or an empty SQLite file, is a :class:`StorageError` (Optuna would silently
    create the database, writing its tables into the file)."""
    url = resolve(storage)
    path = storage_file(url)
    if path is not None and not path.is_file():
        raise StorageError(f"storage {mask_url(url)}: file {path} not found")
    if sqlite_path(url) is not None and path.stat().st_size == 0:  # SQLite would make it a database
        raise StorageError(f"storage {mask_url(url)}: file {path} is empty, not an Optuna database")
    return open_storage(url)


def open_study(storage: str | None, study_name: str | None) -> optuna.Study:
    """Load an existing study for reading (``report``, ``dashboards``).

    With only a name the storage is the grid run's default (``runs/<name>/study.db``); with only a
    storage it must hold exactly one study (a search's ``<name>/sampler`` study does not count). A SQLite
    or journal file that does not exist is an error (Optuna would silently create it).

    Raises:
        StorageError: no storage or name given, the file is missing, the study is not there or is a search's
            sampler study, or the storage cannot be opened.
    """
    url = study_storage(storage, study_name)
    shown = mask_url(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = existing_storage(url)
    studies = backend.get_all_studies()
    names = [s.study_name for s in studies]
    if study_name is None:
        # a search's sampler study (user attr record_study) goes with its record: not a choice here
        names = [s.study_name for s in studies if "record_study" not in s.user_attrs]
        if len(names) != 1:
            listed = ", ".join(sorted(names)) or "none"
            raise StorageError(f"storage {shown} holds {len(names)} studies ({listed}); give --study-name")
        study_name = names[0]
    if study_name not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study {study_name!r} in {shown} (studies there: {listed})")
    owner = next(s.user_attrs.get("record_study") for s in studies if s.study_name == study_name)
    if owner is not None:  # its trials are configuration values only: no network, metric or curve
        raise StorageError(
            f"study {study_name!r} in {shown} is the sampler study of study {owner!r}: give --study-name {owner}"
        )
    return optuna.load_study(study_name=study_name, storage=backend)


def _nothing_to_resume(url: str, study_name: str, studies: list) -> UserError:
    listed = ", ".join(sorted(s.study_name for s in studies if "record_study" not in s.user_attrs)) or "none"
    return UserError(
        f"--resume: no study '{study_name}' in {mask_url(url)} (studies there: {listed}); run without --resume "
        f"to start it"
    )


def stored_studies(storage: str | Path) -> list:
    """The studies a storage holds (Optuna ``StudySummary``), none for a SQLite or journal file that does not
    exist, which is not created (``record`` into a new study, ``--resume`` checked before anything is made).

    Raises:
        StorageError: the storage cannot be opened.
    """
    url = resolve(storage)
    path = storage_file(url)
    return [] if path is not None and not path.is_file() else open_storage(url).get_all_studies()


def check_resumable(storage: str, study_name: str) -> None:
    """Refuse ``--resume`` of a study the storage does not hold (:func:`stored_studies`: a driver checks this
    before it starts Ray or makes a folder).

    Raises:
        UserError: no such study (naming the studies there); StorageError: the storage cannot be opened.
    """
    studies = stored_studies(storage)
    if study_name not in [s.study_name for s in studies]:
        raise _nothing_to_resume(resolve(storage), study_name, studies)


def start_study(storage: str, study_name: str, resume: bool) -> optuna.Study:
    """The study a grid run records into, created when new (``grid``).

    Raises:
        UserError: the study exists and ``resume`` is False, or ``resume`` is True and it does not exist (a
            mistyped ``--study-name`` or ``--storage`` must not start a new study).
        StorageError: the storage cannot be opened or stays busy.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = resolve(storage)
    backend = open_storage(url)
    studies = backend.get_all_studies()
    names = [s.study_name for s in studies]
    if study_name in names and not resume:
        raise UserError(
            f"study '{study_name}' already exists in {mask_url(url)}; use --resume to finish it "
            f"or --study-name to start another"
        )
    if study_name not in names and resume:
        raise _nothing_to_resume(url, study_name, studies)
    return optuna.create_study(storage=backend, study_name=study_name, direction="maximize", load_if_exists=True)
