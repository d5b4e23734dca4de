"""devctl events types: the registry of DevConnect event types."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import JsonOption
from devctl.cli.output import print_json, table

events_app = typer.Typer(help="DevConnect event types and their schemas.", no_args_is_help=True)


@events_app.command("types")
def types(
    ctx: typer.Context,
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Only these types (default: all).", show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """List every event type with its topic, key, schema version and fields (* = required).

    Example: devctl events types devconnect.message.sent --json
    """
    from devctl.events.registry import REGISTRY

    chosen = [REGISTRY[name] for name in names] if names else list(REGISTRY.values())
    if json_output:
        print_json(
            [
                {
                    "type": t.name,
                    "topic": t.topic,
                    "version": t.version,
                    "dataschema": t.dataschema,
                    "key": t.key_doc,
                    "subject": t.subject_doc,
                    "summary": t.summary,
                    "legacy": list(t.legacy),
                    "fields": [
                        {"name": n, "type": kind, "required": req} for n, kind, req in t.fields()
                    ],
                    "schema": t.model.model_json_schema(),
                }
                for t in chosen
            ]
        )
        return
    rows = [
        (
            f"[bold]{escape(t.name)}[/bold]\n[dim]{escape(t.summary)}[/dim]",
            t.topic,
            escape(t.key_doc),
            f"v{t.version}",
            escape(", ".join(f"{n}{'*' if req else ''}: {kind}" for n, kind, req in t.fields())),
            ", ".join(t.legacy) or "-",
        )
        for t in chosen
    ]
    get_app(ctx).show(
        table(None, ["type", "topic", "key", "schema", "fields (* required)", "today's name"], rows)
    )


def register(app: typer.Typer) -> None:
    app.add_typer(events_app, name="events", rich_help_panel="Kafka")
