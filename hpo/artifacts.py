"""Checkpoints of finished trials in the study's ``optuna.artifacts`` store, so the study carries its networks.

A trial folder lives on the machine that trained it; the record (the Optuna storage) is what every machine
reads. When an attempt completes, the recorder (driver side) and ``record`` upload its run config and the
checkpoint the run evaluated (``train.select``: ``best.pt`` or ``last.pt``), slimmed to what a network needs
(:data:`NETWORK_KEYS`: a ``last.pt`` loses its optimizer, scheduler, history and RNG states, about two
thirds of its size with Adam), to a :class:`optuna.artifacts.FileSystemArtifactStore` with
:func:`optuna.artifacts.upload_artifact`, and note in the trial's ``checkpoints`` user attr (:data:`ATTR.CHECKPOINTS
<hpo.record.ATTR>`) each file's artifact id, SHA-256 and size. optuna-dashboard lists the files when it is
given the store (``python -m hpo.run dashboard`` does); ``predict`` and ``export`` fall back to them when the
trial folder is not reachable, downloading with :func:`optuna.artifacts.download_artifact` into
``$LGESEG_CACHE/artifacts`` (default ``~/.cache/lgeseg/artifacts``) and checking the SHA-256.

The store is a folder next to the study (``<study folder>/artifacts``); its path is kept in the study's
``artifact_store`` user attr. A machine that mounts it elsewhere names it with ``--artifacts DIR``.
Ray-free: ``record`` runs where Ray is not installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

from lgeseg.errors import DataError

from .record import ATTR

logger = logging.getLogger(__name__)

#: The study user attr holding the artifact store's folder.
STORE_ATTR = "artifact_store"
#: The store's folder name next to the study.
STORE_DIR = "artifacts"
#: The run config ``predict`` needs beside the checkpoint.
CONFIG_FILE = "config.yaml"
#: What of a checkpoint is registered: the network and what identifies it (as in ``best.pt``).
NETWORK_KEYS = ("model_spec", "labels", "config_hash", "data_fingerprint", "split", "model", "epoch", "val_accuracy")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def writing_store(study: optuna.Study, default: Path) -> FileSystemArtifactStore:
    """The store the study's checkpoints go to: its ``artifact_store`` attr, else ``default`` (recorded in
    the study then). The folder is created."""
    folder = Path(study.user_attrs.get(STORE_ATTR) or default)
    if STORE_ATTR not in study.user_attrs:
        study.set_user_attr(STORE_ATTR, str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(folder))


def store_folder(studies: list[dict], storage_file: Path | None, given: str | Path | None = None) -> Path | None:
    """Where a reader finds the artifact store of studies (their user attrs): ``given`` (``--artifacts``),
    else the first existing ``artifact_store`` attr (a warning when there are several: optuna-dashboard serves
    one store), else ``artifacts/`` beside a SQLite or journal file; None when none exists.

    Raises:
        DataError: ``given`` is not a folder.
    """
    if given:
        if not Path(given).is_dir():
            raise DataError(f"--artifacts {given}: folder not found")
        return Path(given)
    recorded = (attrs.get(STORE_ATTR) for attrs in studies)
    found = list(dict.fromkeys(Path(f) for f in recorded if f and Path(f).is_dir()))
    if len(found) > 1:
        logger.warning("studies keep checkpoints in %d artifact stores; the dashboard serves %s", len(found), found[0])
    if not found and storage_file is not None and (storage_file.parent / STORE_DIR).is_dir():
        found.append(storage_file.parent / STORE_DIR)
    return found[0] if found else None


def checkpoint_files(run_dir: Path) -> list[Path]:
    """The files registered for a finished run: its config and the checkpoint it evaluated."""
    from lgeseg.predict import checkpoint_path

    return [run_dir / CONFIG_FILE, checkpoint_path(run_dir, "selected")]


def register_checkpoints(store: FileSystemArtifactStore, trial: optuna.Trial, run_dir: str | Path) -> dict[str, Any]:
    """Upload a running trial's config and selected checkpoint and note them in its ``checkpoints`` attr.

    Must run before the trial is told (Optuna refuses to change a finished trial).

    Returns:
        file name -> ``{"artifact_id", "sha256", "bytes"}``.

    Raises:
        DataError: the run folder, its config or its checkpoint is missing.
    """
    import tempfile

    import torch

    from lgeseg.checkpoint import read_checkpoint

    registered = {}
    config, checkpoint = checkpoint_files(Path(run_dir))
    with tempfile.TemporaryDirectory() as tmp:
        slim = Path(tmp) / checkpoint.name
        loaded = read_checkpoint(checkpoint)
        torch.save({k: v for k, v in loaded.items() if k in NETWORK_KEYS}, slim)
        for path in (config, slim):
            artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            registered[path.name] = {"artifact_id": artifact_id, "sha256": sha256(path), "bytes": path.stat().st_size}
    trial.set_user_attr(ATTR.CHECKPOINTS, registered)
    return registered


def cache_root() -> Path:
    """``$LGESEG_CACHE/artifacts`` or ``~/.cache/lgeseg/artifacts``."""
    return Path(os.environ.get("LGESEG_CACHE") or Path.home() / ".cache" / "lgeseg").expanduser() / STORE_DIR


def fetch_run_dir(trial: optuna.trial.FrozenTrial, folder: Path | None, study_name: str) -> Path:
    """A folder holding ``trial``'s registered config and checkpoint, downloaded from the store at ``folder``
    into the cache (reused when its SHA-256 still matches).

    Raises:
        DataError: no store, no checkpoint registered for the trial, or a download whose SHA-256 differs from
            the one recorded.
    """
    registered = trial.user_attrs.get(ATTR.CHECKPOINTS) or {}
    where = f"study '{study_name}': trial {trial.number}"
    if not registered:
        raise DataError(f"{where}: its run folder is not reachable and no checkpoint is registered in the study")
    if folder is None:
        raise DataError(
            f"{where}: its run folder is not reachable and the study's artifact store was not found; "
            "give --artifacts DIR"
        )
    store = FileSystemArtifactStore(str(folder))
    target = cache_root() / f"{study_name.replace('/', '_')}-{trial._trial_id}"
    target.mkdir(parents=True, exist_ok=True)
    for name, meta in registered.items():
        path = target / name
        if path.is_file() and sha256(path) == meta["sha256"]:
            continue
        partial = target / f"{name}.part"
        partial.unlink(missing_ok=True)
        try:
            download_artifact(artifact_store=store, file_path=str(partial), artifact_id=meta["artifact_id"])
        except Exception as exc:  # noqa: BLE001 - a store raises its own kinds for a missing artifact
            raise DataError(f"{where}: artifact {name} ({meta['artifact_id']}) not in {folder} ({exc})") from None
        if sha256(partial) != meta["sha256"]:
            partial.unlink()
            raise DataError(f"{where}: artifact {name} in {folder} does not match its recorded SHA-256")
        shutil.move(partial, path)
    logger.info("%s: run folder not reachable; using its checkpoint from the artifact store (%s)", where, folder)
    return target


def another_run(trial: optuna.trial.FrozenTrial, run_dir: Path) -> str | None:
    """Why ``run_dir`` no longer holds ``trial``'s run, or None: its ``config.yaml`` hashes to another run
    config than the trial's ``config_hash`` attr (the folder was deleted and trained again with another
    config). None too where the trial recorded no hash or the folder has no readable config (loading says
    what is missing). A folder trained again with the same config is not told apart."""
    from lgeseg.config import config_hash, safe_load

    recorded = trial.user_attrs.get(ATTR.CONFIG_HASH)
    if not recorded:
        return None
    try:
        found = config_hash(safe_load((run_dir / CONFIG_FILE).read_text()))
    except Exception:  # noqa: BLE001 - an unreadable config.yaml is load_network's to report
        return None
    if found == recorded:
        return None
    return f"its run folder {run_dir} now holds another run (config hash {found}; the trial recorded {recorded})"


def network_dir(
    chosen, study: optuna.Study, storage: str | None, given: str | Path | None = None, checkpoint: str = "selected"
) -> Path:
    """The folder to load a chosen network (:class:`hpo.networks.Chosen`) from: its run folder when this
    machine reaches it, it still holds the trial's run (:func:`another_run`) and it holds the ``checkpoint``,
    else its registered checkpoint fetched from the artifact store (:func:`fetch_run_dir`).

    Args:
        storage: the ``--storage`` value (None: the study name's default), for the store beside its file.
        given: ``--artifacts DIR``.
        checkpoint: ``selected``, ``best`` or ``last`` (:func:`lgeseg.predict.checkpoint_path`).

    Raises:
        DataError: the run folder holds another run and no checkpoint of the trial is registered; the folder
            cannot serve ``checkpoint`` and the study registered another; see also :func:`fetch_run_dir`.
    """
    from lgeseg.predict import checkpoint_path

    from .storage import storage_file, study_storage

    where = f"study '{study.study_name}': trial {chosen.number}"
    registered = (chosen.trial.user_attrs.get(ATTR.CHECKPOINTS) if chosen.trial is not None else None) or {}
    if chosen.run_dir is not None and chosen.run_dir.is_dir():
        moved_on = another_run(chosen.trial, chosen.run_dir) if chosen.trial is not None else None
        if moved_on is not None and not registered:
            raise DataError(f"{where}: {moved_on}, and the study holds no checkpoint of it")
        if moved_on is not None:
            logger.warning("trial %d: %s: using its checkpoint registered in the study", chosen.number, moved_on)
        else:
            try:
                checkpoint_path(chosen.run_dir, checkpoint)
                return chosen.run_dir
            except DataError:
                if not registered:
                    return chosen.run_dir  # load_network says what is missing
    if registered and checkpoint != "selected" and f"{checkpoint}.pt" not in registered:
        kept = ", ".join(name for name in registered if name.endswith(".pt"))
        raise DataError(
            f"{where}: --checkpoint {checkpoint}: its run folder cannot serve it and the study registered only the "
            f"checkpoint its run evaluated ({kept}); give --checkpoint selected"
        )
    folder = store_folder([study.user_attrs], storage_file(study_storage(storage, study.study_name)), given)
    return fetch_run_dir(chosen.trial, folder, study.study_name)


__all__ = [
    "STORE_ATTR",
    "fetch_run_dir",
    "network_dir",
    "register_checkpoints",
    "store_folder",
    "writing_store",
]
