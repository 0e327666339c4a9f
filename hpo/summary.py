"""The grid's closing summary: one row per grid point, read back from the Optuna study.

Each point's status and rerun count come from :func:`hpo.attempts.plan_attempts`, the same reading of
the storage that decides what ``--resume`` still runs, so the table and the resume plan never disagree.
"""

from __future__ import annotations

from typing import Any

import optuna

from lgeseg.metrics import clearly_above_baseline
from lgeseg.tables import fmt, format_table

from .attempts import PointStatus, plan_attempts
from .config import GRID_AXES

#: Columns of :func:`format_summary`, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "L2",
    "seed",
    "status",
    "reruns",
    "epochs",
    "val acc",
    "test GlobalAcc",
    "test MeanIoU",
    "test MeanBF",
    "learned",
)


def summary_rows(config: dict, study: optuna.Study) -> list[dict[str, Any]]:
    """One row per grid point (seed-major, in config order): its status, the reruns that ran, and its
    latest attempt's epochs, best validation accuracy and test metrics (None where there are none).

    Returns:
        dicts with keys ``l2``, ``seed``, each gridded axis (``architecture``, ``loss``), ``status`` (a
        :class:`hpo.attempts.PointStatus` value),
        ``reruns``, ``epochs``, ``val_accuracy``, ``GlobalAccuracy``, ``MeanIoU``, ``MeanBFScore``,
        ``learned`` (whether test MeanIoU is clearly above the majority-class baseline,
        :func:`lgeseg.metrics.clearly_above_baseline`; None when unknown), ``trial`` (the latest attempt's
        Optuna number) and ``error`` (a failed point's recorded error).
    """
    rows = []
    for outcome in plan_attempts(config, study.get_trials(deepcopy=False)).values():
        last = outcome.last
        attrs = last.user_attrs if last is not None else {}
        test = (attrs.get("test_metrics") or {}).get("dataset", {})
        rows.append(
            {
                "l2": outcome.l2,
                "seed": outcome.seed,
                **dict(outcome.choices),
                "status": outcome.status,
                "reruns": outcome.reruns,
                "epochs": attrs.get("epochs_run"),
                "val_accuracy": attrs.get("best_val_accuracy"),
                "GlobalAccuracy": test.get("GlobalAccuracy"),
                "MeanIoU": test.get("MeanIoU"),
                "MeanBFScore": test.get("MeanBFScore"),
                "learned": clearly_above_baseline(
                    test.get("MeanIoU"), ((attrs.get("baseline") or {}).get("test") or {}).get("MeanIoU")
                ),
                "trial": last.number if last is not None else None,
                "error": attrs.get("error") if outcome.status == PointStatus.FAILED else None,
            }
        )
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`summary_rows` as an aligned text table (:data:`SUMMARY_COLUMNS`), then one line
    per failed grid point with its error, and one line naming the points whose network did not learn."""
    axes = [axis for axis in GRID_AXES if any(axis in r for r in rows)]  # the gridded ones, after seed
    columns = (*SUMMARY_COLUMNS[:2], *axes, *SUMMARY_COLUMNS[2:])
    table = format_table(
        columns,
        [
            [
                f"{r['l2']:g}",
                str(r["seed"]),
                *(str(r[a]) for a in axes),
                r["status"],
                str(r["reruns"]),
                fmt(r["epochs"]),
                fmt(r["val_accuracy"]),
                fmt(r["GlobalAccuracy"]),
                fmt(r["MeanIoU"]),
                fmt(r["MeanBFScore"]),
                {True: "yes", False: "NO", None: fmt(None)}[r.get("learned")],
            ]
            for r in rows
        ],
    )
    failures = [
        f"failed l2={r['l2']:g} seed={r['seed']}" + "".join(f" {a}={r[a]}" for a in axes) + f": {r['error']}"
        for r in rows
        if r.get("error")
    ]
    not_learned = [
        f"l2={r['l2']:g} seed={r['seed']}" + "".join(f" {a}={r[a]}" for a in axes)
        for r in rows
        if r.get("learned") is False
    ]
    if not_learned:
        failures.append(
            f"did not learn ({len(not_learned)} of {len(rows)}): {', '.join(not_learned)}: test MeanIoU is not "
            f"clearly above the majority-class baseline; the report does not rank L2 values on these networks"
        )
    return "\n".join([table, *failures])
