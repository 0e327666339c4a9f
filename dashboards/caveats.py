"""What the report's comparisons leave out, said in the summary: trials that ran on another split.

A comparison that silently drops trials looks stronger than it is, and one that mixes test sets compares
nothing; :class:`~dashboards.load.StudyRecord` compares only the trials of one split, and these lines
name the others. (Slices whose per-image value is NaN are counted by :mod:`dashboards.stats` itself.)
"""

from __future__ import annotations

from .load import StudyRecord, split_groups


def split_note(record: StudyRecord) -> str | None:
    """Which finished trials ran on another split than the compared ones; None when all share one."""
    if not record.other_split:
        return None
    others = split_groups(record.other_split)
    described = "; ".join(
        f"trial(s) {', '.join(str(t.number) for t in group)} on split {h or 'unrecorded'}"
        for h, group in others.items()
    )
    return (
        f"Finished trials ran on different train/val/test splits (the data changed under the study): "
        f"{described}. Rankings, figures and paired comparisons use only the {len(record.complete)} "
        f"trial(s) on split {record.compared_split}, never mixing test sets."
    )


def caveat_lines(record: StudyRecord) -> list[str]:
    """Every caveat of the record, in report order."""
    return [line for line in (split_note(record),) if line]


__all__ = ["caveat_lines", "split_note"]
