"""The Optuna recorder: every Tune trial of a grid run becomes an Optuna trial, written from the driver.

The driver is the only writer, so SQLite is safe, and any Optuna storage URL works. A trial is created
when its Tune trial starts (or, on ``--resume``, the interrupted Optuna trial is picked up again), gets
the validation accuracy of each epoch as an intermediate value while it runs, and ends COMPLETE with the
validation-set MeanIoU of the selected network as its value, PRUNED when the retune rule stopped it, or
FAIL with the error. A storage write that fails is retried; one that keeps failing is kept and tried
again at the next event and at the end, and :meth:`OptunaRecorder.close` raises if any is still unwritten.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray.tune import Callback

from lgeseg.errors import UserError
from lgeseg.losses import LOSSES
from lgeseg.models import ARCHITECTURES

from .attempts import Attempt
from .failure import failure_message
from .rule import RetuneRule
from .storage import StorageBusyError, mask_url

logger = logging.getLogger(__name__)

#: Wide bounds so reruns and later searches over the same parameters fit one study.
DISTRIBUTIONS = {
    "l2": FloatDistribution(1e-12, 1.0, log=True),
    "learning_rate": FloatDistribution(1e-10, 10.0, log=True),
    "batch_size": IntDistribution(1, 65536),
    "epochs": IntDistribution(1, 1_000_000),
    "seed": IntDistribution(0, 2**31 - 1),
    "rerun": IntDistribution(0, 1000),
    "architecture": CategoricalDistribution(ARCHITECTURES),
    "loss": CategoricalDistribution(LOSSES),
}


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The Optuna params of a Tune trial config."""
    train = config["run"]["train"]
    return {
        "l2": train["l2"],
        "learning_rate": train["learning_rate"],
        "batch_size": train["batch_size"],
        "epochs": train["epochs"],
        "seed": config["run"]["seed"],
        "rerun": config["attempt"]["rerun"],
        "architecture": config["run"]["model"]["architecture"],
        "loss": train["loss"],
    }


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or its cause) says the disk is full: ENOSPC/EDQUOT, or SQLite's "database or disk is full"."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or re.search(
            r"disk is full|no space left on device", str(getattr(exc, "orig", None) or exc), re.IGNORECASE
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class OptunaRecorder(Callback):
    """A Tune Callback that mirrors the grid's Tune trials into one Optuna study."""

    def __init__(
        self, study: optuna.Study, rule: RetuneRule, max_reruns: int, retries: int = 5, retry_wait: float = 0.2
    ) -> None:
        self.study = study
        self.rule = rule
        self.max_reruns = max_reruns
        self.retries = retries
        self.retry_wait = retry_wait
        self._trials: dict[str, optuna.Trial] = {}  # Tune trial id -> Optuna trial
        self._reported: dict[str, set[int]] = {}  # Tune trial id -> epochs already stored
        self._nodes: dict[str, str] = {}  # Tune trial id -> Ray node id last stored
        self._numbers = {t.user_attrs.get("trial_name"): t.number for t in study.get_trials(deepcopy=False)}
        self._unwritten: list[tuple[str, Callable[[], None]]] = []
        self._last_error: Exception | None = None

    def trial_number(self, trial_name: str) -> int | None:
        """The Optuna number of the trial recorded under ``trial_name`` (None before it started)."""
        return self._numbers.get(trial_name)

    # -- writes -----------------------------------------------------------------------------------
    def _write(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one storage write, retrying with backoff; a write that keeps failing is queued."""
        self._flush()
        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                return fn()
            except StorageBusyError as exc:  # hpo.storage has already waited its whole wait: keep it now
                error = exc
                break
            except Exception as exc:  # noqa: BLE001 - any storage error is retried, then kept
                error = exc
                time.sleep(self.retry_wait * 2**attempt)
        logger.warning("Optuna write failed %d times (%s: %s); will retry", self.retries, what, error)
        self._last_error = error
        self._unwritten.append((what, fn))
        return None

    def _flush(self) -> None:
        pending, self._unwritten = self._unwritten, []
        for what, fn in pending:
            try:
                fn()
            except Exception:  # noqa: BLE001
                self._unwritten.append((what, fn))

    def close(self) -> None:
        """Write what is still queued; raise if any write could not be made."""
        for _ in range(self.retries):
            self._flush()
            if not self._unwritten:
                return
            time.sleep(self.retry_wait)
        if disk_full(self._last_error):
            url = getattr(self.study._storage, "url", None)
            where = f"storage {mask_url(url)}" if url else "the Optuna storage"
            raise UserError(
                f"{where}: no space left on device; {len(self._unwritten)} writes were not recorded (first: "
                f"{self._unwritten[0][0]}): free space there, then rerun with --resume"
            )
        raise UserError(
            f"{len(self._unwritten)} Optuna storage writes failed and were not recorded "
            f"(first: {self._unwritten[0][0]}); rerun with --resume once the storage is reachable"
        )

    # -- Tune events ------------------------------------------------------------------------------
    # Every write finds its Optuna trial when it runs, not when it is queued, so writes kept after a
    # failed creation go through, in order, once the creation does.
    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        config, tid = trial.config, trial.trial_id
        number = config["attempt"]["optuna_number"]
        if number is not None:

            def reattach() -> None:
                frozen = self.study.get_trials(deepcopy=False)[number]
                self._trials[tid] = optuna.Trial(self.study, frozen._trial_id)
                self._reported[tid] = set(frozen.intermediate_values)
                self._trials[tid].set_user_attr("ray_trial_id", tid)

            self._write("reattach interrupted trial", reattach)
            return
        params = trial_params(config)
        attempt = attempt_from_config(config["attempt"])
        name = attempt.name
        previous = attempt.previous()
        attrs = {
            "trial_name": name,
            "trial_dir": config["trial_dir"],
            "ray_trial_id": tid,
            "config_hash": config["config_hash"],
            "lineage": {
                "point": attempt.point,
                "rerun": attempt.rerun,
                "rerun_of": self._numbers.get(previous.name) if previous is not None else None,
                "adjustment": config["adjustment"],
                **config.get("lineage", {}),
            },
        }

        def create() -> None:
            waiting = [
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if t.user_attrs.get("trial_name") == name
            ]
            if not waiting:  # a retry after the enqueue went through must not enqueue twice
                self.study.enqueue_trial(params, user_attrs=attrs)
            created = self.study.ask(DISTRIBUTIONS)
            self._trials[tid] = created
            self._numbers[name] = created.number

        self._write("create trial", create)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        tid = trial.trial_id
        node = result.get("node_id")
        if node and self._nodes.get(tid) != node:  # once per trial, again if it moved to another node
            self._nodes[tid] = node
            self._write("node id", lambda: self._trials[tid].set_user_attr("node_id", node))
        if result.get("finished") or "epoch" not in result:
            return
        reported = self._reported.setdefault(tid, set())
        if result["epoch"] in reported:  # an epoch replayed by a resumed run
            return
        reported.add(result["epoch"])
        self._write("intermediate value", lambda: self._trials[tid].report(result["val_accuracy"], result["epoch"]))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        if self.rule.fails(result):
            attempt = attempt_from_config(trial.config["attempt"])
            retune = {
                "reason": self.rule.reason(result),
                "check_epoch": self.rule.check_epoch(result["epochs"]),
                "best_val_accuracy": result["best_val_accuracy"],
                "replaced_by": attempt.next().name if attempt.rerun < self.max_reruns else None,
            }
            self._finish(
                trial.trial_id,
                TrialState.PRUNED,
                None,
                {"retune": retune, "epochs_run": result["epoch"], "best_val_accuracy": result["best_val_accuracy"]},
            )
        elif result.get("finished") and result["val_MeanIoU"] is None:
            self._finish(
                trial.trial_id,
                TrialState.FAIL,
                None,
                {
                    "error": "validation MeanIoU is undefined (a class never occurs in the validation split)",
                    "test_metrics": result["test_metrics"],
                },
            )
        elif result.get("finished"):
            run_info = result["run_info"]
            self._finish(
                trial.trial_id,
                TrialState.COMPLETE,
                result["val_MeanIoU"],
                {
                    "test_metrics": result["test_metrics"],
                    "val_metrics": result["val_metrics"],
                    "epochs_run": run_info["epochs_run"],
                    "best_val_accuracy": run_info["best_val_accuracy"],
                    "selected_epoch": run_info["selected_epoch"],
                    "device": run_info["device"],
                    "baseline": run_info.get("baseline"),
                    "wall_time_s": run_info["wall_time_s"],
                    "split_hash": run_info["split_hash"],
                    "versions": {**run_info["versions"], "ray": _version("ray"), "optuna": optuna.__version__},
                },
            )
        elif result.get("done"):  # stopped by the trial scheduler (a search's ASHA), not by the rule
            self._finish(
                trial.trial_id,
                TrialState.PRUNED,
                None,
                {
                    "stopped_by_scheduler": {"epoch": result["epoch"], "val_accuracy": result["val_accuracy"]},
                    "epochs_run": result["epoch"],
                    "best_val_accuracy": result["best_val_accuracy"],
                },
            )
        # else: stopped with the experiment (driver interrupted); stays RUNNING for --resume
        self._reported.pop(trial.trial_id, None)
        self._nodes.pop(trial.trial_id, None)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial.trial_id, TrialState.FAIL, None, {"error": failure_message(trial)})
        self._reported.pop(trial.trial_id, None)
        self._nodes.pop(trial.trial_id, None)

    def _finish(self, tid: str, state: TrialState, value: float | None, attrs: dict[str, Any]) -> None:
        def write() -> None:
            optuna_trial = self._trials[tid]
            for key, val in attrs.items():
                optuna_trial.set_user_attr(key, val)
            self.study.tell(optuna_trial, value, state=state)
            del self._trials[tid]

        self._write(f"finish trial ({state.name})", write)


def attempt_from_config(values: dict[str, Any]) -> Any:
    """The attempt a Ray trial config carries: a grid's :class:`~hpo.attempts.Attempt`, or a search's
    :class:`~hpo.optuna_searcher.SeedAttempt` (its config names its configuration). Both give the names."""
    if "configuration" in values:
        from .optuna_searcher import SeedAttempt

        return SeedAttempt.from_config(values)
    return Attempt.from_config(values)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
