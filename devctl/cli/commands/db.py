"""devctl db upgrade / status: the API database's migrations."""

from __future__ import annotations

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.cli.output import cell, print_json, table

db_app = typer.Typer(help="Apply and inspect the API database's migrations.", no_args_is_help=True)


def _url(ctx: typer.Context, data_dir: DataDirOption) -> str:
    from devctl.db.engine import database_url

    return database_url(get_app(ctx).settings(data_dir_flag(data_dir)))


@db_app.command("upgrade")
def upgrade(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """Apply the pending migrations (safe while other instances do the same).

    Example: DATABASE_URL=postgresql://app@db:5432/devconnect devctl db upgrade
    """
    from devctl.db.migrate import upgrade as apply

    report = apply(_url(ctx, data_dir))
    if json_output:
        print_json(
            {
                "backend": report.backend,
                "url": report.url,
                "from": report.from_revision,
                "to": report.to_revision,
                "applied": [
                    {"revision": r.id, "description": r.description} for r in report.applied
                ],
            }
        )
        return
    app = get_app(ctx)
    for revision in report.applied:
        app.echo(f"applied {revision.id}: {revision.description}")
    state = "now at" if report.applied else "already at"
    app.echo(f"{report.backend} database {report.url}: {state} revision {report.to_revision}")


@db_app.command("status")
def status(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """Show the database's revision, the newest one and the pending migrations.

    Example: devctl db status --json
    """
    from devctl.db.migrate import status as inspect

    found = inspect(_url(ctx, data_dir))
    if json_output:
        print_json(found.to_dict())
        return
    if found.unknown_revision:
        state = "unknown revision (migrated by a newer devctl)"
    elif found.up_to_date:
        state = "up to date"
    elif not found.exists:
        state = "not created yet (devctl db upgrade creates it)"
    else:
        state = f"{len(found.pending)} pending"
    rows = [
        ("backend", found.backend),
        ("url", cell(found.url)),
        ("current", found.current or "none"),
        ("head", found.head),
        ("state", state),
    ]
    app = get_app(ctx)
    app.show(table("database", ["property", "value"], rows))
    if found.pending:
        app.show(
            table(
                "pending migrations",
                ["revision", "description"],
                [(r.id, cell(r.description)) for r in found.pending],
            )
        )


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db", rich_help_panel="Database")
