"""Tables that fit the terminal: short ids, compact times, least important columns dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich import box
from rich.table import Table

from cli.app import cell, console

__all__ = ["WIDE_AT", "WIDE_OPTION", "compact_time", "is_narrow", "new_table"]

#: Below this many columns a table is narrow unless ``--wide`` is given.
WIDE_AT = 120

#: ``--wide`` on a command that prints a table.
WIDE_OPTION = typer.Option(False, "--wide", help="Every column, whole ids and times.")


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
