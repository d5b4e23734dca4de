"""One API instance: ``python -m devctl.api --host 127.0.0.1 --port 3000 --name api-1``.

This is the child process `devctl serve` supervises; it reads its settings like
every devctl command (config file, .env, environment). Exit codes: 0 after a
graceful stop (SIGTERM/SIGINT), 2 for a bad setting, 3 when the port is taken
or the stack cannot be found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from devctl.errors import EXIT_USAGE, DevctlError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devctl.api", description=__doc__)
    parser.add_argument("--host", default=None, help="listen address (default: api.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: api.port)")
    parser.add_argument("--name", default="api", help="instance name in logs and /healthz")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    from devctl.logging_setup import configure_logging

    configure_logging()
    log = logging.getLogger("devctl.api")
    try:
        import uvicorn

        from devctl.api.app import create_asgi, shutdown_budget
        from devctl.config.loader import load_settings

        settings = load_settings()
        host = args.host or settings.api.host
        port = settings.api.port if args.port is None else args.port
        if not 0 < port < 65536:
            raise DevctlError(f"port {port} is not between 1 and 65535")
        common: dict[str, object] = {
            "host": host,
            "port": port,
            "log_level": "warning",
            "access_log": False,
            "timeout_graceful_shutdown": shutdown_budget(settings.api.drain_timeout).requests,
            "server_header": False,
            "lifespan": "on",
        }
        # Before uvicorn: a stack that is not there is one clear line and exit 3, not
        # the traceback uvicorn prints for a failed start-up.
        from devctl.engines import select_engine

        select_engine(settings).endpoints(())
        app = create_asgi(settings, instance=args.name)
        config = uvicorn.Config(app, **common)  # type: ignore[arg-type]
        server = uvicorn.Server(config)
        # uvicorn re-raises the stop signal once it has shut down gracefully, through
        # the handler that was there before it: a quiet one makes a graceful stop exit 0.
        signal.signal(signal.SIGTERM, lambda *_: None)
        log.info("%s listening on http://%s:%d", args.name, host, port)
        server.run()
        # uvicorn returns without raising when it cannot bind or start-up fails.
        if not server.started:
            return 3
        return 0
    except DevctlError as exc:
        log.error("%s: %s", args.name, exc.message + (f" ({exc.hint})" if exc.hint else ""))
        return exc.exit_code if exc.exit_code != 130 else 1
    except KeyboardInterrupt:
        return 0
    except SystemExit as exc:  # uvicorn exits 1 on a failed lifespan start-up
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
