"""devctl ratelimit policies / show / reset."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, YesOption
from devctl.cli.output import cell, confirm, duration, print_json, table
from devctl.cli.state_access import open_state, require_id
from devctl.errors import UsageError

ratelimit_app = typer.Typer(help="Inspect and reset rate limits.", no_args_is_help=True)

PolicyArgument = Annotated[
    str, typer.Argument(help="Policy name (see `devctl ratelimit policies`).")
]
KeyArgument = Annotated[str, typer.Argument(help="The subject: an IP, an email or a user id.")]
TierOption = Annotated[
    str | None,
    typer.Option("--tier", help="Membership tier, for tiered policies (free, silver, gold)."),
]


@ratelimit_app.command("policies")
def policies(
    ctx: typer.Context, data_dir: DataDirOption = None, json_output: JsonOption = False
) -> None:
    """List the rate-limit policies in effect (defaults overridden by state.rate_limits).

    Example: devctl ratelimit policies
    """
    from devctl.cli.options import data_dir_flag
    from devctl.state.ratelimit import load_policies

    settings = get_app(ctx).settings(data_dir_flag(data_dir))
    found = load_policies(settings.state.rate_limits)
    if json_output:
        print_json(
            [
                {
                    "name": p.name,
                    "limit": p.limit,
                    "period": p.period,
                    "subject": p.subject,
                    "tiers": dict(p.tiers) or None,
                    "default_tier": p.default_tier,
                }
                for p in found.values()
            ]
        )
        return
    rows = [(cell(p.name), cell(p.subject), cell(p.describe())) for p in found.values()]
    get_app(ctx).show(table("rate-limit policies (GCRA)", ["policy", "keyed by", "limit"], rows))


@ratelimit_app.command("show")
def show(
    ctx: typer.Context,
    policy: PolicyArgument,
    key: KeyArgument,
    tier: TierOption = None,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a bucket without consuming: limit, used, remaining, retry after, full again in.

    Example: devctl ratelimit show login_email alice@example.com
    """
    require_id(key, "KEY")
    with open_state(ctx, data_dir) as state:
        chosen = state.ratelimits.policy(policy)
        if tier is not None and not chosen.tiers:
            raise UsageError(
                f"policy '{chosen.name}' has no tiers; --tier does not apply",
                hint="tiered policies: "
                + ", ".join(p.name for p in state.ratelimits.policies.values() if p.tiers),
            )
        result = state.ratelimits.peek(chosen, key, tier=tier)
    if json_output:
        print_json(result.to_json())
        return
    unlimited = result.limit is None
    rows = [
        ("policy", cell(result.policy)),
        ("subject", cell(result.subject)),
        ("limit", "unlimited" if unlimited else result.limit),
        ("used", "-" if unlimited else result.used),
        ("remaining", "unlimited" if unlimited else result.remaining),
        (
            "next request",
            "[green]allowed[/]"
            if result.allowed
            else f"[red]limited[/] for {result.retry_after:.1f}s",
        ),
        ("full again in", duration(result.reset_after) if result.reset_after else "now"),
    ]
    get_app(ctx).show(table(None, ["field", "value"], rows))


@ratelimit_app.command("reset")
def reset(
    ctx: typer.Context,
    policy: PolicyArgument,
    key: KeyArgument,
    yes: YesOption = False,
    data_dir: DataDirOption = None,
) -> None:
    """Reset a bucket so the subject gets its full allowance back (asks first).

    Example: devctl ratelimit reset login_ip 203.0.113.7 --yes
    """
    app = get_app(ctx)
    require_id(key, "KEY")
    with open_state(ctx, data_dir) as state:
        state.ratelimits.policy(policy)  # an unknown policy fails before asking
        confirm(app.err, f"Reset rate limit '{policy}' for '{key}'?", yes)
        existed = state.ratelimits.reset(policy, key)
    note = "reset" if existed else "was already empty"
    app.console.print(f"[green]✔[/green] {escape(policy)} {escape(key)}: {note}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(ratelimit_app, name="ratelimit", rich_help_panel="Redis")
