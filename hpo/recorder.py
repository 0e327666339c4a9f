"""The Optuna recorder: every Tune trial of a study becomes an attempt trial of its record, written from the
driver (the schema: :mod:`hpo.record`).

The driver is the only writer, so SQLite is safe, and any Optuna storage URL works. A trial is created
when its Tune trial starts (or, on ``--resume``, the interrupted Optuna trial is picked up again), gets
the validation accuracy of each epoch as an intermediate value while it runs, and ends COMPLETE with the
validation-set MeanIoU of the selected network as its value, PRUNED when the retune rule stopped it, or
FAIL with the error. Every write goes through :class:`hpo.storage.RetriedWrites`: retried, kept while it
keeps failing, and :meth:`OptunaRecorder.close` raises if any is still unwritten.
"""

from __future__ import annotations

import logging
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from ray.tune import Callback

from .failure import failure_message
from .record import ATTR, DISTRIBUTIONS, Attempt, TrialReport, attempt_params, finished_attempt, start_attrs
from .rule import RetuneRule
from .storage import RetriedWrites

logger = logging.getLogger(__name__)


class OptunaRecorder(Callback):
    """A Tune Callback that mirrors a study's Tune trials into its Optuna record."""

    def __init__(
        self,
        study: optuna.Study,
        rule: RetuneRule,
        max_reruns: int,
        retries: int = 5,
        retry_wait: float = 0.2,
        artifact_store: FileSystemArtifactStore | None = None,
    ) -> None:
        self.study = study
        self.artifact_store = artifact_store  #: where COMPLETE trials' checkpoints go (:mod:`hpo.artifacts`)
        self.rule = rule
        self.max_reruns = max_reruns
        self.writes = RetriedWrites(getattr(study._storage, "url", None), retries, retry_wait)
        self._trials: dict[str, optuna.Trial] = {}  # Tune trial id -> Optuna trial
        self._reported: dict[str, set[int]] = {}  # Tune trial id -> epochs already stored
        self._nodes: dict[str, str] = {}  # Tune trial id -> Ray node id last stored
        self._numbers = {t.user_attrs.get(ATTR.TRIAL_NAME): t.number for t in study.get_trials(deepcopy=False)}

    def trial_number(self, trial_name: str) -> int | None:
        """The Optuna number of the trial recorded under ``trial_name`` (None before it started)."""
        return self._numbers.get(trial_name)

    def close(self) -> None:
        """Write what is still kept; raise if any write could not be made (:meth:`RetriedWrites.close`)."""
        self.writes.close()

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

            self.writes.write("reattach interrupted trial", reattach)
            return
        attempt = Attempt.from_config(config["attempt"])
        params = attempt_params(config["run"], attempt.rerun)
        name = attempt.name
        previous = attempt.previous()
        rerun_of = self._numbers.get(previous.name) if previous is not None else None
        attrs = {
            **start_attrs(attempt, config["trial_dir"], config["config_hash"], rerun_of, config["adjustment"]),
            "ray_trial_id": tid,
        }

        def create() -> None:
            waiting = [
                t
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                if t.user_attrs.get(ATTR.TRIAL_NAME) == name
            ]
            if not waiting:  # a retry after the enqueue went through must not enqueue twice
                self.study.enqueue_trial(params, user_attrs=attrs)
            created = self.study.ask({k: DISTRIBUTIONS[k] for k in params})  # no draw for a param left out
            self._trials[tid] = created
            self._numbers[name] = created.number

        self.writes.write("create trial", create)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        tid = trial.trial_id
        node = result.get("node_id")
        if node and self._nodes.get(tid) != node:  # once per trial, again if it moved to another node
            self._nodes[tid] = node
            self.writes.write("node id", lambda: self._trials[tid].set_user_attr("node_id", node))
        report = TrialReport.from_result(result)
        if report is None or report.finished:
            return
        reported = self._reported.setdefault(tid, set())
        if report.epoch in reported:  # an epoch replayed by a resumed run
            return
        reported.add(report.epoch)
        self.writes.write("intermediate value", lambda: self._trials[tid].report(report.val_accuracy, report.epoch))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        report = TrialReport.from_result({**result, "done": bool(result.get("done"))})
        if report is None:
            pass  # stopped before its first epoch: stays RUNNING for --resume
        elif self.rule.fails(result):
            self._finish(trial.trial_id, TrialState.PRUNED, None, self._retune_attrs(trial, report, result))
        elif report.finished:  # FAIL where its value is undefined: no checkpoint to register then
            state, value, attrs = finished_attempt(report)
            run_dir = trial.config["trial_dir"] if state == TrialState.COMPLETE else None
            self._finish(trial.trial_id, state, value, attrs, run_dir)
        elif report.done:  # stopped by the trial scheduler (a search's ASHA), not by the rule
            stopped = {"epoch": report.epoch, "val_accuracy": report.val_accuracy}
            attrs = {ATTR.STOPPED_BY_SCHEDULER: stopped, ATTR.EPOCHS_RUN: report.epoch}
            self._finish(
                trial.trial_id, TrialState.PRUNED, None, {**attrs, ATTR.BEST_VAL_ACCURACY: report.best_val_accuracy}
            )
        # else: stopped with the experiment (driver interrupted); stays RUNNING for --resume
        self._reported.pop(trial.trial_id, None)
        self._nodes.pop(trial.trial_id, None)

    def _retune_attrs(self, trial, report: TrialReport, result: dict) -> dict[str, Any]:
        """Why the retune rule stopped ``trial``, and which attempt replaces it."""
        attempt = Attempt.from_config(trial.config["attempt"])
        retune = {
            "reason": self.rule.reason(result),
            "check_epoch": self.rule.check_epoch(report.epochs),
            "best_val_accuracy": report.best_val_accuracy,
            "replaced_by": attempt.next().name if attempt.rerun < self.max_reruns else None,
        }
        return {ATTR.RETUNE: retune, ATTR.EPOCHS_RUN: report.epoch, ATTR.BEST_VAL_ACCURACY: report.best_val_accuracy}

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial.trial_id, TrialState.FAIL, None, {ATTR.ERROR: failure_message(trial)})
        self._reported.pop(trial.trial_id, None)
        self._nodes.pop(trial.trial_id, None)

    def _finish(
        self, tid: str, state: TrialState, value: float | None, attrs: dict[str, Any], run_dir: str | None = None
    ) -> None:
        def write() -> None:
            optuna_trial = self._trials[tid]
            if run_dir is not None and self.artifact_store is not None:
                self._register(optuna_trial, run_dir)
            for key, val in attrs.items():
                optuna_trial.set_user_attr(key, val)
            self.study.tell(optuna_trial, value, state=state)
            del self._trials[tid]

        self.writes.write(f"finish trial ({state.name})", write)

    def _register(self, optuna_trial: optuna.Trial, run_dir: str) -> None:
        """Its checkpoint into the artifact store, before the trial is told; a folder the driver cannot read
        (a worker's disk) or a failing store is a warning, not a lost trial."""
        from .artifacts import register_checkpoints

        if ATTR.CHECKPOINTS in self.study._storage.get_trial_user_attrs(optuna_trial._trial_id):
            return  # a retried write after the upload went through
        try:
            register_checkpoints(self.artifact_store, optuna_trial, run_dir)
        except Exception as exc:  # noqa: BLE001 - a store that fails must not cost the trial its record
            logger.warning("trial %d: checkpoint not registered in the artifact store (%s)", optuna_trial.number, exc)
