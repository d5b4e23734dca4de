"""Rendering helpers: JSON, tables, durations. The domain never prints."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from devctl.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def print_json(data: Any) -> None:
    """JSON on stdout, unstyled, so it pipes into jq."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    # Imported here: commands that print no table (publish, counts) skip rich.table.
    from rich.table import Table

    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*["-" if cell is None else str(cell) for cell in row])
    return out


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def millis(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def confirm(console: Console, question: str, yes: bool) -> None:
    """Ask before something destructive; without a terminal, demand --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Refusing without confirmation.", hint="pass --yes to confirm")
    if not typer.confirm(question, default=False):
        console.print("aborted: nothing was changed")
        raise typer.Exit(1)


def cell(value: object) -> str | None:
    """A table cell holding data: shown literally (``table`` renders str cells as markup)."""
    return None if value is None else escape(str(value))


def ago(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return f"{duration(max(0.0, time.time() - epoch))} ago"


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 partition``, ``3 partitions``: a count with its noun agreeing."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"
