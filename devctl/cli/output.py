"""Rendering helpers: JSON, tables, durations. The domain never prints."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

from devctl.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


def print_json(data: Any) -> None:
    """JSON on stdout, unstyled, so it pipes into jq."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Table | PlainTable:
    """A table of ``columns``; str cells are Rich markup (``cell()`` makes data literal).

    On a terminal it is a Rich table. When stdout is not one (piped, redirected) it is
    the plain column layout of kubectl and rpk: no Rich, no borders, never wrapped.
    Print it with ``Application.show``.
    """
    if plain_stdout():
        return PlainTable.of(title, columns, rows)
    # Imported here: commands that print no table (publish, counts) skip rich.table.
    from rich.table import Table

    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")
    from rich.text import Text

    for row in rows:
        # A Literal is data: drawn as its value (rich.markup.escape cannot round-trip a
        # trailing backslash: `ua\\` would show as `ua\\\\`).
        out.add_row(
            *[
                "-" if c is None else Text(c.value) if isinstance(c, Literal) else str(c)
                for c in row
            ]
        )
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
    """A table cell holding data: shown literally (``table`` renders str cells as markup),
    with control characters as visible escapes (data must not drive the terminal)."""
    return None if value is None else Literal(_visible(str(value)))


# C0/C1 controls but tab and newline (the layouts handle those): ESC starts colour
# changes, title rewrites and screen clears in whatever terminal the output reaches.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def ago(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return f"{duration(max(0.0, time.time() - epoch))} ago"


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """``1 partition``, ``3 partitions``: a count with its noun agreeing."""
    return f"{n:,} {singular if n == 1 else (plural or singular + 's')}"


# --- the plain layout of piped tables, and the bits of Rich markup it needs -------------
# Importing rich.console, rich.table and rich.markup costs ~22 ms and drawing a table
# ~10 ms, a third of `devctl keys`; a pipe needs none of it.

# A markup tag with the backslashes before it, as rich.markup.RE_TAGS matches it.
_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_ESCAPABLE = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")


def escape(text: str) -> str:
    """Exactly rich.markup.escape (tests compare them), without importing rich.markup."""

    def double(match: re.Match[str]) -> str:
        backslashes, tag = match.groups()
        return f"{backslashes}{backslashes}\\{tag}"

    text = _ESCAPABLE.sub(double, text)
    if text.endswith("\\") and not text.endswith("\\\\"):
        return text + "\\"
    return text


def strip_markup(markup: str) -> str:
    """The text Rich shows for ``markup``: tags dropped, escaped tags and brackets kept.

    The same parse as rich.markup.render (tests compare them), except that emoji codes
    such as ``:smile:`` stay as written.
    """
    if "[" not in markup:
        return markup
    out: list[str] = []
    position = 0
    for match in _TAG.finditer(markup):
        full, escapes, _ = match.groups()
        start, end = match.span()
        if start > position:
            out.append(markup[position:start].replace("\\[", "["))
        # An even run of backslashes is literal backslashes before a real tag; an odd
        # one also escapes the tag, which is then text.
        backslashes, escaped = divmod(len(escapes), 2)
        out.append("\\" * backslashes)
        if escaped:
            out.append(full[len(escapes) :])
        position = end
    out.append(markup[position:].replace("\\[", "["))
    return "".join(out)


class Literal(str):
    """A cell made by ``cell()``: escaped markup to Rich, its value as is to the plain layout.

    Unescaping is not enough for the plain layout: rich.markup.escape maps both ``a\\``
    and ``a\\\\`` to ``a\\\\``, so the value itself travels with the escaped text.
    """

    value: str

    def __new__(cls, value: str) -> Literal:
        self = super().__new__(cls, escape(value))
        self.value = value
        return self


def plain_stdout() -> bool:
    """True when stdout is not a terminal: Rich's Console.is_terminal test, without Rich.

    TTY_COMPATIBLE=1 or a non-empty FORCE_COLOR make a pipe a terminal for Rich, and so
    for the tables; TTY_COMPATIBLE=0 makes a terminal a pipe.
    """
    tty_compatible = os.environ.get("TTY_COMPATIBLE", "")
    if tty_compatible in ("0", "1"):
        return tty_compatible == "0"
    force_color = os.environ.get("FORCE_COLOR")
    if force_color is not None:
        return force_color == ""
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):  # no stdout, or a closed one
        return True


def text_width(text: str) -> int:
    """Columns ``text`` takes in a terminal: East Asian wide and fullwidth characters two,
    combining marks and format characters (zero-width joiner, variation selectors) none."""
    if text.isascii():
        return len(text)
    from unicodedata import category, east_asian_width

    return sum(
        0 if category(ch) in ("Mn", "Me", "Cf") else 2 if east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def _plain_cell(value: Any) -> str:
    """One cell of the plain layout: literal, on one line, ``-`` when it shows nothing."""
    if value is None:
        return "-"
    text = value.value if isinstance(value, Literal) else strip_markup(str(value))
    # One row per line: a cell's lines (events types' name and summary) are joined.
    text = " ".join(text.splitlines()).replace("\t", " ")
    return text if text.strip() else "-"


@dataclass(frozen=True)
class PlainTable:
    """A table as kubectl and rpk print to a pipe: the title (if any) on its own line, a
    header in upper case, columns padded to the widest cell and two spaces apart, one
    row per line, no borders, never wrapped. A cell showing nothing is ``-``, so every
    row has every column."""

    title: str | None
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    @classmethod
    def of(
        cls, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> PlainTable:
        width = len(columns)
        return cls(
            strip_markup(title) if title else None,
            tuple(strip_markup(c).upper() for c in columns),
            tuple(tuple(_plain_cell(v) for v in row) + ("-",) * (width - len(row)) for row in rows),
        )

    def render(self) -> str:
        lines = [self.columns, *self.rows]
        widths = [max(text_width(line[i]) for line in lines) for i in range(len(self.columns))]
        out = [self.title] if self.title else []
        for line in lines:
            # The last column is not padded: no trailing blanks.
            padded = [
                c + " " * (w - text_width(c)) for c, w in zip(line[:-1], widths, strict=False)
            ]
            out.append("  ".join([*padded, *line[-1:]]))
        return "\n".join(out) + "\n"

    def __rich__(self) -> Text:
        """Printed through a Rich console after all (a frame of `groups lag --watch`)."""
        from rich.text import Text

        return Text(self.render().removesuffix("\n"), no_wrap=True, overflow="ignore")
