"""Which command made a study: ``--resume`` continues only a study this tool created for that command.

Optuna studies share one namespace per storage, so ``grid --resume --study-name X/sampler`` would run a
grid into a search's sampler study (which the sampler then learns from), and a study another tool made
could be taken over the same way (optuna#2989). A study this tool creates carries the user attr
``created_by`` (``{"tool": "lgeseg", "command": "grid" | "search"}``); studies from before that attr was
written are recognised by their stored ``config`` (a ``search:`` section means a search). Optuna only.
"""

from __future__ import annotations

from typing import Any

from lgeseg.errors import UserError

#: The study user attr that names the tool and command that created the study.
CREATED_BY = "created_by"
TOOL = "lgeseg"


def study_command(config: dict[str, Any]) -> str:
    """``"search"`` for a config with a ``search:`` section, else ``"grid"``."""
    return "search" if "search" in config else "grid"


def owner(user_attrs: dict[str, Any]) -> str | None:
    """The command of this tool that created a study with these user attrs, or None (another tool, or a
    search's sampler study)."""
    made = user_attrs.get(CREATED_BY)
    if isinstance(made, dict) and made.get("tool") == TOOL:
        return made.get("command")
    if "record_study" in user_attrs:
        return None  # a study's sampler study: written by its driver, never a record
    if isinstance(user_attrs.get("config"), dict):
        return study_command(user_attrs["config"])  # a record from before created_by was written
    return None


def claim_study(study, command: str, storage_shown: str, by: str = "--resume") -> None:
    """Mark a new study as ``command``'s, or check that an existing one is (:func:`check_owner`).

    A study with no user attrs and no trials counts as new (a driver killed between creating it and
    writing its attrs).

    Raises:
        UserError: see :func:`check_owner`.
    """
    attrs = study.user_attrs
    if not attrs and not study.get_trials(deepcopy=False):
        study.set_user_attr(CREATED_BY, {"tool": TOOL, "command": command})
        return
    check_owner(study, command, storage_shown, by)
    if CREATED_BY not in attrs:
        study.set_user_attr(CREATED_BY, {"tool": TOOL, "command": command})


def check_owner(study, command: str, storage_shown: str, by: str) -> None:
    """Refuse to write into ``study`` for ``by`` (``"--resume"``, ``"record"``: what the user typed) unless
    ``command`` made it, or it is new (no user attrs, no trials). Writes nothing.

    Raises:
        UserError: the study was made by another command, by a search as its sampler study, or by
            another tool; one line naming the study, what made it and ``by``.
    """
    attrs = study.user_attrs
    if not attrs and not study.get_trials(deepcopy=False):
        return
    made = owner(attrs)
    if made == command:
        return
    instead = "give the study's own command, or another --study-name"
    if made is not None:
        what = f"a {made} study"
    elif "record_study" in attrs:  # a search's or a grid's (hpo.sampling): what its sampler learns from
        what = f"the sampler study of study '{attrs['record_study']}'"
        instead = f"its record is study '{attrs['record_study']}'"
    else:
        what = "a study this tool did not create (another tool, or by hand)"
    raise UserError(
        f"study '{study.study_name}' in {storage_shown} is {what}, not a {command} study: {by} will not "
        f"write into it; {instead}"
    )


__all__ = ["CREATED_BY", "check_owner", "claim_study", "owner", "study_command"]
