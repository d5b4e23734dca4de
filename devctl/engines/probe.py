"""Health probes shared by every engine: one PING, one metadata request."""

from __future__ import annotations

from dataclasses import dataclass

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import fetch_metadata, make_admin
from devctl.clients.redis_client import make_redis, ping
from devctl.config.loader import Settings
from devctl.errors import RedisUnavailable


@dataclass(frozen=True)
class ProbeResult:
    latency_ms: float
    version: str | None = None


def probe_redis(url: str, settings: Settings, timeout: float | None = None) -> ProbeResult:
    client = make_redis(Endpoints("probe", url, ""), settings)
    if timeout is not None:
        client.connection_pool.connection_kwargs.update(
            socket_connect_timeout=timeout, socket_timeout=timeout
        )
    try:
        latency = ping(client, url)
        try:
            info = client.info("server")
        except Exception as exc:  # INFO may be disabled on managed Redis
            raise RedisUnavailable(f"Redis at {url} answered PING but not INFO: {exc}") from exc
        name = "valkey" if "valkey_version" in info else "redis"
        version = info.get("valkey_version") or info.get("redis_version")
        return ProbeResult(latency, f"{name} {version}")
    finally:
        client.close()


def probe_kafka(brokers: str, settings: Settings, timeout: float | None = None) -> ProbeResult:
    endpoints = Endpoints("probe", "", brokers)
    admin = make_admin(endpoints, settings)
    wait = timeout if timeout is not None else settings.kafka.request_timeout_ms / 1000
    metadata, latency = fetch_metadata(admin, endpoints, wait)
    return ProbeResult(latency, f"{len(metadata.brokers)} broker(s), cluster {metadata.cluster_id}")


def probe(
    service: str, address: str, settings: Settings, timeout: float | None = None
) -> ProbeResult:
    if service == "redis":
        return probe_redis(address, settings, timeout)
    return probe_kafka(address, settings, timeout)
