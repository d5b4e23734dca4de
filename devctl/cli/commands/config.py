"""devctl config show / validate."""

from __future__ import annotations

import typer

from devctl.cli.app import get_app
from devctl.cli.options import JsonOption
from devctl.cli.output import cell, print_json, table

config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


@config_app.command("show")
def show(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Print every setting, its value (secrets masked) and where it came from.

    Example: devctl config show --json | jq '.settings."redis.port".value'
    """
    settings = get_app(ctx).settings()
    values = settings.redacted()
    topics = [
        {
            "name": t.name,
            "partitions": t.partitions,
            "replication_factor": t.replication_factor,
            "config": t.config,
            "key": t.key,
            "dead_letter_of": t.dead_letter_of,
        }
        for t in settings.topics
    ]
    if json_output:
        print_json(
            {
                "config_file": str(settings.config_file) if settings.config_file else None,
                "context": settings.context.as_dict() if settings.context else None,
                "settings": values,
                "topics": {"source": settings.topics_source, "items": topics},
            }
        )
        return
    app = get_app(ctx)
    where = settings.config_file or "none (packaged defaults)"
    app.echo(f"config file: {where}")
    if settings.context is not None:
        from devctl.cli.guard import describe

        app.echo(f"context: {describe(settings.context)}")
    rows = [(key, cell(repr(item["value"])), item["source"]) for key, item in values.items()]
    app.show(table(None, ["key", "value", "source"], rows))
    topic_rows = [
        (
            t["name"],
            t["partitions"],
            t["replication_factor"],
            t["dead_letter_of"] or "",
            t["config"] or "",
        )
        for t in topics
    ]
    app.show(
        table(
            f"topics (from {settings.topics_source})",
            ["name", "partitions", "replicas", "dead letters of", "config"],
            topic_rows,
        )
    )


@config_app.command("validate")
def validate(ctx: typer.Context) -> None:
    """Check the config file, .env and environment; exit 2 with file, key and line on error.

    Example: devctl --config config/devctl.yaml config validate
    """
    settings = get_app(ctx).settings()
    where = settings.config_file or "packaged defaults (no config file found)"
    get_app(ctx).console.print(
        f"[green]✔[/green] configuration is valid: {where}; {len(settings.topics)} topics",
        highlight=False,
    )


@config_app.command("reference")
def reference() -> None:
    """Print the commented reference of every key (the text of config/devctl.yaml).

    Example: devctl config reference > config/devctl.yaml
    """
    from devctl.config.reference import render_reference

    # Plain text, not the Rich console: it must not wrap or interpret markup.
    typer.echo(render_reference(), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config", rich_help_panel="Configuration")
