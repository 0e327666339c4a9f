"""Plain-text tables for terminals and logs: one formatter and one spelling of a missing value.

The metric tables of ``evaluate`` and ``train``, the grid's live progress and its closing summary, and the
numbers in the report's tables all format through here, so a value that is undefined (a metric MATLAB
returns as NaN, stored as JSON null) or not there yet reads the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: How a missing or undefined value is written: MATLAB's spelling, as its metric tables print it.
MISSING = "NaN"


def fmt(value: Any, digits: int = 4) -> str:
    """``value`` for a table cell: floats with ``digits`` decimals, None and NaN as :data:`MISSING`,
    anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def as_nan(value: Any) -> float:
    """``value`` as a float for arithmetic, a missing one (None, JSON's null) as NaN. The one coercion of
    stored numbers into NaN; :func:`as_none` is its inverse."""
    return math.nan if value is None else float(value)


def as_none(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, NaN or not a number (for storing as JSON null)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def setting(value: Any, digits: int = 6) -> str:
    """A hyperparameter's value for a table cell or a name (``5e-05``, ``0.0004044``): floats with ``digits``
    significant digits (``g``), None and NaN as :data:`MISSING`, anything else as ``str``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned text: the first column left-aligned, the rest right-aligned, each as wide as its widest
    cell, two spaces between columns, no trailing spaces."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
