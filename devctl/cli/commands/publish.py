"""devctl publish TOPIC: validated DevConnect events (or raw records) from flags, a file or stdin."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.cli.output import print_json, table
from devctl.errors import EXIT_FAILED, UsageError

SHOW_EACH = 10  # up to this many events, each delivery gets its own line


def publish(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to publish to.", show_default=False)],
    source: Annotated[
        str | None,
        typer.Argument(help="'-': read from standard input (as --file -).", show_default=False),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", "-t", help="Event type (see `devctl events types`).")
    ] = None,
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="The event's data as JSON.")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="JSON lines, one event per line ('-' for stdin)."),
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Record key (default: the type's key).")
    ] = None,
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", min=1, help="Send --data N times, or the first N lines."),
    ] = None,
    rate: Annotated[
        str | None, typer.Option("--rate", help="Pace sending: N/s (or N/m, N/h).")
    ] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Send the bytes as they are: no envelope, no validation.")
    ] = False,
    json_output: JsonOption = False,
    data_dir: DataDirOption = None,
) -> None:
    """Publish events; every one is validated against the registry before the first is sent.

    Example: devctl publish user-events --type devconnect.user.login --data '{"userId": "u1"}'
    """
    from devctl.cli.publishing import parse_rate, prepare, send
    from devctl.errors import NotFound
    from devctl.events.producer import EventProducer

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    per_second = parse_rate(rate)
    if source is not None:
        if source != "-":
            raise UsageError(
                f"unexpected argument '{source}': the only one after the topic is '-' (stdin)",
                hint="read a file with --file F",
            )
        if data is not None or file is not None:
            raise UsageError("give --data, --file or '-', not both")
        file = Path("-")
    if data is not None and file is not None:
        raise UsageError("give --data or --file, not both")
    if raw and event_type is not None:
        raise UsageError("--raw sends bytes as they are; it takes no --type")
    lines: list[bytes] | None = None
    if data is None:
        # Bytes: --raw sends them as they are; JSON lines are decoded (and checked) per line.
        if file is not None and str(file) != "-":
            try:
                lines = file.read_bytes().splitlines()
            except OSError as exc:
                raise UsageError(f"cannot read {file}: {exc.strerror}") from None
        elif file is not None or not sys.stdin.isatty():
            lines = sys.stdin.buffer.read().splitlines()
        else:
            raise UsageError(
                "nothing to publish", hint="give --type T --data JSON, --file F, or pipe JSON lines"
            )

    endpoints = app.endpoints()
    # Not sparse: the client connects to the brokers as soon as metadata names them,
    # instead of ~50 ms later (librdkafka spaces out its on-demand connections), so
    # warm_up has the producer id at its second metadata answer.
    eager: dict[str, Any] = {"enable.sparse.connections": False}
    with EventProducer(endpoints, settings, queue_full="block", **eager) as producer:
        # The producer's own metadata, which also has it ready to send at once (see
        # warm_up: otherwise the first event waits about a second for a producer id).
        metadata = producer.warm_up(settings.kafka.request_timeout_ms / 1000)
        if topic not in metadata.topics:
            # The broker may auto-create topics on produce: refuse rather than create a typo.
            raise NotFound(
                f"topic '{topic}' does not exist", hint="create it with `devctl topics create`"
            )
        records = prepare(
            producer,
            topic,
            event_type=event_type,
            data=data,
            lines=lines,
            key=key,
            count=count,
            raw=raw,
        )
        report = send(
            producer,
            topic,
            records,
            rate=per_second,
            timeout=settings.events.delivery_timeout_ms / 1000 + 5,
        )

    if json_output:
        print_json(
            {
                "topic": topic,
                "delivered": report.delivered,
                "failed": report.failed,
                "seconds": round(report.seconds, 3),
                "partitions": {str(p): n for p, n in sorted(report.partitions.items())},
                "events": [
                    {
                        "partition": d.partition,
                        "offset": d.offset,
                        "key": d.key,
                        "id": d.event_id,
                        "type": d.type,
                    }
                    for d in report.deliveries
                ]
                if len(records) <= 100
                else None,
                "failures": report.failures[:100],
                "not_sent": report.not_sent,
            }
        )
    else:
        console = app.console
        if len(records) <= SHOW_EACH:
            for d in report.deliveries:
                label = d.type or "record"
                ident = f" id {d.event_id}" if d.event_id else ""
                key = "(no key)" if d.key is None else f"key {escape(str(d.key))}"
                console.print(
                    f"[green]✔[/green] {escape(label)} -> {escape(topic)} "
                    f"partition {d.partition} offset {d.offset} {key}{ident}",
                    highlight=False,
                    soft_wrap=True,
                )
        else:
            rows = [(p, n) for p, n in sorted(report.partitions.items())]
            app.show(table(None, ["partition", "events"], rows))
            per_sec = report.delivered / report.seconds if report.seconds else 0.0
            console.print(
                f"delivered {report.delivered} of {len(records)} events to {escape(topic)} "
                f"in {report.seconds:.2f}s ({per_sec:,.0f}/s)",
                highlight=False,
            )
        for failure in report.failures[:20]:
            app.err.print(f"[red]✘[/red] {escape(failure)}", highlight=False)
        if report.not_reported:
            app.err.print(
                f"[red]✘[/red] {report.not_reported} events got no delivery report in time",
                highlight=False,
            )
        if report.not_sent:
            app.err.print(
                f"[red]✘[/red] stopped early: {report.not_sent} of {len(records)} events "
                "were not sent",
                highlight=False,
            )
    if report.aborted is not None:
        raise report.aborted  # after showing what was delivered: its own message and exit code
    if report.failed:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Kafka")(publish)
