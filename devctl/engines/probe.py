"""Health probes shared by every engine: one PING, one metadata request."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from devctl.clients.endpoints import Capabilities, Endpoints, unreachable_hint
from devctl.clients.redis_client import (
    CredentialsRefused,
    PlainRedis,
    PlainTarget,
    ResponseError,
    plain_target,
)
from devctl.config.loader import Settings, redact_url
from devctl.errors import RedisUnavailable

# The clients are imported by the probe that uses them: confluent_kafka costs ~25 ms
# to import, and a command that reaches one service must not pay for the other.
# Redis is probed over a plain socket (PlainRedis, see _resp_probe): redis-py costs
# ~90 ms to import, most of `devctl status`, for one PING and one INFO.


@dataclass(frozen=True)
class ProbeResult:
    latency_ms: float
    version: str | None = None
    detail: str | None = None


def probe_redis(
    url: str, settings: Settings, timeout: float | None = None, caps: Capabilities = Capabilities()
) -> ProbeResult:
    target = plain_target(url, settings, caps)
    if target is None:
        return _probe_redis_py(url, settings, timeout, caps)
    conf = settings.redis
    connect_timeout = conf.connect_timeout if timeout is None else timeout
    read_timeout = conf.socket_timeout if timeout is None else timeout
    # PING and INFO need no database: the URL's is not selected (nor checked).
    return _resp_probe(url, caps, replace(target, db=0), connect_timeout, read_timeout)


def _resp_probe(
    url: str, caps: Capabilities, target: PlainTarget, connect_timeout: float, read_timeout: float
) -> ProbeResult:
    """AUTH (when there is a password), PING and INFO server over one socket.

    Errors read as make_redis/ping's would: credentials refused, or not reachable.
    """
    started = time.perf_counter()
    try:
        with PlainRedis.connect(target, connect_timeout, read_timeout) as conn:
            conn.call("PING")
            latency = (time.perf_counter() - started) * 1000
            # Managed Redis may disable INFO; PING is what counts.
            info = conn.send(["INFO", "server"])
    except CredentialsRefused as exc:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} refused the credentials",
            hint="set DEVCTL_REDIS_PASSWORD or put the password in REDIS_URL",
        ) from exc
    except (OSError, ResponseError) as exc:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} is not reachable: {exc}",
            hint=unreachable_hint(caps),
        ) from exc
    if not isinstance(info, str):
        return ProbeResult(latency)
    fields = dict(
        line.split(":", 1) for line in info.splitlines() if ":" in line and not line.startswith("#")
    )
    name = "valkey" if "valkey_version" in fields else "redis"
    version = fields.get("valkey_version") or fields.get("redis_version")
    return ProbeResult(latency, f"{name} {version}")


def _probe_redis_py(
    url: str, settings: Settings, timeout: float | None, caps: Capabilities
) -> ProbeResult:
    import redis

    from devctl.clients.redis_client import make_redis, ping

    client = make_redis(Endpoints("probe", url, "", caps=caps), settings)
    if timeout is not None:
        client.connection_pool.connection_kwargs.update(
            socket_connect_timeout=timeout, socket_timeout=timeout
        )
    try:
        latency = ping(client, url, caps)
        try:
            info = client.info("server")
        except redis.RedisError:  # managed Redis may disable INFO; PING is what counts
            return ProbeResult(latency)
        name = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version")
        return ProbeResult(latency, f"{name} {version}")
    finally:
        client.close()


def probe_kafka(
    brokers: str,
    settings: Settings,
    timeout: float | None = None,
    caps: Capabilities = Capabilities(),
) -> ProbeResult:
    from devctl.clients.kafka_client import fetch_metadata, make_admin

    endpoints = Endpoints("probe", "", brokers, caps=caps)
    admin = make_admin(endpoints, settings)
    wait = timeout if timeout is not None else settings.kafka.request_timeout_ms / 1000
    metadata, latency = fetch_metadata(admin, endpoints, wait)
    # The Kafka protocol does not tell a broker's version; describe the cluster instead.
    detail = f"{len(metadata.brokers)} broker(s), cluster id {metadata.cluster_id}"
    return ProbeResult(latency, None, detail)


def probe(
    service: str,
    address: str,
    settings: Settings,
    timeout: float | None = None,
    caps: Capabilities = Capabilities(),
) -> ProbeResult:
    if service == "redis":
        return probe_redis(address, settings, timeout, caps)
    return probe_kafka(address, settings, timeout, caps)
