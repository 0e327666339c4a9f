"""Which trained networks of a study to apply: one trial, the best configurations, or one configuration's replicates.

``predict`` and ``export`` ask the study record, not the trial folders, which network is which: a trial's
state, value (validation MeanIoU; the test split is never used to choose), params and its ``trial_dir`` and
``lineage`` user attrs. Every key and notion is read through :mod:`hpo.record` (:class:`~hpo.record.ATTR`,
:data:`~hpo.record.CONFIGURATION`, :func:`~hpo.record.configuration_key`), so studies written by
d5d5804's grid and search read the same as today's. Ray-free.

A **configuration** is what a study varies except the replicate: in a grid, a grid point's ``lineage.point``
without its replicate parts (``seed=``, ``fold=``); in a search, the configuration trial that
``lineage.configuration`` names. Its **replicates** are its COMPLETE attempts (one per seed and fold, the
rerun that completed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from optuna.trial import FrozenTrial, TrialState

from lgeseg.errors import UserError

from .record import ATTR, CONFIGURATION, configuration_key


@dataclass(frozen=True)
class Chosen:
    """One network of a study: its trial number, name (``<number>:<trial_name>``), run folder (None when the
    record has none: its checkpoint is then only in the artifact store) and trial."""

    number: int
    name: str
    run_dir: Path | None
    trial: FrozenTrial | None = None


def _is_configuration(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get(ATTR.KIND) == CONFIGURATION


def _chosen(trial: FrozenTrial, study_name: str) -> Chosen:
    folder = trial.user_attrs.get(ATTR.TRIAL_DIR)
    if not folder and not trial.user_attrs.get(ATTR.CHECKPOINTS):
        raise UserError(f"study '{study_name}': trial {trial.number} has no trial_dir (no run folder recorded)")
    name = trial.user_attrs.get(ATTR.TRIAL_NAME) or f"trial{trial.number}"
    return Chosen(trial.number, f"{trial.number}:{name}", Path(folder) if folder else None, trial)


def select_networks(
    trials: list[FrozenTrial],
    study_name: str,
    trial: int | None = None,
    best: int | None = None,
    configuration: int | None = None,
    checkpoint: str = "selected",
) -> list[Chosen]:
    """The networks ``--trial N``, ``--best K`` or ``--configuration N`` names (exactly one is given).

    Args:
        trials: the study's trials (``study.get_trials(deepcopy=False)``).
        study_name: for messages.
        trial: one trial by number; with ``checkpoint`` ``selected`` (the network its run evaluated) it must be
            COMPLETE, with ``best`` or ``last`` any trial with a checkpoint (a RUNNING trial's latest).
        best: the K configurations with the highest mean validation value over their COMPLETE replicates
            (ties: the configuration with the lower first trial number), each with all its replicates,
            in that order.
        configuration: every COMPLETE replicate of the configuration of trial N (N may be a search's
            configuration trial or any attempt of the configuration).

    Returns:
        The chosen networks, ordered by rank (``best``) and trial number.

    Raises:
        UserError: no or several choices, a trial number that does not exist, a configuration trial given to
            ``trial``, a trial that is not COMPLETE for the ``selected`` checkpoint, no COMPLETE replicate,
            fewer than K configurations, a trial without ``trial_dir``.
    """
    if sum(x is not None for x in (trial, best, configuration)) != 1:
        raise UserError("give exactly one of --trial N, --best [K], --configuration N")
    by_number = {t.number: t for t in trials}
    attempts = [
        t
        for t in trials
        if t.state == TrialState.COMPLETE
        and t.value is not None
        and not _is_configuration(t)
        and configuration_key(t) is not None
    ]
    if trial is not None or configuration is not None:
        number = trial if trial is not None else configuration
        if number not in by_number:
            last = max(by_number) if by_number else None
            held = f"trials 0-{last}" if last is not None else "no trials"
            raise UserError(f"study '{study_name}' has no trial {number} ({held})")
        found = by_number[number]
        if trial is not None:
            if _is_configuration(found):
                raise UserError(
                    f"study '{study_name}': trial {number} is a configuration of the search, not a network: its "
                    f"networks are its attempts' (predict --configuration {number} uses them all)"
                )
            if found.state != TrialState.COMPLETE and checkpoint == "selected":
                raise UserError(
                    f"study '{study_name}': trial {number} is {found.state.name}: its run evaluated no network; "
                    f"give --checkpoint last (or best) to use its latest checkpoint anyway"
                )
            return [_chosen(found, study_name)]
        key = configuration_key(found)
        replicates = [t for t in attempts if configuration_key(t) == key]
        if not replicates:
            raise UserError(f"study '{study_name}': {key} (of trial {number}) has no COMPLETE trial")
        return [_chosen(t, study_name) for t in sorted(replicates, key=lambda t: t.number)]
    if best < 1:
        raise UserError(f"--best must be at least 1, got {best}")
    groups: dict[str, list[FrozenTrial]] = {}
    for t in sorted(attempts, key=lambda t: t.number):
        groups.setdefault(configuration_key(t), []).append(t)
    if len(groups) < best:
        raise UserError(f"study '{study_name}' has {len(groups)} configurations with a COMPLETE trial; --best {best}")
    ranked = sorted(groups.values(), key=lambda ts: (-fmean(t.value for t in ts), ts[0].number))
    return [_chosen(t, study_name) for group in ranked[:best] for t in group]


__all__ = ["Chosen", "select_networks"]
