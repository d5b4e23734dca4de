"""The one place destructive commands are guarded on a protected context.

``DESTRUCTIVE`` lists them (a command path, and the option that makes it
destructive, if only with it); ``guard_destructive`` gives each one
``--confirm-context NAME`` and runs ``contexts.require_confirmation`` before the
command does anything. The command modules carry no check of their own.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from devctl.errors import ContextProtected

# Command path -> the parameter that must be true for it to destroy (None: always).
DESTRUCTIVE: dict[tuple[str, ...], str | None] = {
    ("topics", "delete"): None,
    ("sessions", "revoke"): None,
    ("cache", "flush"): None,
    ("groups", "reset"): "execute",
    ("down",): "purge",
    ("ratelimit", "reset"): None,
}

CONFIRM_FLAG = "--confirm-context"
_META = "devctl.confirm_context"


def _remember(ctx: typer.Context, value: str | None) -> None:
    ctx.meta[_META] = value


def _confirm_option() -> Any:
    """``--confirm-context``, built by Typer from a declaration (as -v is in app.py)."""
    from typer.main import get_command

    holder = typer.Typer(add_completion=False)

    @holder.command()
    def options(
        confirm_context: Annotated[
            str | None,
            typer.Option(
                CONFIRM_FLAG,
                metavar="NAME",
                help="On a protected context: its name, to confirm without a prompt.",
                callback=_remember,
                expose_value=False,
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Never run: it only declares the option."""

    (option,) = get_command(holder).params
    return option


def guard_destructive(root: Any) -> None:
    """Add the guard to each command of DESTRUCTIVE present in the tree under ``root``."""
    for path, when in DESTRUCTIVE.items():
        command = root
        for name in path:
            command = (getattr(command, "commands", None) or {}).get(name)
            if command is None:
                break
        if command is not None and not getattr(command, "_devctl_guarded", False):
            command.params.append(_confirm_option())
            _wrap(command, when)
            command._devctl_guarded = True


def _wrap(command: Any, when: str | None) -> None:
    invoke = command.invoke

    def guarded_invoke(ctx: Any) -> Any:
        if when is None or ctx.params.get(when):
            check(ctx)
        return invoke(ctx)

    command.invoke = guarded_invoke


def check(ctx: Any) -> None:
    """Refuse (ContextProtected) unless the active context allows this destructive run."""
    from devctl import contexts
    from devctl.cli.app import get_app

    application = get_app(ctx)
    context = contexts.active(application.context, os.environ)
    if context is None:
        return
    # The header of the destructive prompt (and a note in logs of scripted runs).
    application.info(f"[bold]context:[/bold] {describe(context)}")

    def ask(question: str) -> str:
        # On stderr: stdout carries the command's output (JSON for --json), never this.
        answer: str = typer.prompt(question, default="", show_default=False, err=True)
        return answer

    interactive = sys.stdin.isatty()
    try:
        contexts.require_confirmation(context, ctx.meta.get(_META), ask if interactive else None)
    except ContextProtected as exc:
        exc.hint = f"pass {CONFIRM_FLAG} {context.name} to confirm" + (
            " (or type it at the prompt)" if interactive else ""
        )
        raise


def describe(context: Any) -> str:
    """How commands name the active context: ``prod (protected, engine external)``."""
    protected = "protected, " if context.protected else ""
    return f"{context.name} ({protected}engine {context.engine})"
