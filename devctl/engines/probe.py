"""Health probes shared by every engine: one PING, one metadata request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from devctl.clients.endpoints import Endpoints

if TYPE_CHECKING:
    from devctl.config.loader import Settings

# The clients are imported by the probe that uses them: redis costs ~60 ms and
# confluent_kafka ~25 ms to import, and a command that reaches one service (topics,
# keys) must not pay for the other.


@dataclass(frozen=True)
class ProbeResult:
    latency_ms: float
    version: str | None = None
    detail: str | None = None


def probe_redis(
    url: str, settings: Settings, timeout: float | None = None, engine: str = "local"
) -> ProbeResult:
    import redis

    from devctl.clients.redis_client import make_redis, ping

    client = make_redis(Endpoints(engine, url, ""), settings)
    if timeout is not None:
        client.connection_pool.connection_kwargs.update(
            socket_connect_timeout=timeout, socket_timeout=timeout
        )
    try:
        latency = ping(client, url, engine)
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
    brokers: str, settings: Settings, timeout: float | None = None, engine: str = "local"
) -> ProbeResult:
    from devctl.clients.kafka_client import fetch_metadata, make_admin

    endpoints = Endpoints(engine, "", brokers)
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
    engine: str = "local",
) -> ProbeResult:
    if service == "redis":
        return probe_redis(address, settings, timeout, engine)
    return probe_kafka(address, settings, timeout, engine)
