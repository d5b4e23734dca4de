"""devctl top: a live dashboard of the whole running system (docs/top.md)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.errors import UsageError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from devctl.observe.model import Snapshot
    from devctl.observe.snapshot import Observer


def top(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option("--interval", "-i", min=0.2, max=60, help="Seconds between refreshes."),
    ] = 1.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one snapshot and exit (also when piped).")
    ] = False,
    as_json: JsonOption = False,
    api_url: Annotated[
        list[str] | None,
        typer.Option(
            "--api-url",
            help="Also scrape this API instance (e.g. http://127.0.0.1:3000; repeatable).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Live dashboard: topic rates and lag, presence, API latency, outbox, Redis, last events.

    Refreshes every --interval seconds; q or Ctrl-C leaves. A source that is down is
    shown as such while the others keep refreshing. Piped, or with --once or --json,
    it prints one snapshot (rates over one interval) and exits.

    Example: devctl top --api-url http://127.0.0.1:3000
    """
    from devctl.cli.output import plain_stdout
    from devctl.observe.snapshot import Observer

    app = get_app(ctx)
    urls = [_checked_url(url) for url in api_url or ()]
    settings = app.settings(data_dir_flag(data_dir))
    engine = app.engine()
    # The gather's deadline: most of an interval, so a refresh keeps its pace.
    deadline = min(max(interval * 0.8, 0.5), 5.0)
    live = not (once or as_json or plain_stdout())
    observer = Observer(
        settings, lambda: engine.endpoints(()), api_urls=urls, deadline=deadline, events=10
    )
    with observer, _stop_on_sigterm():
        if not live:
            _one_shot(app, observer, interval, as_json)
            return
        _live(app.console, observer, interval)


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise UsageError(
            f"--api-url wants an http(s) URL of an API instance, got '{url}'",
            hint="e.g. --api-url http://127.0.0.1:3000",
        )
    return url


def _one_shot(app: Any, observer: Observer, interval: float, as_json: bool) -> None:
    """Two readings an interval apart: the second, with the rates between them."""
    from devctl.cli.output import print_json

    observer.snapshot()
    time.sleep(interval)
    snapshot = observer.snapshot()
    if as_json:
        print_json(snapshot.to_json())
        return
    for section in sections(snapshot):
        _show_plain(app, section)


class _Stop(Exception):
    """SIGTERM: leave as `q` does (the terminal restored, exit 0)."""


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the live dashboard --------------------------------------------------------------


def _live(console: Any, observer: Observer, interval: float) -> None:
    from rich.live import Live

    with _keys() as pressed, Live(console=console, screen=True, auto_refresh=False) as live:
        while True:
            started = time.monotonic()
            snapshot = observer.snapshot()
            frame = _layout(
                snapshot, interval, keys=pressed is not None, height=console.size.height
            )
            live.update(frame, refresh=True)
            if pressed is not None and pressed(max(interval - (time.monotonic() - started), 0)):
                return
            if pressed is None:
                time.sleep(max(interval - (time.monotonic() - started), 0))


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """A function waiting up to N seconds for `q` (True), when stdin is a terminal.

    The terminal is put in cbreak mode (keys arrive one by one, unechoed; Ctrl-C still
    sends SIGINT) and restored on every way out, exceptions and Ctrl-C included.
    Without a terminal on stdin there are no keys to read: None, and Ctrl-C leaves.
    """
    try:
        fd = sys.stdin.fileno()
        interactive = os.isatty(fd)
    except (AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)

    def wait_for_q(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return False
            data = os.read(fd, 64)
            if not data:  # the terminal went away: nothing will ever be typed
                time.sleep(remaining)
                return False
            if b"q" in data or b"Q" in data:
                return True

    try:
        tty.setcbreak(fd)
        yield wait_for_q
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _layout(snapshot: Snapshot, interval: float, *, keys: bool, height: int = 48) -> RenderableType:
    from rich.layout import Layout
    from rich.text import Text

    parts = {s.key: _panel(s) for s in sections(snapshot)}
    when = time.strftime("%H:%M:%S", time.localtime(snapshot.taken_at))
    leave = "q or Ctrl-C to leave" if keys else "Ctrl-C to leave"
    header = Text.assemble(
        ("devctl top", "bold"), f"  {when}  every {interval:g}s  ", (leave, "dim")
    )
    root = Layout()
    root.split_column(
        Layout(header, size=1),
        Layout(name="body", ratio=1),
        # The events take a third of a small terminal, 10 lines and the frame at most.
        Layout(parts["events"], size=max(5, min(14, height // 3))),
    )
    root["body"].split_row(Layout(name="left", ratio=3), Layout(name="right", ratio=2))
    root["left"].split_column(Layout(parts["kafka"], ratio=3), Layout(parts["api"], ratio=2))
    root["right"].split_column(
        Layout(parts["groups"], ratio=2),
        Layout(parts["presence"], ratio=2),
        Layout(parts["redis"], size=6),
        Layout(parts["outbox"], size=6),
    )
    return root


def _panel(section: Section) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    title = section.title
    if section.error is not None:
        body: RenderableType = Text(f"down: {section.error}", style="bold red")
        return Panel(
            body, title=f"{title} [red](down)[/red]", border_style="red", title_align="left"
        )
    table = Table(box=None, header_style="bold", expand=True, pad_edge=False)
    for n, column in enumerate(section.columns):
        table.add_column(column, justify="left" if n < section.left else "right", no_wrap=True)
    for row in section.rows:
        table.add_row(*[Text(v) for v in row])
    items: list[RenderableType] = []
    if section.note:
        items.append(Text(section.note, style="dim"))
    items.append(table)
    return Panel(Group(*items), title=title, title_align="left", border_style="blue")


# --- the sections every rendering shares ------------------------------------------------


@dataclass
class Section:
    key: str
    title: str
    error: str | None
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str | None = None
    left: int = 1  # how many columns, from the first, are text (the others: numbers)


def sections(snapshot: Snapshot) -> list[Section]:
    """The panels of a snapshot as rows of text (data made printable), in display order."""
    return [
        _kafka(snapshot),
        _groups(snapshot),
        _api(snapshot),
        _presence(snapshot),
        _redis(snapshot),
        _outbox(snapshot),
        _events(snapshot),
    ]


def _kafka(snapshot: Snapshot) -> Section:
    panel = snapshot.kafka
    rows = [
        [
            _text(t.topic),
            str(t.partitions),
            _rate(t.events_per_s) + ("" if t.exact else " ≈"),
            f"{t.end_offset:,}",
            f"{t.messages:,}",
        ]
        for t in panel.topics
    ]
    note = None
    if any(not t.exact for t in panel.topics):
        note = "≈: an end offset was not confirmed in time (the broker's watermark was used)"
    return Section(
        "kafka",
        "Topics",
        panel.error,
        ["topic", "parts", "events/s", "end", "retained"],
        rows,
        note,
    )


def _groups(snapshot: Snapshot) -> Section:
    panel = snapshot.groups
    rows = []
    for group in panel.groups:
        members = "?" if group.members is None else str(group.members)
        rows.append([_text(group.group), group.state.lower(), members, "", f"{group.lag:,}"])
        for topic in group.topics:
            uncommitted = f" ({topic.uncommitted} uncommitted)" if topic.uncommitted else ""
            rows.append(["  " + _text(topic.topic), "", "", uncommitted.strip(), f"{topic.lag:,}"])
    note = None if panel.groups or panel.error else "no consumer groups"
    return Section(
        "groups",
        "Consumer groups",
        panel.error,
        ["group", "state", "members", "note", "lag"],
        rows,
        note,
    )


def _api(snapshot: Snapshot) -> Section:
    panel = snapshot.api
    instances = "  ".join(
        f"{_text(i.name)} {'down: ' + _text(i.error) if i.error else _rate(i.requests_per_s) + ' req/s'}"
        for i in panel.instances
    )
    rows = [
        [
            f"{r.method} {_text(r.route)}",
            _rate(r.requests_per_s),
            _rate(r.errors_per_s),
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            f"{r.requests:,}",
        ]
        for r in panel.routes
    ]
    error = panel.error if not panel.instances else None
    section = Section(
        "api", "API", error, ["route", "req/s", "5xx/s", "p50", "p99", "total"], rows, instances
    )
    if panel.instances and panel.error is not None:
        section.note = f"{instances}  ({panel.error})"
    return section


def _presence(snapshot: Snapshot) -> Section:
    panel = snapshot.presence
    rows = [
        [
            _text(i.instance),
            "alive" if i.alive else "dead (not swept yet)",
            f"{i.connections:,}",
            f"{i.users:,}",
        ]
        for i in panel.instances
    ]
    note = None
    if panel.error is None:
        note = f"{panel.online_users or 0:,} online, {panel.connections or 0:,} connections"
    return Section(
        "presence", "Presence", panel.error, ["instance", "lease", "conns", "users"], rows, note
    )


def _redis(snapshot: Snapshot) -> Section:
    panel = snapshot.redis
    limit = "no limit" if not panel.maxmemory else f"of {_bytes(panel.maxmemory)}"
    rows = [
        ["memory", f"{panel.used_memory_human or '-'} ({limit})"],
        ["ops/s", _rate(panel.ops_per_s)],
        ["clients, keys", f"{_count(panel.connected_clients)}, {_count(panel.keys)}"],
    ]
    title = f"Redis {panel.version}" if panel.version else "Redis"
    return Section("redis", title, panel.error, ["metric", "value"], rows)


def _outbox(snapshot: Snapshot) -> Section:
    from devctl.cli.output import duration

    panel = snapshot.outbox
    rows = [
        ["unsent", "-" if panel.backlog is None else f"{panel.backlog:,}"],
        ["oldest", "-" if panel.oldest_age_s is None else duration(panel.oldest_age_s)],
    ]
    return Section(
        "outbox", "Outbox", panel.error, ["metric", "value"], rows, _text(panel.database or "")
    )


def _events(snapshot: Snapshot) -> Section:
    panel = snapshot.events
    rows = [
        [
            str(line["time"])[11:23],
            f"{_text(str(line['topic']))} {line['partition']}:{line['offset']}",
            _text(str(line["type"])),
            _text(str(line["subject"] or "-")),
        ]
        for line in reversed(panel.lines)  # the newest first
    ]
    note = f"{panel.seen:,} since start" if panel.error is None else None
    return Section(
        "events",
        "Last events",
        panel.error,
        ["time", "topic p:offset", "type", "subject"],
        rows,
        note,
        left=4,
    )


def _show_plain(app: Any, section: Section) -> None:
    from devctl.cli.output import cell, table

    status = "down: " + section.error if section.error is not None else "ok"
    heading = f"{section.title}: {status}"
    if section.note and section.error is None:
        heading += f" ({section.note})"
    app.echo(heading)
    if section.error is None and section.rows:
        app.show(table(None, section.columns, [[cell(v) for v in row] for row in section.rows]))
    app.echo("")


def _text(value: str) -> str:
    from devctl.cli.commands.tail import printable

    return printable(value)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Stack")(top)
