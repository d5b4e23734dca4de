"""devctl tail TOPIC...: follow events, filtered, decoded, optionally enriched with live state."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import stat
import sys
from collections.abc import Callable
from enum import StrEnum
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from devctl.cli.app import get_app
from devctl.cli.flags import flag_of, names_flags
from devctl.cli.options import DataDirOption, data_dir_flag
from devctl.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from devctl.events.tail import StartPosition, Tail, TailRecord


class Output(StrEnum):
    pretty = "pretty"
    json = "json"
    raw = "raw"


@names_flags
def tail(
    ctx: typer.Context,
    topics: Annotated[list[str], typer.Argument(help="Topics to read.", show_default=False)],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    last: Annotated[
        int | None,
        typer.Option("--last", min=1, help="Start N records before the end of each partition."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Start at a time: 10m, 2h, 1d ago or an ISO-8601 time."),
    ] = None,
    offset: Annotated[
        list[str] | None,
        typer.Option(
            "--offset",
            help="Read only this partition from this offset: P:O or TOPIC:P:O (repeatable).",
        ),
    ] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", "-t", help="Only these event types; globs allowed (repeatable)."),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option("--key", "-k", help="Only records with this key (repeatable)."),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option("--header", help="Only records with header NAME=VALUE (repeatable)."),
    ] = None,
    grep: Annotated[
        str | None, typer.Option("--grep", "-g", help="Only values matching this regex.")
    ] = None,
    enrich: Annotated[
        bool,
        typer.Option(
            "--enrich", help="Add the subject's live state from Redis (online, sessions)."
        ),
    ] = False,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Exit after N events.")
    ] = None,
    output: Annotated[
        Output, typer.Option("--output", "-o", help="pretty, json (NDJSON) or raw values.")
    ] = Output.pretty,
    full: Annotated[
        bool, typer.Option("--full", help="pretty: print the whole data as indented JSON.")
    ] = False,
    group: Annotated[
        str | None,
        typer.Option("--group", help="Read as this consumer group and commit (default: none)."),
    ] = None,
    no_follow: Annotated[
        bool,
        typer.Option("--no-follow", help="Stop at the end offsets taken when tail started."),
    ] = False,
    include_checks: Annotated[
        bool,
        typer.Option("--include-checks", help="Also show the probe records of `devctl test`."),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Follow events on topics: decoded, filtered, with partition:offset; Ctrl-C prints a summary.

    Reads with assigned partitions and commits nothing unless --group is given.
    Reads structured and binary CloudEvents and the legacy records of today's backend.

    Example: devctl tail user-events message-events --type 'devconnect.user.*' --last 5
    """
    from devctl.events.positions import parse_partition_offset
    from devctl.events.tail import Filters, Start, Tail, parse_header_filter, resolve_types

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    chosen = [
        name
        for name, given in (
            ("--from-beginning", from_beginning),
            ("--last", last is not None),
            ("--since", since is not None),
            ("--offset", bool(offset)),
        )
        if given
    ]
    if len(chosen) > 1:
        raise UsageError(f"choose one start position, not {' and '.join(chosen)}")
    if full and output is not Output.pretty:
        raise UsageError("--full applies to --output pretty")
    if from_beginning:
        start = Start("beginning")
    elif last is not None:
        start = Start("last", last=last)
    elif since is not None:
        from devctl.streams.positions import parse_time

        start = Start("since", since_ms=parse_time(since, field="start_since"))
    elif offset:
        start = Start("offsets", offsets=tuple(parse_partition_offset(o) for o in offset))
    else:
        start = Start("end")
    try:
        pattern = re.compile(grep) if grep is not None else None
    except re.error as exc:
        raise UsageError(f"--grep: invalid regular expression: {exc}") from None
    types, notes = resolve_types(event_type or ())
    for note in notes:
        app.err.print(f"tail: --type {note}", highlight=False, soft_wrap=True, markup=False)
    filters = Filters(
        types=types,
        keys=tuple(key or ()),
        headers=tuple(parse_header_filter(h) for h in header or ()),
        grep=pattern,
    )

    def ready(starts: list[StartPosition]) -> None:
        until = "up to the current end" if no_follow else "Ctrl-C to stop"
        if group is not None:
            if not starts:
                text = f"tail: reading {', '.join(topics)} as group {group} (joining); {until}"
            else:
                text = f"tail: group {group} starts {_group_starts(starts)}"
            app.err.print(text, style="dim", highlight=False, soft_wrap=True, markup=False)
            return
        where = {
            "end": "from the end",
            "beginning": "from the beginning",
            "last": f"from the last {last} of each partition",
            "since": f"since {since}",
            "offsets": "from the given offsets",
        }[start.mode]
        count_text = f"{len(starts)} partition{'s' if len(starts) != 1 else ''}"
        app.err.print(
            f"[dim]tail: reading {', '.join(topics)} ({count_text}) {where}; {until}[/dim]",
            highlight=False,
            soft_wrap=True,
        )

    def notice(text: str) -> None:
        app.err.print(
            f"tail: warning: {printable(text)}",
            style="yellow",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )

    reader = Tail(
        app.endpoints(),
        settings,
        topics,
        start=start,
        filters=filters,
        follow=not no_follow,
        count=count,
        group=group,
        include_checks=include_checks,
        on_ready=ready,
        on_notice=notice,
    )
    enricher = _enricher(app) if enrich else None
    render = _renderer(output, app.console, full)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    out = sys.stdout
    try:
        watch_pipe = _is_pipe(out)
        if enricher is not None:
            for batch in reader.batches():
                extra = enricher(batch) if batch else None
                for record in batch:
                    _render_safely(render, record, extra, out)
                _written(reader, batch, out, watch_pipe)
        else:
            # Record by record: each is written before the next one is decoded.
            pending: list[TailRecord] = []
            for item in reader.records():
                if item is None:
                    _written(reader, pending, out, watch_pipe)
                    pending = []
                    continue
                _render_safely(render, item, None, out)
                pending.append(item)
            _written(reader, pending, out, watch_pipe)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly, and point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
        reader.close()
    summary = reader.stats.summary()
    if reader.stats.checks:
        summary += f" ({flag_of('include_checks')} shows them)"
    app.err.print(f"tail: {summary}", highlight=False, soft_wrap=True)


def _written(reader: Tail, records: list[TailRecord], out: TextIO, watch_pipe: bool) -> None:
    out.flush()
    reader.written(records)  # --group: only what reached our output counts as read
    if not records and watch_pipe and _reader_gone(out):
        raise BrokenPipeError


def _render_safely(
    render: Renderer, record: TailRecord, extra: dict[str, dict[str, Any]] | None, out: TextIO
) -> None:
    """Render a record; one whose event cannot be rendered (nested too deep for the
    encoder, ...) is shown as its raw value with a warning instead of ending tail."""
    try:
        render(record, extra, out)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:
        record.event = None
        record.mode = None
        record.problem = f"cannot be shown as an event ({type(exc).__name__})"
        render(record, extra, out)


def _group_starts(starts: list[StartPosition]) -> str:
    if not starts:
        return "no partitions assigned"
    parts = []
    for position in starts:
        where = {
            "committed": f"at its committed offset {position.offset}",
            "end": f"from the end ({position.offset})",
            "beginning": f"from the beginning ({position.offset})",
        }.get(position.origin, f"at {position.offset}")
        parts.append(f"{position.topic}[{position.partition}] {where}")
    return ", ".join(parts)


def _is_pipe(out: TextIO) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError):
        return False


def _reader_gone(out: TextIO) -> bool:
    """True once nobody reads our pipe: idle follow mode would otherwise never notice."""
    poller = select.poll()
    poller.register(out.fileno(), select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poller.poll(0))


Renderer = Callable[["TailRecord", "dict[str, dict[str, Any]] | None", TextIO], None]


def _renderer(output: Output, console: Console, full: bool) -> Renderer:
    if output is Output.json:
        from devctl.events.tail import to_ndjson

        def json_line(
            record: TailRecord, extra: dict[str, dict[str, Any]] | None, out: TextIO
        ) -> None:
            out.write(to_ndjson(record, _enrichment_of(record, extra)) + "\n")

        return json_line
    if output is Output.raw:
        return _raw_line
    # Rich answers a closed pipe with SystemExit(1); tail's own handling ends quietly (0).
    console.on_broken_pipe = _raise_broken_pipe  # type: ignore[method-assign]
    return lambda record, extra, _out: _pretty(console, record, extra, full)


def _raise_broken_pipe() -> None:
    raise BrokenPipeError


# What a terminal would act on or cannot encode: C0/C1 controls (ESC starts colour
# changes, title rewrites, screen clears) and lone surrogates (from JSON "\ud800").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable_data(value: Any) -> Any:
    """``value`` with every string made printable (keys too), for --full's indented JSON."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable_data(v) for v in value]
    return value


def printable(text: str) -> str:
    """Text from a record, safe to show: such characters become visible escapes (\x1b)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _raw_line(record: TailRecord, _extra: dict[str, dict[str, Any]] | None, out: TextIO) -> None:
    if record.problem is not None:
        sys.stderr.write(
            f"warning: {record.topic} {record.partition}:{record.offset} is not a valid event: "
            f"{printable(record.problem)}\n"
        )
    out.flush()
    out.buffer.write((record.value or b"") + b"\n")


def _enrichment_of(
    record: TailRecord, extra: dict[str, dict[str, Any]] | None
) -> dict[str, Any] | None:
    if extra is None:
        return None
    subject = record.event.get("subject") if record.event is not None else None
    if not isinstance(subject, str):
        return {}
    return extra.get(subject, {})


def _pretty(
    console: Console,
    record: TailRecord,
    extra: dict[str, dict[str, Any]] | None,
    full: bool,
) -> None:
    from rich.json import JSON
    from rich.text import Text

    from devctl.events.envelope import iso_millis

    line = Text.assemble(
        (iso_millis(record.timestamp_ms), "dim"),
        " ",
        (record.topic, "cyan"),
        " ",
        (f"{record.partition}:{record.offset}", "dim"),
        " ",
    )
    event = record.event
    if event is None:
        raw = repr(record.value)[:200] if record.value is not None else "(no value)"
        line.append(f"⚠ not a valid event ({printable(record.problem or '')}) ", style="yellow")
        line.append(raw)
        console.print(line, soft_wrap=True, highlight=False)
        return
    if record.problem is not None:
        line.append(f"⚠ {printable(record.problem)} ", style="yellow")
    if record.legacy is not None:
        line.append(f"legacy {printable(record.legacy)} ", style="dim yellow")
    subject = event.get("subject")
    line.append(printable(str(event.get("type"))), style="bold magenta")
    line.append(" ")
    line.append(printable(str(subject)) if subject is not None else "-", style="green")
    enrichment = _enrichment_of(record, extra)
    if enrichment is not None:
        line.append(" ")
        line.append(_state_text(enrichment), style="blue")
    if not full:
        data = printable(_dumps(event.get("data")))
        room = max(console.width - line.cell_len - 1, 40)
        if len(data) > room:
            data = data[: room - 1] + "…"
        line.append(" ")
        line.append(data)
        console.print(line, soft_wrap=True, highlight=False)
        return
    console.print(line, soft_wrap=True, highlight=False)
    console.print(JSON.from_data(_printable_data(event.get("data")), indent=2))


def _state_text(state: dict[str, Any]) -> str:
    if not state:
        return "[no live state]"
    if state.get("online"):
        text = f"[online, {state.get('connections', 0)} conn"
    else:
        seen = state.get("last_seen")
        text = "[offline" + (f", last seen {seen}" if seen else "")
    sessions = state.get("sessions")
    if sessions is not None:
        text += f", {sessions} session{'s' if sessions != 1 else ''}"
    return text + "]"


def _enricher(app: Any) -> Callable[[list[TailRecord]], dict[str, dict[str, Any]]]:
    from devctl.events.enrich import StateEnricher

    return StateEnricher.from_settings(app.settings(), app.endpoints())


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Kafka")(tail)
