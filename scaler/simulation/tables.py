"""Terminal tables that fit the terminal: columns marked optional are left out, least
important first, until the table fits the width, and the caption names what was left out.

On a terminal the width is the terminal's (``COLUMNS`` when set); piped into a file or a
CI log, tables take the width they need, so nothing is wrapped or left out there.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its header, alignment and, if it may be left out, its rank (the lowest
    rank is left out first)."""

    header: str
    justify: Literal["left", "right"] = "right"
    optional: int | None = None  # None: always shown
    label: str | None = None  # its name in the caption (default: the header on one line)

    @property
    def name(self) -> str:
        """What the caption calls the column."""
        return self.label if self.label is not None else self.header.replace("\n", " ")


@dataclass(frozen=True, slots=True)
class Row:
    """One row's cells (one per column) and whether a rule follows it."""

    cells: Sequence[str]
    end_section: bool = False


def output_width(console: Console | None = None) -> int | None:
    """The width tables should fit: the terminal's, or ``COLUMNS``; None (as wide as the
    table needs) when stdout is not a terminal and ``COLUMNS`` is unset."""
    console = console or Console()
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console.width
    return None


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Row],
    *,
    width: int | None,
    title: str | None = None,
    caption: str | None = None,
) -> Table:
    """A table of `rows` that fits `width` (None: any width), leaving out optional columns
    by rank while it does not; the caption says which were left out."""
    shown = list(range(len(columns)))
    droppable = sorted(
        (i for i, c in enumerate(columns) if c.optional is not None),
        key=lambda i: (columns[i].optional, -i),
    )
    while True:
        left_out = [columns[i].name for i in range(len(columns)) if i not in shown]
        notes = [caption] if caption else []
        if left_out:
            notes.append(f"not shown at {width} columns: {', '.join(left_out)} (see --json)")
        table = Table(title=title, caption="\n".join(notes) or None, caption_justify="left")
        for i in shown:
            table.add_column(columns[i].header, justify=columns[i].justify)
        for row in rows:
            table.add_row(*(row.cells[i] for i in shown), end_section=row.end_section)
        if width is None or not droppable or natural_width(table) <= width:
            return table
        shown.remove(droppable.pop(0))


def natural_width(renderable: RenderableType) -> int:
    """The width `renderable` takes when nothing constrains it (no wrapping)."""
    console = Console(file=io.StringIO(), width=10_000)
    return Measurement.get(console, console.options, renderable).maximum


def print_table(table: RenderableType, *, width: int | None) -> None:
    """Print `table` on stdout at `width` (None: its natural width, nothing wrapped)."""
    Console(width=width if width is not None else natural_width(table)).print(table)
