"""Training progress that suits both a terminal and a log file.

On a terminal :func:`progress_bar` returns tqdm's live bar. Where the output is not a terminal (CI, ``nohup``,
a batch scheduler's log file) tqdm's carriage-return redraws become a wall of half lines, so it returns a
:class:`LineProgress` instead, which prints one plain line per step (per epoch), or at most one every
``$LGESEG_PROGRESS_SECONDS`` seconds, and always the last. Both take ``update``, ``set_postfix`` and
``close``, so the training loop does not care which it got.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from .errors import ConfigError

#: Environment variable: the least number of seconds between two plain progress lines (default 0: every step).
INTERVAL_ENV = "LGESEG_PROGRESS_SECONDS"


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class LineProgress:
    """tqdm's ``update`` / ``set_postfix`` / ``close`` as plain lines, e.g.
    ``train: epoch 3/12  loss=0.4123  val_acc=0.8123  2.0 s/epoch  ETA 0:00:18``.

    Args:
        total: steps in all (epochs).
        initial: steps already done (a resumed run); the rate counts only steps done here.
        desc: the line's prefix.
        unit: the step's name.
        stream: where lines go (default ``sys.stderr`` at creation).
        interval: least seconds between two lines; the last step is always printed.
        clock: monotonic time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        unit: str = "epoch",
        stream: TextIO | None = None,
        interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.stream = stream or sys.stderr
        self.interval, self.clock = interval, clock
        self._initial = initial
        self._started = clock()
        self._last_print: float | None = None
        self._printed = initial
        self._postfix: dict[str, object] = {}

    def set_postfix(self, **values: object) -> None:
        """Values shown after the step count on the next line (as tqdm's ``set_postfix``)."""
        self._postfix = values

    def update(self, n: int = 1) -> None:
        """``n`` more steps done; print a line unless one was printed less than ``interval`` s ago."""
        self.n += n
        now = self.clock()
        if self._last_print is None or now - self._last_print >= self.interval or self.n >= self.total:
            self._print(now)

    def close(self) -> None:
        """Print the last step if its line was held back by ``interval``."""
        if self._printed != self.n:
            self._print(self.clock())

    def _print(self, now: float) -> None:
        count = f"{self.unit} {self.n}/{self.total}"
        parts = [f"{self.desc}: {count}" if self.desc else count]
        parts += [f"{key}={value}" for key, value in self._postfix.items()]
        done = self.n - self._initial
        if done > 0:
            rate = (now - self._started) / done
            parts.append(f"{rate:.1f} s/{self.unit}")
            if self.n < self.total:
                parts.append(f"ETA {_clock_text(rate * (self.total - self.n))}")
        print("  ".join(parts), file=self.stream, flush=True)
        self._last_print, self._printed = now, self.n


def progress_bar(total: int, initial: int = 0, desc: str = "", unit: str = "epoch", stream: TextIO | None = None):
    """tqdm's live bar when ``stream`` (default ``sys.stderr``) is a terminal, else a :class:`LineProgress`.

    Raises:
        ConfigError: ``$LGESEG_PROGRESS_SECONDS`` is set but not a number of seconds >= 0.
    """
    stream = stream or sys.stderr
    if stream.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=stream)
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        interval = float(text) if text else 0.0
    except ValueError:
        interval = -1.0
    if not interval >= 0:
        raise ConfigError(f"{INTERVAL_ENV} must be a number of seconds >= 0, got {text!r}")
    return LineProgress(total, initial, desc, unit, stream, interval)
