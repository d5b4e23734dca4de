"""devctl seed demo: demo users, requests, connections and chats through the running API."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Annotated

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.cli.output import print_json, table
from devctl.errors import OperationFailed, UsageError

if TYPE_CHECKING:
    from devctl.cli.app import Application
    from devctl.demo.seed import Progress, SeedResult

seed_app = typer.Typer(
    help="Fill the running API with demo data (through HTTP and Socket.IO).",
    no_args_is_help=True,
)

# Progress lines at most this often per phase (and always at its end).
PROGRESS_EVERY_S = 0.5


@seed_app.command("demo")
def demo(
    ctx: typer.Context,
    users: Annotated[
        int, typer.Option("--users", min=2, max=10_000, help="Demo users to sign up.")
    ] = 50,
    messages: Annotated[
        int,
        typer.Option(
            "--messages", min=0, max=1_000_000, help="Chat messages between connected users."
        ),
    ] = 500,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="The API to fill (default: the first instance of a running `devctl serve`, "
            "else http://127.0.0.1:<api.port>).",
            show_default=False,
        ),
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option(
            "--password-env",
            metavar="NAME",
            help="Take the demo users' password from this environment variable "
            "(default: a new one per run, printed at the end).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Sign up demo users, send and review requests, chat over Socket.IO; print the logins.

    Exit 0 done, 1 the API refused something mid-run (what was made is printed),
    2 bad arguments, 3 the API is not running, 130 interrupted.

    With `devctl serve` running. Example: devctl seed demo --users 6 --messages 20
    """
    from devctl.demo.seed import DemoSeeder, SeedOptions, default_api_url
    from devctl.state.ratelimit import load_policies

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    password = None
    if password_env is not None:
        password = os.environ.get(password_env)
        if not password:
            raise UsageError(
                f"--password-env {password_env}: the environment variable is not set or empty",
                hint=f"export {password_env}=... first, or leave --password-env out for a "
                "generated password",
            )
    options = SeedOptions(
        api_url=api_url or default_api_url(settings),
        users=users,
        messages=messages,
        password=password,
        policies=load_policies(settings.state.rate_limits),
    )
    try:
        seeder = DemoSeeder(options, progress=_progress(app))
    except UsageError as exc:
        if exc.field == "api_url":
            raise UsageError(
                f"--api-url: {exc.message}", hint="e.g. --api-url http://127.0.0.1:3000"
            ) from None
        raise
    app.info(f"seeding {options.api_url}: {users} users, {messages} messages")
    try:
        result = seeder.run()
    except KeyboardInterrupt:
        app.info("[yellow]interrupted[/]: sockets closed; made so far:")
        _render(app, seeder.result, to_stderr=True)
        raise
    except OperationFailed:
        app.info("[red]stopped[/]; made so far:")
        _render(app, seeder.result, to_stderr=True)
        raise
    if json_output:
        print_json(result.to_json())
        return
    _render(app, result, to_stderr=False)


def _progress(app: Application) -> Progress:
    last: dict[str, float] = {}

    def report(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last.get(phase, 0.0) < PROGRESS_EVERY_S:
            return
        last[phase] = now
        app.info(f"[dim]{phase}: {done}/{total}[/dim]")

    return report


def _render(app: Application, result: SeedResult, *, to_stderr: bool) -> None:
    rows = [
        ("users", len(result.users)),
        ("profiles", result.profiles),
        (
            "requests",
            f"{result.requests} ({result.requests_interested} interested, "
            f"{result.requests_ignored} ignored)",
        ),
        ("connections", f"{result.accepted} accepted, {result.rejected} rejected"),
        ("messages", f"{result.messages} sent, {result.delivered} delivered"),
        ("presence events", result.presence_events),
        ("elapsed", f"{result.elapsed:.1f} s"),
        ("failures", len(result.failures)),
    ]
    summary = table(f"demo data at {result.api_url}", ["", "count"], rows)
    if to_stderr:
        app.err.print(summary)
    else:
        app.show(summary)
    for failure in result.failures[:5]:
        app.info(f"[yellow]failed[/]: {failure}")
    if len(result.failures) > 5:
        app.info(f"[yellow]... and {len(result.failures) - 5} more failures[/]")
    if not result.users:
        return
    out = app.info if to_stderr else app.echo
    shown = result.users[:50]
    out(f"logins ({len(result.users)} users; first {len(shown)}):")
    for user in shown:
        out(f"  {user.email}  ({user.name})")
    if result.password is not None:
        out(f"password of every demo user (shown once): {result.password}")
    else:
        out("password: the one in the environment variable given")


def register(app: typer.Typer) -> None:
    app.add_typer(seed_app, name="seed", rich_help_panel="Stack")
