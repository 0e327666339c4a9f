"""A study's closing table: one row per configuration and replicate, keyed by the space, read from the plan.

Each row's status and rerun count come from :func:`hpo.record.plan_study`, the same reading of the record
that decides what ``--resume`` still runs, so the table and the resume plan never disagree. A grid's rows
are keyed by their values (``L2`` and any other gridded axis), a search's by configuration (``c003``)
and the searched keys.
"""

from __future__ import annotations

from typing import Any

from lgeseg.metrics import clearly_above_baseline
from lgeseg.tables import fmt, format_table, setting

from .record import ATTR, ConfigurationPlan, Status

#: Columns of :func:`format_summary` after the space's and the replicate's, in order.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "status",
    "reruns",
    "epochs",
    "best val acc",
    "val MeanIoU",
    "test GlobalAcc",
    "test MeanIoU",
    "test MeanBF",
    "learned",
)


def _space_cells(plan: ConfigurationPlan) -> dict[str, str]:
    """The configuration's columns: a grid point's values (``L2`` first), or ``config`` and the searched keys."""
    configuration = plan.configuration
    if configuration.by_values:
        return {("L2" if k == "train.l2" else k.rsplit(".", 1)[-1]): setting(v) for k, v in configuration.params}
    return {"config": f"c{configuration.index:03d}", **{k: setting(v) for k, v in configuration.params}}


def summary_rows(plans: list[ConfigurationPlan]) -> list[dict[str, Any]]:
    """One row per configuration and replicate, in plan order: its status, the reruns that ran, and its
    latest attempt's epochs, best validation accuracy (so far, for an interrupted attempt: from its intermediate
    values), validation MeanIoU (the objective) and test metrics (None where there are none).

    Returns:
        dicts with keys ``space`` (column -> shown value), ``point`` (:attr:`hpo.record.Attempt.point`),
        ``seed``, ``fold`` (None without cross-validation),
        ``status`` (a :class:`hpo.record.Status` value), ``reruns``, ``epochs``, ``val_accuracy``,
        ``value``, ``GlobalAccuracy``, ``MeanIoU``, ``MeanBFScore``, ``learned`` (whether test MeanIoU is
        clearly above the majority-class baseline, :func:`lgeseg.metrics.clearly_above_baseline`; None when
        unknown), ``trial`` (the latest attempt's Optuna number) and ``error`` (a failed replicate's error).
    """
    rows = []
    for plan in plans:
        for replicate, step in plan.replicates.items():
            last = step.last
            attrs = last.user_attrs if last is not None else {}
            test = (attrs.get(ATTR.TEST_METRICS) or {}).get("dataset", {})
            curve = last.intermediate_values if last is not None else {}  # an interrupted attempt's epochs so far
            rows.append(
                {
                    "space": _space_cells(plan),
                    "point": step.first.point,
                    "seed": replicate.seed,
                    "fold": replicate.fold,
                    "status": step.status,
                    "reruns": step.reruns,
                    "epochs": attrs.get(ATTR.EPOCHS_RUN, max(curve) if curve else None),
                    "val_accuracy": attrs.get(ATTR.BEST_VAL_ACCURACY, max(curve.values()) if curve else None),
                    "value": step.outcome.value if step.outcome is not None else None,
                    "GlobalAccuracy": test.get("GlobalAccuracy"),
                    "MeanIoU": test.get("MeanIoU"),
                    "MeanBFScore": test.get("MeanBFScore"),
                    "learned": clearly_above_baseline(
                        test.get("MeanIoU"), ((attrs.get(ATTR.BASELINE) or {}).get("test") or {}).get("MeanIoU")
                    ),
                    "trial": last.number if last is not None else None,
                    "error": attrs.get(ATTR.ERROR) if step.status == Status.FAILED else None,
                }
            )
    return rows


def format_summary(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`summary_rows` as an aligned text table (the space's columns, ``seed``, ``fold`` under
    cross-validation, then :data:`SUMMARY_COLUMNS`), one line per failed replicate with its error, and one
    line naming the replicates whose network did not learn."""
    space = list(rows[0]["space"]) if rows else []
    folded = any(r.get("fold") is not None for r in rows)
    table = format_table(
        (*space, "seed", *(("fold",) if folded else ()), *SUMMARY_COLUMNS),
        [
            [
                *(r["space"].get(c, "") for c in space),
                str(r["seed"]),
                *((str(r["fold"]),) if folded else ()),
                r["status"],
                str(r["reruns"]),
                fmt(r["epochs"]),
                fmt(r["val_accuracy"]),
                fmt(r["value"]),
                fmt(r["GlobalAccuracy"]),
                fmt(r["MeanIoU"]),
                fmt(r["MeanBFScore"]),
                {True: "yes", False: "NO", None: fmt(None)}[r.get("learned")],
            ]
            for r in rows
        ],
    )
    failures = [f"failed {r['point'].replace(',', ' ')}: {r['error']}" for r in rows if r.get("error")]
    not_learned = [r["point"].replace(",", " ") for r in rows if r.get("learned") is False]
    if not_learned:
        failures.append(
            f"did not learn ({len(not_learned)} of {len(rows)}): {', '.join(not_learned)}: test MeanIoU is not "
            f"clearly above the majority-class baseline; the report does not rank L2 values on these networks"
        )
    return "\n".join([table, *failures])
