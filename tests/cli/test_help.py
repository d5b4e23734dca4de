"""`devctl --help` is made from COMMANDS' stand-ins: it must read as the full tree's."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from typing import Any

import pytest
from typer._click import Context
from typer.main import get_command

from devctl.cli import typer_compat
from devctl.cli.app import COMMANDS, build_command, register


def _listing(root: Any) -> list[tuple[str, str | None, str, bool, bool]]:
    """What the root's help shows of each command, in its order."""
    ctx = Context(root, info_name="devctl")
    out = []
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        text = inspect.cleandoc(command.short_help or command.help or "")
        out.append(
            (
                name,
                getattr(command, "rich_help_panel", None),
                text.split("\n\n")[0],
                command.hidden,
                command.deprecated,
            )
        )
    return out


def _render(root: Any, capsys: pytest.CaptureFixture[str]) -> str:
    typer_compat.import_rich_utils()
    from typer import rich_utils

    rich_utils.rich_format_help(obj=root, ctx=Context(root, info_name="devctl"), markup_mode="rich")
    return capsys.readouterr().out


def test_the_summaries_are_the_commands_own(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    typer_compat.install()
    quick = build_command(["--help"])
    full = get_command(register())
    assert _listing(quick) == _listing(full)
    assert list(COMMANDS) == [entry[0] for entry in _listing(full)]
    assert _render(quick, capsys) == _render(full, capsys)


@pytest.mark.parametrize("args", [["--help"], ["-h"], [], ["--config", "x.yaml", "--help"]])
def test_root_help_lists_every_command(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
    )
    # Without arguments the help is shown as a usage error would be (exit 2).
    assert result.returncode == (2 if not args else 0), result.stderr
    for name, info in COMMANDS.items():
        assert f" {name} " in result.stdout
        assert info.summary[:40] in result.stdout


def test_command_help_still_shows_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "sessions", "count", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "--data-dir" in result.stdout and "--json" in result.stdout
    assert "--verbose" in result.stdout
