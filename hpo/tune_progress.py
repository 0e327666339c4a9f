"""Progress of a study run: one line per trial event and a live table, instead of Ray's own output.

On a terminal the table (trial, L2, epoch, validation accuracy) is redrawn in place below the event
lines; elsewhere (a log file, CI) it is printed every ``interval`` seconds. Ray's own lines for a failed
trial (its traceback, "Trials did not complete") are held back (:func:`quiet_trial_failures`): the event line
gives the trial's one-line reason, the record keeps it, and the traceback stays in the trial's ``error.txt``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from ray.tune import Callback

from lgeseg.tables import MISSING, fmt, format_table

from .failure import failure_message
from .record import TrialReport
from .rule import RetuneRule


class ProgressPrinter(Callback):
    """A Tune Callback printing trial starts, finishes, retunes and errors, plus a live table."""

    def __init__(
        self, rule: RetuneRule, max_reruns: int, stream: TextIO | None = None, interval: float | None = None
    ) -> None:
        self.rule = rule
        self.max_reruns = max_reruns
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.interval = interval if interval is not None else (1.0 if self.live else 60.0)
        self.started = time.monotonic()
        self._rows: dict[str, dict[str, Any]] = {}
        self._last_table = 0.0
        self._table_lines = 0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a stream does not pickle.
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, stream=sys.stdout)

    # -- output -------------------------------------------------------------------------------
    def _clear_table(self) -> None:
        if self.live and self._table_lines:
            self.stream.write(f"\x1b[{self._table_lines}F\x1b[J")
            self._table_lines = 0

    def _line(self, event: str, name: str, text: str = "") -> None:
        self._clear_table()
        elapsed = time.monotonic() - self.started
        self.stream.write(f"[{elapsed:6.0f}s] {event:<7} {name}  {text}".rstrip() + "\n")
        self.stream.flush()
        if self.live:
            self._table()

    def table_text(self) -> str:
        """The live table: one row per trial of this run (trial, L2, status, epoch, val acc, best)."""
        return format_table(
            ("trial", "L2", "status", "epoch", "val acc", "best"),
            [
                (
                    name,
                    f"{row['l2']:g}",
                    row["status"],
                    f"{row['epoch']}/{row['epochs']}" if row["epoch"] else MISSING,
                    fmt(row["val_accuracy"]),
                    fmt(row["best"]),
                )
                for name, row in self._rows.items()
            ],
        )

    def _table(self) -> None:
        if not self._rows:
            return
        self._clear_table()
        text = self.table_text()
        self.stream.write(text + "\n")
        self.stream.flush()
        self._table_lines = text.count("\n") + 1 if self.live else 0
        self._last_table = time.monotonic()

    # -- Tune events --------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        config = trial.config
        train = config["run"]["train"]
        self._rows[config["trial_name"]] = {
            "l2": train["l2"],
            "status": "running",
            "epoch": 0,
            "epochs": train["epochs"],
            "val_accuracy": None,
            "best": None,
        }
        resumed = " (continuing an interrupted trial)" if config["attempt"]["optuna_number"] is not None else ""
        adjustment = f", adjusted {config['adjustment']}" if config["adjustment"] else ""
        self._line(
            "start",
            config["trial_name"],
            f"lr {train['learning_rate']:g}, batch {train['batch_size']}, {train['epochs']} epochs"
            f"{adjustment}{resumed}",
        )

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        row, report = self._rows.get(trial.config["trial_name"]), TrialReport.from_result(result)
        if row is None or report is None:
            return
        row.update(epoch=report.epoch, val_accuracy=report.val_accuracy, best=report.best_val_accuracy)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self._rows and time.monotonic() - self._last_table >= self.interval:
            self._table()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        name = trial.config["trial_name"]
        result = trial.last_result or {}
        row = self._rows.get(name, {})
        if self.rule.fails(result):
            rerun = trial.config["attempt"]["rerun"]
            then = f"-> rerun {rerun + 1} queued" if rerun < self.max_reruns else "-> no reruns left: not converged"
            row["status"] = "retuned"
            self._line("retune", name, f"{self.rule.reason(result)} {then}")
        elif (report := TrialReport.from_result(result)) is not None and report.finished:
            row["status"] = "done"
            self._line(
                "finish",
                name,
                f"val acc {fmt(report.val_accuracy)}, val MeanIoU "
                f"{fmt(report.val_MeanIoU)}, test MeanIoU {fmt(report.test_MeanIoU)}",
            )
            for warning in (report.run_info or {}).get("warnings", []):  # lgeseg.diagnostics
                self._line("warning", name, warning)
        else:
            row["status"] = "stopped"

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._rows.get(trial.config["trial_name"], {})["status"] = "error"
        self._line("error", trial.config["trial_name"], failure_message(trial))

    def on_experiment_end(self, trials: list, **info) -> None:
        self._table()
        self._table_lines = 0


#: Ray's log lines for failed trials: (logger, message start). Tune logs each failed trial's traceback at
#: ERROR (``tune_controller.py``) and, at the end, which trials did not complete (``tune.py``).
RAY_FAILURE_LINES = (
    ("ray.tune.execution.tune_controller", "Trial task failed for trial"),
    ("ray.tune.tune", "Trials did not complete"),
)


class _DropFailureLines(logging.Filter):
    def __init__(self, start: str) -> None:
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


@contextmanager
def quiet_trial_failures() -> Iterator[None]:
    """Hold back Ray's :data:`RAY_FAILURE_LINES` while Tune runs (every other Ray message still shows).

    A failed trial is then one ``error`` event line with its own message (:func:`hpo.failure.failure_message`)
    instead of a 40-line traceback; the traceback is in the trial's ``error.txt`` below ``<study>/ray/tune/``.
    """
    filters = [(logging.getLogger(name), _DropFailureLines(start)) for name, start in RAY_FAILURE_LINES]
    for logger, drop in filters:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger, drop in filters:
            logger.removeFilter(drop)
