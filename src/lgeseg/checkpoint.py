"""Reading a run's checkpoints (``last.pt``, ``best.pt``): one home for the one-line error a damaged file gives.

A run interrupted while the disk filled, a copy cut short or a file emptied by hand leaves a checkpoint torch
cannot read, and torch then raises whatever its reader met (``OSError: [Errno 22]`` for a truncated file read
with ``mmap``, ``RuntimeError: mmap can only be used with files saved with ...`` for an empty one, a zip error
for a cut archive). Whoever resumes from or reads such a file gets :class:`~lgeseg.errors.DataError` naming it.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .errors import DataError

#: The remedy for a run's damaged ``last.pt``: without it the run starts again (``best.pt`` is rewritten).
RESTART_REMEDY = "delete it to start the run again"


def read_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
    remedy: str = "",
    data: io.BytesIO | None = None,
) -> dict:
    """The dict saved in the checkpoint ``path``, loaded with ``torch.load(..., weights_only=True)``.

    Args:
        path: a ``.pt`` file written by :mod:`lgeseg.train` (with ``data``: the name its bytes are shown by).
        data: the checkpoint's bytes, read instead of ``path`` (a member of a model zip).
        map_location: where the tensors go (``torch.load``'s ``map_location``).
        mmap: map the file instead of reading it (reads the metadata without the weights).
        remedy: what the user can do, appended to the error after ``; `` (e.g. ``"delete it to start the run
            again"``).

    Raises:
        DataError: one line naming ``path``: it is missing, unreadable (torch's first line of the reason),
            or holds something other than a dict.
    """
    path = Path(path)
    tail = f"; {remedy}" if remedy else ""
    try:
        loaded = torch.load(path if data is None else data, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise DataError(f"{path}: checkpoint not found{tail}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for broken or foreign files
        raise DataError(f"{path}: unreadable checkpoint ({_reason(path, exc, data)}){tail}") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: not a checkpoint of lgeseg (holds a {type(loaded).__name__}, not a dict){tail}")
    return loaded


def _reason(path: Path, exc: Exception, data: io.BytesIO | None = None) -> str:
    """Why torch could not read ``path`` (or ``data``), short: ``empty file``, else its size and torch's first
    sentence."""
    try:
        size = data.getbuffer().nbytes if data is not None else path.stat().st_size
    except OSError:
        size = None
    if size == 0:
        return "empty file"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = text.split(". ")[0].rstrip(".")
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"{size} bytes; {first}" if size is not None else first


__all__ = ["RESTART_REMEDY", "read_checkpoint"]
