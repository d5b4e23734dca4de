"""``python -m devctl.consumers NAME``: run one registered consumer until SIGTERM/SIGINT.

How `devctl serve` starts each consumer. Settings come as for every devctl
command: config file in the working directory (or DEVCTL_CONFIG), .env, the
environment. Errors are one line on stderr and the error's exit code.
"""

from __future__ import annotations

import sys

from devctl.errors import EXIT_INTERRUPTED, EXIT_USAGE, DevctlError


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m devctl.consumers NAME\n")
        return EXIT_USAGE
    from devctl.config.loader import load_settings
    from devctl.consumers import consumer_main
    from devctl.logging_setup import configure_logging

    configure_logging()
    try:
        run = consumer_main(args[0])
        status = run(load_settings())
    except DevctlError as exc:
        sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
