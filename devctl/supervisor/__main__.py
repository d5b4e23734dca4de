"""A detached serve: ``python -m devctl.supervisor PLAN_FILE`` (started by ``detach``).

The entry point of the daemon: it runs the plan (devctl.supervisor.plan.run_plan)
and writes its events, one line each, to its output (logs/serve.log). Exit
status: 0 after a graceful stop, 1 when every API instance gave up, a
DevctlError's exit code when it could not start (a serve already runs, a port is taken).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from devctl.errors import EXIT_FAILED, EXIT_USAGE, DevctlError
from devctl.supervisor.plan import DETACHED, ServePlan, run_plan
from devctl.supervisor.spec import Event


def _write_event(event: Event) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    sys.stdout.write(f"{stamp} {event.kind}: {event.message}\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m devctl.supervisor PLAN_FILE\n")
        return EXIT_USAGE
    from devctl.logging_setup import configure_logging

    configure_logging()
    try:
        plan = ServePlan.read(Path(args[0]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"error: cannot read the plan {args[0]}: {exc}\n")
        return EXIT_USAGE
    try:
        outcome = run_plan(plan, DETACHED, on_event=_write_event)
    except DevctlError as exc:
        sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
        return exc.exit_code
    return EXIT_FAILED if outcome.all_gave_up else 0


if __name__ == "__main__":
    sys.exit(main())
