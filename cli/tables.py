"""Tables that fit the terminal: short ids, compact times, least important columns dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from cli.app import cell, console

__all__ = [
    "WIDE_AT",
    "WIDE_OPTION",
    "compact_time",
    "is_narrow",
    "new_table",
    "print_table",
]

#: Below this many columns a table is narrow unless ``--wide`` is given.
WIDE_AT = 120

#: ``--wide`` on a command that prints a table.
WIDE_OPTION = typer.Option(
    False,
    "--wide",
    help="Every column, whole ids and times (one record per block if wider than the terminal).",
)


def is_narrow(wide: bool) -> bool:
    """True if the table should drop columns and shorten ids (the terminal is narrow)."""
    return not wide and console.width < WIDE_AT


def compact_time(at: datetime, now: datetime | None = None) -> str:
    """``13:05:09`` (UTC) for today, else ``11-22 13:05``; the year only when it differs."""
    at = at.astimezone(UTC)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if at.date() == now.date():
        return at.strftime("%H:%M:%S")
    if at.year == now.year:
        return at.strftime("%m-%d %H:%M")
    return at.strftime("%Y-%m-%d")


def new_table(title: str | None, narrow: bool) -> Table:
    """A table titled ``title`` (escaped, never markup): without outer borders when narrow."""
    heading = cell(title) if title is not None else None
    if narrow:
        return Table(title=heading, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    return Table(title=heading)


def _plain(value: object) -> str:
    return value.plain if isinstance(value, Text) else str(value)


def natural_width(table: Table) -> int:
    """How wide ``table`` is with no value folded or cut."""
    return console.measure(table, options=console.options.update_width(1_000_000)).maximum


def print_table(table: Table, *, whole: bool) -> None:
    """Print ``table``; if ``whole`` (every column) and wider than the terminal, one block a row.

    A block is the row's non-empty cells as ``column  value`` lines, values whole
    (soft-wrapped by the terminal, never cut), blocks separated by a blank line.
    """
    if not whole or natural_width(table) <= console.width:
        console.print(table)
        return
    if table.title is not None:
        console.print(table.title, soft_wrap=True)
    heads = [_plain(c.header) or "flag" for c in table.columns]
    pad = max(map(len, heads), default=0)
    rows = zip(*(list(c.cells) for c in table.columns), strict=True)
    for n, row in enumerate(rows):
        if n or table.title is not None:
            console.print()
        for head, value in zip(heads, row, strict=True):
            text = _plain(value)
            if text:
                console.print(Text(f"{head:<{pad}}  {text}"), soft_wrap=True)
