"""devctl top: a live dashboard of the whole running system."""

from __future__ import annotations

import typer


def top(ctx: typer.Context) -> None:
    """Live dashboard: topic rates and lag, presence, API latency, outbox, Redis, last events."""
    raise typer.Exit(0)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Stack")(top)
