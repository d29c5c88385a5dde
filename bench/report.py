"""What every benchmark prints: per row, the median of each metric over the repeats, with the
min..max spread, because one run on a shared machine means little."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of the (sorted) samples lie."""
    return sorted_values[max(0, int(len(sorted_values) * fraction) - 1)]


def print_medians(
    header: Sequence[str], runs: Sequence[dict[str, Sequence[float]]], digits: int = 2
) -> None:
    """``runs``: one dict per repeat, row name → metrics in ``header[1:]``'s order."""
    rows = [list(header)]
    for name in runs[0]:
        row = [name]
        for column in range(len(header) - 1):
            values = [run[name][column] for run in runs]
            median, low, high = statistics.median(values), min(values), max(values)
            row.append(f"{median:.{digits}f} ({low:.{digits}f}..{high:.{digits}f})")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
