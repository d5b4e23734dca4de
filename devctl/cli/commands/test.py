"""devctl test: integration checks against the running stack, whatever its engine."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, TypeVar

import typer
from rich.markup import escape

from devctl.cli.app import get_app
from devctl.cli.options import DataDirOption, JsonOption, data_dir_flag
from devctl.cli.output import print_json
from devctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING

T = TypeVar("T")


def test(
    ctx: typer.Context,
    json_output: JsonOption = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write a JUnit XML report here.")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="Only these check groups (repeatable)."),
    ] = None,
    data_dir: DataDirOption = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="The API the api checks drive (default: a running serve's, else their own).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the integration checks; exit 0 all pass, 1 any failure, 3 stack not reachable.

    Example: devctl test --junit report.xml
    """
    from devctl.checks import all_checks, run_checks, servers_used
    from devctl.errors import StackNotRunning, UsageError

    app = get_app(ctx)
    settings = app.settings(data_dir_flag(data_dir))
    # Bad arguments are reported before anything runs (and before the stack is asked).
    registered = all_checks()
    known = sorted({c.group for c in registered})
    unknown = [g for g in group or [] if g not in known]
    if unknown:
        raise UsageError(
            f"unknown check group {', '.join(unknown)}", hint=f"groups: {', '.join(known)}"
        )
    if junit is not None and (junit.is_dir() or not junit.parent.is_dir()):
        raise UsageError(f"--junit {junit}: not a file in an existing directory")
    if api_url is not None:
        from devctl.checks.api_checks import api_url_problem

        problem = api_url_problem(api_url)
        if problem:
            raise UsageError(f"--api-url: {problem}", hint="e.g. --api-url http://127.0.0.1:3000")
    try:
        # A server that is not running does not stop the run: the checks that need it
        # are skipped, the others run (only a stack with nothing running stops here).
        endpoints = app.endpoints(services=())
        needed = servers_used([c for c in registered if not group or c.group in group])
        if not endpoints.caps.starts_servers and needed & set(endpoints.not_running):
            # Servers devctl did not start: "not running" means not configured, and
            # asking for them raises the error that names the variable.
            endpoints = app.endpoints(services=sorted(needed))
    except StackNotRunning as exc:
        if json_output:  # JSON consumers still get a document
            print_json({"ok": False, "error": exc.message, "checks": []})
        raise

    marks = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "skip": "[yellow]SKIP[/]"}

    def show(result):  # type: ignore[no-untyped-def]
        if not json_output:
            app.console.print(
                f"{marks[result.status]} {result.group:<8} {escape(result.name):<40} "
                f"{result.millis:8.1f} ms  {escape(result.reason)}",
                highlight=False,
                soft_wrap=True,  # one row per check, also in CI logs
            )
            if result.detail and result.detail != "unreachable" and app.verbose:
                app.err.print(escape(result.detail), highlight=False)

    report = _run_until_terminated(
        lambda: run_checks(settings, endpoints, groups=group, on_result=show, api_url=api_url)
    )
    if junit is not None:
        write_junit(report, junit)
    passed = sum(r.passed for r in report.results)
    failed = sum(r.status == "fail" for r in report.results)
    skipped = sum(r.status == "skip" for r in report.results)
    if json_output:
        print_json(
            {
                "engine": endpoints.engine,
                "ok": report.ok,
                "seconds": round(report.seconds, 3),
                "unreachable": report.unreachable,
                "down": report.down,
                "cleanup_problems": report.cleanup_problems,
                "checks": [
                    {
                        "group": r.group,
                        "name": r.name,
                        "status": r.status,
                        "ms": round(r.millis, 1),
                        "reason": r.reason,
                    }
                    for r in report.results
                ],
            }
        )
    else:
        for problem in report.cleanup_problems:
            app.info(f"[red]clean-up failed:[/red] {escape(problem)}")
        colour = "green" if report.ok else "red"
        app.console.print(
            f"[{colour}]{passed} passed, {failed} failed, {skipped} skipped[/] in {report.seconds:.2f}s",
            highlight=False,
        )
    if report.unreachable or report.down:
        # Whether the server was hung or dead, at the start or in the middle of the run.
        for group_name, reason in report.unreachable.items():
            app.info(f"[red]{group_name} not reachable:[/red] {escape(reason)}")
        for server, reason in report.down.items():
            if server not in report.unreachable:
                app.info(f"[red]{server}:[/red] {escape(reason)}")
        if report.down:
            app.info(
                f"hint: {' and '.join(sorted(report.down))} did not answer during the run, so "
                f"the checks that need it were skipped; {endpoints.unreachable_hint}"
            )
        else:
            # Only a gate of its own failed (the api group's: the API, not a server of
            # the stack): the reason above says what to fix.
            groups = " and ".join(sorted(report.unreachable))
            app.info(f"hint: the first check of {groups} failed, so the rest was skipped")
        raise typer.Exit(EXIT_NOT_RUNNING)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def _run_until_terminated(run: Callable[[], T]) -> T:
    """``run()``, with SIGTERM handled like Ctrl-C: the checks' clean-ups run before exiting.

    Without this, SIGTERM (a CI job cancelled, `timeout`, a supervisor stopping us)
    ends the process at once and leaves the run's topics, groups and keys behind.
    """
    terminated = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal terminated
        terminated = True
        # One is enough: a second SIGTERM must not cut the clean-up short.
        signal.signal(signum, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return run()
    except KeyboardInterrupt:
        if terminated:
            typer.echo("terminated (cleaned up)", err=True)
            raise typer.Exit(128 + signal.SIGTERM) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_junit(report, path: Path) -> None:  # type: ignore[no-untyped-def]
    import xml.etree.ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="devctl",
        tests=str(len(report.results)),
        failures=str(sum(r.status == "fail" for r in report.results)),
        skipped=str(sum(r.status == "skip" for r in report.results)),
        time=f"{report.seconds:.3f}",
    )
    for result in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"devctl.{result.group}",
            name=result.name,
            time=f"{result.millis / 1000:.3f}",
        )
        if result.status == "fail":
            ET.SubElement(case, "failure", message=result.reason).text = (
                result.detail or result.reason
            )
        elif result.status == "skip":
            ET.SubElement(case, "skipped", message=result.reason)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Checks")(test)
