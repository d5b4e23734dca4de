"""Piped tables: the plain column layout of kubectl and rpk, drawn without Rich."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.markup import escape as rich_escape
from rich.markup import render as rich_render

from devctl.cli.output import PlainTable, cell, escape, plain_stdout, strip_markup, text_width

TRICKY = [
    "plain",
    "[red]",
    "a [red]b[/red] c",
    "[/]",
    "\\[bold]",
    "\\\\[bold]x[/bold]",
    "\\\\\\[bold]",
    "ends with \\",
    "ends with \\\\",
    "[1] [a=b] [#fff]x[/]",
    "\\[1]",
    "[link=https://example.com/?q=[x]]here[/link]",
    "@ [@click]x[/]",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_escape_is_richs(text: str) -> None:
    assert escape(text) == rich_escape(text)


@pytest.mark.parametrize("markup", TRICKY + [rich_escape(t) for t in TRICKY])
def test_strip_markup_shows_what_rich_shows(markup: str) -> None:
    try:
        shown = rich_render(markup, emoji=False).plain
    except Exception:  # markup Rich refuses (an unmatched close tag): nothing to compare
        pytest.skip("Rich rejects this markup")
    assert strip_markup(markup) == shown


@pytest.mark.parametrize("value", TRICKY)
def test_cells_keep_their_value_literally(value: str) -> None:
    rows = PlainTable.of(None, ["value"], [(cell(value),)]).rows
    assert rows == ((value if value.strip() else "-",),)


def test_layout_is_aligned_upper_case_and_borderless() -> None:
    out = PlainTable.of(
        "Redis keys (prefix [bold]dc:[/bold])",
        ["kind", "hash tag", "n"],
        [
            (cell("session"), cell("{u:<user>}"), 3),
            (cell("presence [red]x[/red]"), None, "[green]✔[/green]"),
            ("", "", ""),
        ],
    ).render()
    assert out == (
        "Redis keys (prefix dc:)\n"
        "KIND                   HASH TAG    N\n"
        "session                {u:<user>}  3\n"
        "presence [red]x[/red]  -           ✔\n"
        "-                      -           -\n"
    )


def test_wide_and_combining_characters_are_measured_in_columns() -> None:
    assert text_width("abc") == 3
    assert text_width("日本") == 4  # East Asian wide: two columns each
    assert text_width("e\u0301") == 1  # e + combining acute accent
    assert text_width("👍🏽") == 4  # emoji and its skin-tone modifier, both wide
    lines = PlainTable.of(None, ["name", "x"], [("日本", "1"), ("ab", "2")]).render().splitlines()
    assert lines == ["NAME  X", "日本  1", "ab    2"]


def test_a_cell_spanning_lines_stays_on_its_row() -> None:
    out = PlainTable.of(None, ["type", "topic"], [("[bold]a[/bold]\n[dim]b c[/dim]", "t\tu")])
    assert out.render() == "TYPE   TOPIC\na b c  t u\n"


def test_plain_only_when_stdout_is_no_terminal_nor_forced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)
    assert plain_stdout()  # pytest captures stdout
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not plain_stdout()
    monkeypatch.setenv("FORCE_COLOR", "")
    assert plain_stdout()
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert not plain_stdout()
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert plain_stdout()


def _piped(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    clean = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "devctl", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("args", [("keys",), ("config", "show")])
def test_piped_keys_and_config_show_import_no_rich(args: tuple[str, ...]) -> None:
    result = _piped(*args)
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert not [name for name in imported if name.split(".")[0] == "rich"]
    lines = result.stdout.splitlines()
    assert "┃" not in result.stdout and "│" not in result.stdout
    if args == ("keys",):
        assert lines[0].startswith("Redis keys (prefix ")
        assert lines[1].split()[:3] == ["KIND", "PATTERN", "TYPE"]
    else:
        assert lines[0].startswith("config file: ")
        assert lines[1].split() == ["KEY", "VALUE", "SOURCE"]
        assert any(line.split()[:3] == ["redis.port", "6379", "default"] for line in lines)


def test_forced_colour_keeps_the_rich_table_in_a_pipe() -> None:
    result = _piped("keys", FORCE_COLOR="1")
    assert result.returncode == 0, result.stderr
    assert "┃" in result.stdout and "\x1b[" in result.stdout


def test_piped_table_ignores_a_narrow_columns() -> None:
    wide = _piped("keys")
    narrow = _piped("keys", COLUMNS="40")
    assert narrow.stdout == wide.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) > 40


def test_cells_are_literal_and_inert_in_both_layouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trailing backslash stays single; control characters become visible escapes."""
    import io

    from rich.console import Console

    from devctl.cli.output import cell, table

    rows = [[cell("ua\\"), cell("x\x1b[31mred\x07")]]
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = io.StringIO()
    Console(file=out, width=80, color_system=None, force_terminal=True).print(
        table(None, ["a", "b"], rows)
    )
    drawn = out.getvalue()
    assert "ua\\ " in drawn and "ua\\\\" not in drawn
    assert "x\\x1b[31mred\\x07" in drawn and "\x1b" not in drawn
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    plain = table(None, ["a", "b"], rows)
    assert type(plain).__name__ == "PlainTable"
