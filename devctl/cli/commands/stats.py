"""devctl stats: DevConnect's analytics (events per type, active users, signups, top users)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption
from devctl.cli.output import cell, print_json, table
from devctl.cli.state_access import open_state

if TYPE_CHECKING:
    from devctl.cli.app import Application
    from devctl.state.analytics import Summary

# Eight levels, lowest to highest; a bucket with no events is a blank, so "none" and
# "a few" never look alike.
BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 60  # characters of a sparkline; longer series are summed into groups
DAYS = 7  # DAU and signups: the last 7 UTC days, today last
TYPE_PREFIX = "devconnect."


def sparkline(values: Sequence[int], width: int = SPARK_WIDTH) -> str:
    """Values as block characters scaled to their maximum; at most ``width`` characters
    (consecutive values summed into groups of ``group_size(len(values), width)``)."""
    size = group_size(len(values), width)
    groups = [sum(values[i : i + size]) for i in range(0, len(values), size)]
    top = max(groups, default=0)
    if top <= 0:
        return " " * len(groups)
    last = len(BLOCKS) - 1
    return "".join(" " if v <= 0 else BLOCKS[max(0, -(-v * last // top))] for v in groups)


def group_size(count: int, width: int = SPARK_WIDTH) -> int:
    return max(1, -(-count // width))


def _per(seconds: int) -> str:
    if seconds % 86400 == 0:
        return "day" if seconds == 86400 else f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return "hour" if seconds == 3600 else f"{seconds // 3600} h"
    return "minute" if seconds == 60 else f"{seconds // 60} min"


def _clock(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def stats(
    ctx: typer.Context,
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="Window: 15m, 1h, 6h, 24h, 7d (1m to 31d; beyond 48h in hourly buckets).",
        ),
    ] = "1h",
    top: Annotated[
        int, typer.Option("--top", min=0, max=1000, help="How many top users to show (0: none).")
    ] = 10,
    data_dir: DataDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show the analytics: events per minute per type with sparklines, DAU/MAU, signups, top users.

    Example: devctl stats --since 6h
    """
    from devctl.state.analytics import Analytics, parse_window

    window = parse_window(since, field="start_since")
    with open_state(ctx, data_dir) as state:
        summary = Analytics(state.client, state.keys).summary(window, days=DAYS, top=top)
    if json_output:
        print_json(summary.to_json())
        return
    _render(get_app(ctx), summary, since.strip())


def _render(app: Application, summary: Summary, since: str) -> None:
    from devctl.state.analytics import USER_FIELDS

    series = summary.series
    size = group_size(len(series.starts))
    per = _per(series.step * size)
    start = series.starts[0] if series.starts else summary.now
    title = (
        f"events, last {since} (UTC {_clock(start)} .. {_clock(summary.now)}), one mark per {per}"
    )
    rows = []
    for event_type, counts in sorted(series.counts.items(), key=lambda kv: -sum(kv[1])):
        peak = max(counts, default=0)
        rows.append(
            (
                cell(event_type.removeprefix(TYPE_PREFIX)),
                f"{sum(counts):,}",
                f"{peak:,}",
                cell(sparkline(counts)),
            )
        )
    everything = series.per_bucket
    rows.append(
        (
            "[bold]all[/bold]",
            f"[bold]{sum(everything):,}[/bold]",
            f"{max(everything, default=0):,}",
            cell(sparkline(everything)),
        )
    )
    app.show(table(title, ["type", "total", f"peak per {_per(series.step)}", "activity"], rows))

    today = summary.daily_active[-1].day if summary.daily_active else ""
    signups = {d.day: d.count for d in summary.signups}
    app.show(
        table(
            f"active users (MAU {summary.month}: {summary.monthly_active:,})",
            ["day (UTC)", "DAU", "signups"],
            [
                (
                    f"{d.day} (today)" if d.day == today else d.day,
                    f"{d.count:,}",
                    f"{signups.get(d.day, 0):,}",
                )
                for d in summary.daily_active
            ],
        )
    )
    if summary.top_users:
        shown = [f for f in USER_FIELDS if any(u.counters.get(f) for u in summary.top_users)]
        app.show(
            table(
                f"top users by messages (of {summary.users_scanned:,})",
                ["user", *[f.replace("_", " ") for f in shown]],
                [
                    (cell(u.user_id), *[f"{u.counters.get(f, 0):,}" for f in shown])
                    for u in summary.top_users
                ],
            )
        )
    if not series.counts:
        app.info(
            f"no events counted in the last {since}: is the analytics consumer running "
            "(devctl serve)?"
        )


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Stack")(stats)
