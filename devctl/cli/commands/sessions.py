"""devctl sessions seed / list / show / revoke / count."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.commands.presence import SEED_MAX_USERS, check_size, counted, progress_on_stderr
from devctl.cli.options import DataDirOption, JsonOption, YesOption, data_dir_flag
from devctl.cli.output import ago, cell, confirm, duration, print_json, table
from devctl.cli.state_access import open_state, require_id, require_ttl
from devctl.errors import NotFound, UsageError

sessions_app = typer.Typer(help="Seed, inspect and revoke sessions.", no_args_is_help=True)

TokenArgument = Annotated[str, typer.Argument(help="A session token, or - to read it from stdin.")]


def _token(value: str) -> str:
    """The token given (or read from stdin); a malformed one is a usage error."""
    from devctl.state.sessions import parse_token

    # Reading from stdin keeps the secret out of the shell history.
    token = sys.stdin.readline().strip() if value == "-" else value.strip()
    if not token:
        raise UsageError("no token given")
    if parse_token(token) is None:
        raise UsageError(
            "this is not a session token", hint="a token looks like dc1.<43 characters>.<user>"
        )
    return token


def _row(info: Any) -> tuple[Any, ...]:
    return (
        cell(info.user_id),
        ago(info.created_at),
        duration(info.expires_in),
        cell(info.ip),
        cell(info.user_agent),
        f"{cell(info.token_prefix)}…",
        cell(info.session_id[:12]),
    )


COLUMNS = ["user", "created", "expires in", "IP", "user agent", "token prefix", "session id"]


@sessions_app.command("seed")
def seed(
    ctx: typer.Context,
    users: Annotated[
        int,
        typer.Option(
            "--users",
            "-n",
            min=1,
            help=f"How many users, one session each (over {SEED_MAX_USERS:,}: asks).",
        ),
    ] = 10,
    ttl: Annotated[
        float | None,
        typer.Option(
            "--ttl", help="Session lifetime in seconds, at least 1 (default state.session_ttl)."
        ),
    ] = None,
    show_tokens: Annotated[
        bool,
        typer.Option(
            "--show-tokens",
            help="Print the tokens, one per line (secrets: they log in as the user).",
        ),
    ] = False,
    id_prefix: Annotated[
        str, typer.Option("--id-prefix", help="User ids are <prefix><n>.")
    ] = "seed-user-",
    yes: YesOption = False,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Cache N seeded users and create a session for each; tokens are shown only with --show-tokens.

    Example: devctl sessions seed --users 50 --ttl 3600
    """
    from devctl.state.admin import seed_sessions

    require_ttl(ttl)
    app = get_app(ctx)
    check_size(app, users, "user", SEED_MAX_USERS, yes)
    with (
        open_state(ctx, data_dir) as state,
        progress_on_stderr(app, "seeding sessions") as progress,
    ):
        seeded = seed_sessions(state, users, ttl=ttl, id_prefix=id_prefix, progress=progress)
    if json_output:
        print_json(
            {
                "users": len(seeded.users),
                "sessions": [
                    {**s.info.to_json(), **({"token": s.token} if show_tokens else {})}
                    for s in seeded.sessions
                ],
            }
        )
        return
    lifetime = seeded.sessions[0].info.ttl
    ids = escape(seeded.users[0])
    if len(seeded.users) > 1:
        ids += f"..{escape(seeded.users[-1])}"
    # The summary goes to stderr: with --show-tokens, stdout holds the token lines only.
    app.info(
        f"[green]✔[/green] seeded {counted(len(seeded.users), 'user')} with one session"
        f"{' each' if len(seeded.users) > 1 else ''} "
        f"(expiring in {duration(lifetime)}); {'ids' if len(seeded.users) > 1 else 'id'} {ids}"
    )
    if show_tokens:
        # Plain lines, never wrapped or folded by Rich: a token must copy-paste whole.
        app.info("user<TAB>token:")
        sys.stdout.write("".join(f"{s.info.user_id}\t{s.token}\n" for s in seeded.sessions))
        sys.stdout.flush()
    else:
        app.info("tokens not shown (they are secrets); pass --show-tokens to print them")


@sessions_app.command("list")
def list_sessions(
    ctx: typer.Context,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Only this user's sessions.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-l", min=1, help="At most this many.")] = 50,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """List live sessions (token prefix only, never the token); without --user, the first N found.

    Example: devctl sessions list --user 42 --json
    """
    if user is not None:
        require_id(user, "--user")
    with open_state(ctx, data_dir) as state:
        found = (
            state.sessions.list_for_user(user)[:limit]
            if user is not None
            else state.sessions.list_all(limit)
        )
    if json_output:
        print_json([s.to_json() for s in found])
        return
    title = f"sessions of {cell(user)}" if user is not None else "sessions"
    get_app(ctx).show(table(f"{title} ({len(found)})", COLUMNS, [_row(s) for s in found]))


@sessions_app.command("show")
def show(
    ctx: typer.Context,
    token: TokenArgument,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the session and cached user of a token (does not extend it).

    Example: echo "$TOKEN" | devctl sessions show -
    """
    secret = _token(token)
    with open_state(ctx, data_dir) as state:
        found = state.sessions.inspect(secret)
    if found is None:
        raise NotFound("no valid session for this token (expired or revoked)")
    if json_output:
        print_json({"session": found.session.to_json(), "user": found.user})
        return
    info = found.session
    rows = [
        ("user", cell(info.user_id)),
        ("session id", cell(info.session_id)),
        ("token prefix", f"{cell(info.token_prefix)}…"),
        ("created", ago(info.created_at)),
        ("expires in", duration(info.expires_in)),
        ("lifetime", duration(info.ttl)),
        ("IP", cell(info.ip)),
        ("user agent", cell(info.user_agent)),
        ("cached user", "yes" if found.user else "no (cache miss)"),
    ]
    if found.user:
        name = f"{found.user.get('firstName', '')} {found.user.get('lastName', '')}".strip()
        rows.append(("name", cell(name or None)))
    get_app(ctx).show(table("session", ["field", "value"], rows))


@sessions_app.command("revoke")
def revoke(
    ctx: typer.Context,
    token: Annotated[
        str | None, typer.Argument(help="The token to revoke, or - for stdin.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", "-u", help="Revoke every session of this user.")
    ] = None,
    session_id: Annotated[
        str | None,
        typer.Option("--id", help="Revoke one session by id (with --user), as shown by list."),
    ] = None,
    yes: YesOption = False,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke one session (TOKEN, or --user U --id ID) or all of a user's (--user U); asks first.

    Example: devctl sessions revoke --user 42 --yes
    """
    app = get_app(ctx)
    if token is not None and (user is not None or session_id is not None):
        raise UsageError("give a TOKEN, or --user (with --id for one session), not both")
    if token is None and user is None:
        raise UsageError("give a TOKEN or --user", hint="devctl sessions revoke --user 42 --yes")
    if user is not None:
        require_id(user, "--user")
    if session_id is not None:
        require_id(session_id, "--id")
        if user is None:
            raise UsageError("--id needs --user", hint="devctl sessions list --user 42")
    secret = _token(token) if token is not None else None
    with open_state(ctx, data_dir) as state:
        if secret is not None:
            if state.sessions.inspect(secret) is None:
                raise NotFound("no valid session for this token (expired or revoked)")
            confirm(app.err, "Revoke this session?", yes)
            state.sessions.revoke(secret)
            app.info("[green]✔[/green] revoked 1 session")
            return
        assert user is not None
        if session_id is not None:
            sid = state.sessions.resolve_id(user, session_id)
            confirm(app.err, f"Revoke session {sid[:12]} of user {user}?", yes)
            state.sessions.revoke_id(user, sid)
            app.info("[green]✔[/green] revoked 1 session")
            return
        live_count = len(state.sessions.list_for_user(user))
        if live_count == 0:
            raise NotFound(f"user {user} has no live sessions")
        confirm(app.err, f"Revoke all {counted(live_count, 'session')} of user {user}?", yes)
        revoked = state.sessions.revoke_all(user)
    app.info(f"[green]✔[/green] revoked {counted(revoked, 'session')} of {escape(user)}")


@sessions_app.command("count")
def count(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """Count live sessions and the users holding them.

    Example: devctl sessions count --json
    """
    from devctl.state import count_sessions

    app = get_app(ctx)
    sessions, users = count_sessions(app.settings(data_dir_flag(data_dir)), app.endpoints())
    if json_output:
        print_json({"sessions": sessions, "users": users})
        return
    app.console.print(
        f"{counted(sessions, 'live session')}, {counted(users, 'user')}", highlight=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(sessions_app, name="sessions", rich_help_panel="Redis")
