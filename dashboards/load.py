"""Read a study's attempts (Optuna storage + trial folders) into plain records.

The figures, statistics and summary never touch Optuna or the file system themselves: they take the
:class:`StudyRecord` built here, so they can be tested on hand-made records and so a study that is
still running (trials without metrics, folders with only ``history.csv``) is handled in one place.
The study itself is opened by :mod:`hpo.storage`, the one home of storage access.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna

from hpo.record import ATTR
from hpo.storage import mask_url
from lgeseg.tables import as_none

#: Categorical axes a study's trials may vary besides L2, each a report group: param -> (config section, default).
GROUPING_AXES: dict[str, tuple[str, str]] = {
    "architecture": ("model", "matlab-unet"),
    "loss": ("train", "cross-entropy"),
}


@dataclass
class TrialRecord:
    """One Optuna trial (one Tune trial) with the numbers the report needs."""

    number: int
    state: str
    name: str
    l2: float | None
    seed: int | None
    learning_rate: float | None
    batch_size: int | None
    epochs: int | None
    rerun: int
    value: float | None
    curve: dict[int, float]
    test_metrics: dict[str, Any] | None
    val_metrics: dict[str, Any] | None
    trial_dir: Path | None
    epochs_run: int | None
    best_val_accuracy: float | None
    lineage: dict[str, Any] = field(default_factory=dict)
    retune: dict[str, Any] = field(default_factory=dict)
    #: the trivial baseline's metrics per split, ``{"val": {...}, "test": {...}}`` (None in old studies)
    baseline: dict[str, Any] | None = None
    split_hash: str | None = None  #: hash of the train/val/test file lists the trial ran on
    architecture: str | None = None  # the ``architecture`` param (None in studies recorded before it)
    loss: str | None = None  # the ``loss`` param (None in studies recorded before it)
    fold: int | None = None  #: the cross-validation fold it tested (the ``fold`` param; None without folds)

    def axis(self, name: str, default: Any) -> Any:
        """The trial's value of grouping axis ``name`` (:data:`GROUPING_AXES`), ``default`` when unrecorded."""
        value = getattr(self, name)
        return default if value is None else value

    @property
    def is_complete(self) -> bool:
        """Whether the trial finished (Optuna state COMPLETE) and so counts in the study's figures."""
        return self.state == "COMPLETE"

    def prediction_path(self, file: str) -> Path | None:
        """The predicted test mask of ``file``, or None when the trial has no folder."""
        return None if self.trial_dir is None else self.trial_dir / "predictions" / file


@dataclass
class StudyRecord:
    """A grid study: its attributes and its trials in trial-number order."""

    name: str
    storage: str
    config: dict[str, Any]
    out_dir: Path | None
    data_dir: Path | None
    labels: dict[str, int]
    synthetic: bool
    trials: list[TrialRecord]
    #: The split compared when finished trials ran on different splits (see :func:`split_groups`).
    compared_split: str | None = None

    @property
    def classes(self) -> list[str]:
        """Region names in label-map order."""
        return list(self.labels)

    @property
    def finished(self) -> list[TrialRecord]:
        """Finished trials that have test metrics, whatever split they ran on."""
        return [t for t in self.trials if t.is_complete and t.test_metrics is not None and t.l2 is not None]

    @property
    def complete(self) -> list[TrialRecord]:
        """Finished trials that have test metrics on the compared split: the ones Figure 1, 2 and the
        statistics use (a trial tested on other images is never ranked or paired with them)."""
        return [t for t in self.finished if self.compared_split is None or t.split_hash == self.compared_split]

    @property
    def other_split(self) -> list[TrialRecord]:
        """Finished trials left out of every comparison because they ran on another split."""
        return [t for t in self.finished if self.compared_split is not None and t.split_hash != self.compared_split]

    @property
    def l2_values(self) -> list[float]:
        """Distinct L2 values of the finished trials, ascending."""
        return sorted({t.l2 for t in self.complete if t.l2 is not None})

    @property
    def seeds(self) -> list[int]:
        """Distinct seeds of the finished trials, ascending."""
        return sorted({t.seed for t in self.complete if t.seed is not None})

    @property
    def folds(self) -> list[int]:
        """Distinct cross-validation folds of the finished trials, ascending (empty without folds)."""
        return sorted({t.fold for t in self.complete if t.fold is not None})

    def by_groups(self) -> dict[str | None, StudyRecord]:
        """The record split by every categorical axis other than L2 that its trials vary (architecture, loss:
        :data:`GROUPING_AXES`), labelled ``architecture=<a>, loss=<l>`` and sorted, so L2 values are only
        ever compared within one group; ``{None: self}`` when nothing varies. Trials recorded without a
        param count as the study config's value."""
        defaults = {
            name: (self.config.get(section) or {}).get(name, fallback)
            for name, (section, fallback) in GROUPING_AXES.items()
        }
        varied = [a for a in GROUPING_AXES if len({t.axis(a, defaults[a]) for t in self.trials}) > 1]
        if not varied:
            return {None: self}

        def label(trial: TrialRecord) -> str:
            return ", ".join(f"{a}={trial.axis(a, defaults[a])}" for a in varied)

        return {
            name: replace(self, trials=[t for t in self.trials if label(t) == name])
            for name in sorted({label(t) for t in self.trials})
        }

    def by_number(self, number: int | None) -> TrialRecord | None:
        """The trial with Optuna number ``number``, if any."""
        return next((t for t in self.trials if t.number == number), None)

    def by_name(self, name: str | None) -> TrialRecord | None:
        """The trial whose ``trial_name`` (:attr:`hpo.record.Attempt.name`) is ``name``, if any."""
        return next((t for t in self.trials if name is not None and t.name == name), None)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_history(path: Path) -> dict[int, float]:
    """Validation accuracy per epoch from ``history.csv`` (empty when missing or half-written)."""
    curve: dict[int, float] = {}
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                epoch, accuracy = row.get("epoch"), as_none(row.get("val_accuracy"))
                if epoch and epoch.strip().isdigit() and accuracy is not None:
                    curve[int(epoch)] = accuracy
    except OSError:
        return {}
    return curve


def _trial_record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
    """Turn one Optuna trial into a record, falling back to its folder for metrics and curve."""
    attrs, params = trial.user_attrs, trial.params
    trial_dir = Path(attrs[ATTR.TRIAL_DIR]) if attrs.get(ATTR.TRIAL_DIR) else None
    test_metrics = attrs.get(ATTR.TEST_METRICS)
    if test_metrics is None and trial_dir is not None and trial.state == optuna.trial.TrialState.COMPLETE:
        test_metrics = _read_json(trial_dir / "metrics.json")
    curve = {int(step): float(v) for step, v in trial.intermediate_values.items() if as_none(v) is not None}
    if not curve and trial_dir is not None:
        curve = _read_history(trial_dir / "history.csv")
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        name=str(attrs.get(ATTR.TRIAL_NAME) or f"trial {trial.number}"),
        l2=as_none(params.get("l2")),
        seed=_int(params.get("seed")),
        learning_rate=as_none(params.get("learning_rate")),
        batch_size=_int(params.get("batch_size")),
        epochs=_int(params.get("epochs")),
        rerun=int(params.get("rerun", 0) or 0),
        value=as_none(trial.value) if trial.values else None,
        curve=dict(sorted(curve.items())),
        test_metrics=test_metrics,
        val_metrics=attrs.get(ATTR.VAL_METRICS),
        trial_dir=trial_dir,
        epochs_run=_int(attrs.get(ATTR.EPOCHS_RUN)),
        best_val_accuracy=as_none(attrs.get(ATTR.BEST_VAL_ACCURACY)),
        lineage=dict(attrs.get(ATTR.LINEAGE) or {}),
        retune=dict(attrs.get(ATTR.RETUNE) or {}),
        baseline=attrs.get(ATTR.BASELINE),
        split_hash=attrs.get(ATTR.SPLIT_HASH),
        architecture=params.get("architecture"),
        loss=params.get("loss"),
        fold=_int(params.get("fold")),
    )


def split_groups(trials: list[TrialRecord]) -> dict[str | None, list[TrialRecord]]:
    """Trials grouped by the split they ran on, the largest group first (ties: the earliest trial's).

    Metrics of trials on different test images are not comparable, so figures and statistics use one
    group only; None groups trials that recorded no split.
    """
    groups: dict[str | None, list[TrialRecord]] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        groups.setdefault(trial.split_hash, []).append(trial)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[1][0].number)))


def _join_folds(trials: list[TrialRecord], split: dict[str, Any]) -> None:
    """Under cross-validation each fold is its own split; a trial whose split is one of the study's folds
    (``split["fold_splits"]``, :func:`lgeseg.data.folds_record`) gets the whole cross-validation's hash, so
    the folds are compared together (out of fold) and only a trial on another split is left out."""
    folds = {part.get("hash") for part in split.get("fold_splits") or []}
    for trial in trials:
        if trial.split_hash is not None and trial.split_hash in folds:
            trial.split_hash = split["hash"]


def load_study(study: optuna.Study, storage: str) -> StudyRecord:
    """Read ``study`` (and its trial folders where the storage lacks something) into a record."""
    attrs = study.user_attrs
    labels = attrs.get("labels")
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False)]
    if not labels:
        first = next((t.test_metrics for t in trials if t.test_metrics), None)
        labels = {name: index for index, name in enumerate(first["classes"])} if first else {}
    _join_folds(trials, attrs.get("split") or {})
    finished = [t for t in trials if t.is_complete and t.test_metrics is not None and t.l2 is not None]
    groups = split_groups(finished)
    return StudyRecord(
        compared_split=next(iter(groups)) if len(groups) > 1 else None,
        name=study.study_name,
        storage=mask_url(storage),
        config=dict(attrs.get("config") or {}),
        out_dir=Path(attrs["out_dir"]) if attrs.get("out_dir") else None,
        data_dir=Path(attrs["data_dir"]) if attrs.get("data_dir") else None,
        labels={str(k): int(v) for k, v in labels.items()},
        synthetic=bool(attrs.get("synthetic", False)),
        trials=sorted(trials, key=lambda t: t.number),
    )
