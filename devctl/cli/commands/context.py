"""devctl context list / use / show / add / remove."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from devctl.cli.app import get_app
from devctl.cli.options import EngineOption, JsonOption
from devctl.cli.output import cell, print_json, table
from devctl.errors import UsageError

if TYPE_CHECKING:
    from devctl.contexts import Context, Store

context_app = typer.Typer(
    help="Named targets (engine, endpoints); protect production.", no_args_is_help=True
)

NameArgument = Annotated[str, typer.Argument(help="The context's name.", show_default=False)]


def _path() -> Path:
    from devctl import contexts

    path = contexts.contexts_path(os.environ)
    if path is None:
        raise UsageError(
            "no place for the contexts file: HOME is not set",
            hint=f"set {contexts.CONTEXTS_FILE_ENV}",
        )
    return path


def _store() -> Store:
    from devctl import contexts

    return contexts.load(_path())


def _endpoints(context: Context) -> str:
    shown = [
        f"{key}={context.settings[key]}"
        for key in ("redis.url", "kafka.brokers")
        if context.settings.get(key)
    ]
    rest = len(context.settings) - len(shown)
    return ", ".join(shown + ([f"+{rest} more"] if rest else [])) or "-"


@context_app.command("list")
def list_contexts(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """List the contexts; the active one is marked with *.

    Example: devctl context list --json
    """
    from devctl import contexts

    store = _store()
    chosen, _by = contexts.select(store, get_app(ctx).context, os.environ)
    active = chosen.name if chosen else None
    if json_output:
        print_json(
            {
                "file": str(store.path),
                "current": store.current,
                "active": active,
                "contexts": [c.as_dict() for c in store.contexts.values()],
            }
        )
        return
    rows = [
        (
            "*" if c.name == active else "",
            cell(c.name),
            cell(c.engine),
            "yes" if c.protected else "",
            cell(_endpoints(c)),
        )
        for c in store.contexts.values()
    ]
    get_app(ctx).show(table(None, ["", "name", "engine", "protected", "endpoints"], rows))
    if not rows:
        get_app(ctx).info(f"no contexts yet ({store.path}); `devctl context add` makes one")


@context_app.command("use")
def use(ctx: typer.Context, name: NameArgument) -> None:
    """Make a context the current one (DEVCTL_CONTEXT and --context still win).

    Example: devctl context add staging --engine local && devctl context use staging && devctl context remove staging
    """
    from devctl import contexts

    with contexts.editing(_path()) as store:
        chosen = contexts.use(store, name)
    note = " (protected)" if chosen.protected else ""
    get_app(ctx).info(f"current context: {chosen.name}{note}")


@context_app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(help="The context (default: the active one).", show_default=False),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Show a context: engine, protection and settings (the active one by default).

    Example: devctl context add staging --engine local && devctl context show staging --json && devctl context remove staging
    """
    from devctl import contexts
    from devctl.config.loader import redact_url

    store = _store()
    chosen: Context | None
    if name:
        chosen, by = store.get(name), "argument"
    else:
        chosen, by = contexts.select(store, get_app(ctx).context, os.environ)
    if chosen is None:
        raise UsageError(
            "no active context", hint="`devctl context use NAME`, or name one: context show NAME"
        )
    data = chosen.as_dict()
    data["settings"] = {
        k: redact_url(v) if isinstance(v, str) else v for k, v in data["settings"].items()
    }
    if json_output:
        print_json({**data, "chosen_by": by, "file": str(store.path)})
        return
    rows: list[tuple[Any, ...]] = [
        ("name", cell(chosen.name)),
        ("engine", cell(chosen.engine)),
        ("protected", "yes" if chosen.protected else "no"),
        *((cell(k), cell(repr(v))) for k, v in data["settings"].items()),
    ]
    get_app(ctx).show(table(f"context {chosen.name}", ["key", "value"], rows))


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    from devctl.config.loader import parse_setting

    out: dict[str, Any] = {}
    for pair in pairs:
        key, equals, text = pair.partition("=")
        if not equals or not key.strip():
            raise UsageError(
                f"--set: expected KEY=VALUE, got {pair!r}",
                hint="e.g. --set kafka.security_protocol=SASL_SSL",
            )
        out[key.strip()] = parse_setting(key.strip(), text, source=f"--set {key.strip()}")
    return out


@context_app.command("add")
def add(
    ctx: typer.Context,
    name: NameArgument,
    engine: EngineOption = None,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", help="redis.url (no password: REDIS_PASSWORD holds it)."),
    ] = None,
    kafka_brokers: Annotated[
        str | None, typer.Option("--kafka-brokers", help="kafka.brokers, host:port,host:port.")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Any other config key (no secrets), e.g. kafka.security_protocol=SASL_SSL.",
        ),
    ] = None,
    protected: Annotated[
        bool,
        typer.Option(
            "--protected", help="Destructive commands need the context's name to run on it."
        ),
    ] = False,
    use_it: Annotated[bool, typer.Option("--use", help="Make it the current context.")] = False,
) -> None:
    """Add a context: an engine, its endpoints and settings; --protected for production.

    Example: devctl context add example-prod --engine external --redis-url rediss://redis.prod:6380/0 --kafka-brokers kafka-1:9093 --set kafka.security_protocol=SSL --protected && devctl context remove example-prod
    """
    from devctl import contexts

    if engine is None:
        raise UsageError("a context names its engine", hint="e.g. --engine external")
    settings = _parse_sets(sets or [])
    settings.update({"redis.url": redis_url} if redis_url else {})
    settings.update({"kafka.brokers": kafka_brokers} if kafka_brokers else {})
    with contexts.editing(_path()) as store:
        contexts.add(store, contexts.Context(name, engine, protected, settings))
        if use_it:
            contexts.use(store, name)
    get_app(ctx).info(
        f"added context {name} (engine {engine}{', protected' if protected else ''})"
        + (": now current" if use_it else f"; `devctl context use {name}` makes it current")
    )


@context_app.command("remove")
def remove(ctx: typer.Context, name: NameArgument) -> None:
    """Forget a context (its servers are not touched); the current one stops being current.

    Example: devctl context add scratch --engine local && devctl context remove scratch
    """
    from devctl import contexts

    with contexts.editing(_path()) as store:
        contexts.remove(store, name)
    get_app(ctx).info(f"removed context {name}")


def register(app: typer.Typer) -> None:
    app.add_typer(context_app, name="context", rich_help_panel="Configuration")
