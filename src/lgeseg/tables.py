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
