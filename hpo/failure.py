"""Why a Ray Tune trial failed, as the one line the user needs.

Ray wraps an exception raised in a trainable into a ``RayTaskError`` and writes it to the trial's
``error.pkl`` / ``error.txt`` in the driver's staging folder; ``Trial.get_error`` reads the copy in the
storage folder, which is synced later, so at ``on_trial_error`` it is usually not there yet. This module
reads the driver's own copy, unwraps Ray's error to the trainable's exception and returns its message:
a :class:`~lgeseg.errors.UserError` (e.g. "loss became nan at epoch 1, batch 2/2; ...") as it is, any
other exception as ``Type: first line``.
"""

from __future__ import annotations

from pathlib import Path

#: What is recorded when no error text can be found at all.
UNKNOWN = "trial failed (see the Ray logs under the study folder)"


def _unwrap(exc: BaseException) -> BaseException:
    """The innermost cause of Ray's task/actor error wrappers."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None)  # RayTaskError keeps the trainable's exception here
        if isinstance(cause, BaseException):
            exc = cause
            continue
        break
    return exc


def exception_message(exc: BaseException) -> str:
    """One line for an exception: a UserError's message as is, else ``Type: first line``."""
    from lgeseg.errors import UserError

    exc = _unwrap(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(exc, UserError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _text_message(text: str) -> str | None:
    """The exception line of a traceback text (its last line that is not a frame or a Ray banner)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("File ", "Failure #", "^", "ray::", "Traceback")):
            continue
        kind, sep, rest = line.partition(": ")
        if sep and kind.rsplit(".", 1)[-1] in ("TrainingError", "DataError", "ConfigError", "UserError"):
            return rest
        return line
    return None


def failure_message(trial) -> str:
    """The one-line reason a failed Tune ``trial`` ended, from the best source there is.

    Tries the pickled exception in the driver's staging folder, then its text copy, then Ray's own
    ``get_error`` (the storage copy); :data:`UNKNOWN` when none has anything.
    """
    import cloudpickle

    pickled = getattr(trial, "pickled_error_file", None)
    if pickled and Path(pickled).is_file():
        try:
            with open(pickled, "rb") as handle:
                error = cloudpickle.load(handle)
        except Exception:  # noqa: BLE001 - an error that does not unpickle falls through to its text
            error = None
        if isinstance(error, BaseException):
            return exception_message(error)
    texts = []
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        texts.append(Path(error_file).read_text(errors="replace"))
    try:
        stored = trial.get_error()
    except Exception:  # noqa: BLE001 - a storage read failing must not hide the failure itself
        stored = None
    if stored is not None:
        texts.append(str(stored))
    for text in texts:
        message = _text_message(text)
        if message:
            return message
    return UNKNOWN
