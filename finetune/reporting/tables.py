"""Tables of numbers, as aligned plain text (the terminal) and as Markdown (compare.md, trials.md, the model card).

    text_table(header, rows, align="llr")   columns padded to their widest cell, "-" rules around the header
    markdown_table(header, rows)            "| a | b |" lines under a "|---|---|" rule
    fmt_value(value, digits=4)              the one way a cell shows a value: None "-", 12,000, 0.8512, 3e-05

Cells are strings; fmt_value makes them from numbers, so every table of the toolkit writes 0.8512 alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def fmt_value(value, digits: int = 4, trim: bool = False, text: Callable[[str], str] = str) -> str:
    """A value as a table cell: None "-", booleans true/false, integers with thousands separators, floats with
    `digits` decimals (`digits` significant digits below 1e-3 or from 1e5 on: 3e-05, 1.235e+05), lists joined.

    trim drops trailing zeros (0.9 instead of 0.9000: prose and Markdown; aligned columns keep them so that
    decimals line up); `text` turns any other value into its cell (the card: no local paths, no "|").
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and not 1e-3 <= abs(value) < 1e5:
            return f"{value:.{digits}g}"
        shown = f"{value:.{digits}f}"
        return shown.rstrip("0").rstrip(".") if trim and "." in shown else shown
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v, digits, trim, text) for v in value)
    return text(str(value))


def text_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "l", rules: bool = True, indent: str = ""
) -> str:
    """An aligned plain-text table. `align` has one letter per column, "l" (left) or "r" (right); its last letter
    holds for the columns after it ("llr": two left, the rest right). `rules` draws "-" lines above and below
    the header and below the last row."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    sides = [align[min(i, len(align) - 1)] for i in range(len(widths))]

    def line(cells) -> str:
        padded = (str(c).rjust(w) if side == "r" else str(c).ljust(w) for c, w, side in zip(cells, widths, sides))
        return (indent + "  ".join(padded)).rstrip()

    if not rules:
        return "\n".join([line(header), *map(line, rows)])
    rule = indent + "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table (cells as given: escape a "|" inside one before)."""
    return [
        "| " + " | ".join(map(str, header)) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in rows),
    ]
