"""The data set's ``manifest.csv`` as the report needs it: every column of every listed file.

Training reads only the ``patient`` column (:mod:`lgeseg.data` checks it against the images); the report
also needs the other columns (for example EMIDEC's ``pathology``) to group test slices into strata, and
must keep working when the data folder has moved or never had a manifest (then it analyses per slice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lgeseg.data import read_manifest_table
from lgeseg.errors import DataError


@dataclass(frozen=True)
class Manifest:
    """``manifest.csv`` of a data set: its path, column names (file order) and one row per file."""

    path: Path
    columns: list[str]
    rows: dict[str, dict[str, str]]

    def column(self, name: str) -> dict[str, str]:
        """``{file: value}`` of column ``name``.

        Raises:
            DataError: the column does not exist (the message names it and the columns there are).
        """
        if name not in self.columns:
            raise DataError(f"{self.path}: no column {name!r} (columns: {', '.join(self.columns)})")
        return {file: row.get(name, "") for file, row in self.rows.items()}

    @property
    def patients(self) -> dict[str, str] | None:
        """``{file: patient}`` when the manifest names patients for every file, else None."""
        if "patient" not in self.columns:
            return None
        patients = self.column("patient")
        return patients if all(patients.values()) else None


def read_manifest(data_dir: Path | None) -> Manifest | None:
    """Read ``data_dir/manifest.csv``; None when there is no folder or no manifest in it.

    Raises:
        DataError: the file cannot be read, has no ``file`` column or lists a file twice.
    """
    if data_dir is None:
        return None
    path = Path(data_dir) / "manifest.csv"
    if not path.is_file():
        return None
    columns, raw = read_manifest_table(path)
    if "file" not in columns:
        raise DataError(f"{path}: no 'file' column (columns: {', '.join(columns) or 'none'})")
    rows: dict[str, dict[str, str]] = {}
    for _, row in raw:
        if row["file"] in rows:
            raise DataError(f"{path}: {row['file']!r} listed twice")
        rows[row["file"]] = row
    return Manifest(path, columns, rows)
