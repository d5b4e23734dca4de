"""The plan of `devctl serve`: DevConnect's API instances and consumers, from the settings.

API instance N runs ``python -m devctl.api --host HOST --port PORT+N-1 --name api-N``;
a consumer runs ``python -m devctl.consumers NAME``. Each child gets the
supervisor's environment plus what makes it see the same settings and the same
stack as the command that planned it: the working directory (config file, .env),
the absolute data dir (stack.json, the Redis password, the database) and the
config file's path when one was used.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devctl.config import envvars
from devctl.config.schema import KEYS
from devctl.errors import UsageError
from devctl.supervisor import health
from devctl.supervisor.plan import ServePlan
from devctl.supervisor.spec import ChildSpec, RestartPolicy

if TYPE_CHECKING:
    from devctl.config.loader import Settings

API_MODULE = "devctl.api"
CONSUMER_MODULE = "devctl.consumers"
API_PHASE, CONSUMER_PHASE = 0, 1  # API instances stop first, then the consumers
# Beyond api.drain_timeout: the interpreter's own exit, the producer's last flush.
DRAIN_MARGIN_S = 5.0
MAX_PORT = 65535


@dataclass(frozen=True)
class ServeOptions:
    """What to run: validated, ready for ``build_plan``."""

    host: str
    port: int  # the first instance's; instance N listens on port + N - 1
    instances: int
    consumers: tuple[str, ...]
    reload: bool = False


def serve_options(
    settings: Settings,
    *,
    consumers: Sequence[str] | None = None,
    no_consumers: bool = False,
    reload: bool = False,
    registry: Mapping[str, str] | None = None,
) -> ServeOptions:
    """The options of a serve from the settings (api.*) and the choices of consumers.

    ``consumers`` None means every registered one; ``no_consumers``, none.
    """
    from devctl.consumers import CONSUMERS, check_names

    registry = CONSUMERS if registry is None else registry
    api = settings.config.api
    if reload and api.instances > 1:
        raise UsageError(
            f"reloading runs one API instance, not {api.instances}",
            hint="serve one instance to reload on changes",
            field="reload",
            data={"value": True, "conflicts": ["api.instances"]},
        )
    if no_consumers and consumers:
        raise UsageError(
            "choose the consumers or none of them, not both",
            field="consumers",
            data={"value": ",".join(consumers), "conflicts": ["no_consumers"]},
        )
    chosen = () if no_consumers else tuple(registry if consumers is None else consumers)
    check_names(chosen, registry)
    last = api.port + api.instances - 1
    if last > MAX_PORT:
        raise UsageError(
            f"{api.instances} instances from port {api.port} would need port {last}",
            hint=f"start at a port up to {MAX_PORT - api.instances + 1}, or run fewer instances",
            field="api.port",
        )
    return ServeOptions(
        host=api.host,
        port=api.port,
        instances=api.instances,
        consumers=tuple(dict.fromkeys(chosen)),
        reload=reload,
    )


def child_env(settings: Settings) -> dict[str, str]:
    """What every child gets on top of the supervisor's environment (no secrets)."""
    env = {
        KEYS["data_dir"].env[0]: str(settings.data_dir),
        # Lines reach the supervisor as they are printed, not when a buffer fills.
        "PYTHONUNBUFFERED": "1",
    }
    if settings.config_file is not None:
        env[envvars.CONFIG_FILE] = str(settings.config_file.resolve())
    return env


def build_plan(
    settings: Settings, options: ServeOptions, policy: RestartPolicy | None = None
) -> ServePlan:
    """The children of a serve, the restart policy and, with reload, what to watch."""
    drain = settings.config.api.drain_timeout
    base_env = child_env(settings)
    children: list[ChildSpec] = []
    for number in range(1, options.instances + 1):
        name = f"api-{number}"
        port = options.port + number - 1
        children.append(
            ChildSpec(
                name=name,
                argv=(
                    sys.executable,
                    "-m",
                    API_MODULE,
                    "--host",
                    options.host,
                    "--port",
                    str(port),
                    "--name",
                    name,
                ),
                role="api",
                env={
                    **base_env,
                    KEYS["api.host"].env[0]: options.host,
                    KEYS["api.port"].env[0]: str(port),
                },
                cwd=settings.cwd,
                host=options.host,
                port=port,
                health_url=health.url(options.host, port, "/healthz"),
                ready_url=health.url(options.host, port, "/readyz"),
                stop_phase=API_PHASE,
                stop_timeout=drain + DRAIN_MARGIN_S,
                essential=True,
                reload=options.reload,
            )
        )
    for name in options.consumers:
        children.append(
            ChildSpec(
                name=name,
                argv=(sys.executable, "-m", CONSUMER_MODULE, name),
                role="consumer",
                env=base_env,
                cwd=settings.cwd,
                stop_phase=CONSUMER_PHASE,
                stop_timeout=drain + DRAIN_MARGIN_S,
                essential=False,
                reload=options.reload,
            )
        )
    watch = (source_root(),) if options.reload else ()
    return ServePlan(tuple(children), settings.data_dir, policy or RestartPolicy(), watch)


def source_root() -> Path:
    """The devctl package's directory: what a reloading serve watches."""
    import devctl

    return Path(devctl.__file__).resolve().parent


def listen_urls(plan: ServePlan) -> list[tuple[str, str]]:
    """(name, base URL) of each API instance of a plan."""
    return [
        (child.name, health.url(child.host or "127.0.0.1", child.port))
        for child in plan.children
        if child.role == "api" and child.port is not None
    ]
