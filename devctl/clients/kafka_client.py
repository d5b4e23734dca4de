"""Kafka client configuration and the few admin calls every command shares."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException, Producer

from devctl.clients.endpoints import Endpoints
from devctl.config.loader import Settings
from devctl.errors import KafkaUnavailable

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient, ClusterMetadata

# Tansu's first group join waits about half of session.timeout.ms, so the local
# engine's consumers use a short session (see README, "Embedded engine facts").
LOCAL_SESSION_TIMEOUT_MS = 6000
LOCAL_HEARTBEAT_INTERVAL_MS = 500


def common_conf(endpoints: Endpoints, settings: Settings) -> dict[str, Any]:
    """The settings every Kafka client gets: kafka.client_config first (pass-through
    librdkafka settings), then devctl's own, which take precedence."""
    conf = settings.kafka
    out: dict[str, Any] = dict(conf.client_config or {})
    out |= {
        "bootstrap.servers": endpoints.kafka_brokers,
        "client.id": conf.client_id,
        "security.protocol": conf.security_protocol,
        "socket.timeout.ms": max(conf.request_timeout_ms, 1000),
        # librdkafka otherwise logs every failed connection attempt to stderr.
        "log_level": 0,
        # A request made before the first connection is up (every command's first
        # metadata or offsets call) waits out librdkafka's connection suppression,
        # half of this backoff: ~50 ms at the default 100, ~10 ms (its floor) at 20.
        # Reconnects still back off exponentially up to reconnect.backoff.max.ms.
        "reconnect.backoff.ms": 20,
    }
    if conf.security_protocol.startswith("SASL") and not conf.sasl_mechanism:
        # librdkafka would default to GSSAPI, which this build lacks: an internal error
        # at the first request instead of a line saying what to set.
        from devctl.errors import ConfigError

        raise ConfigError(
            f"kafka.security_protocol {conf.security_protocol} needs kafka.sasl_mechanism",
            key="kafka.sasl_mechanism",
            hint="e.g. DEVCTL_KAFKA_SASL_MECHANISM=SCRAM-SHA-512 (or PLAIN)",
        )
    if conf.sasl_mechanism:
        out["sasl.mechanism"] = conf.sasl_mechanism
    if conf.sasl_username:
        out["sasl.username"] = conf.sasl_username
    if conf.sasl_password:
        out["sasl.password"] = conf.sasl_password
    for key, value in (
        ("ssl.ca.location", conf.ssl_ca_location),
        ("ssl.certificate.location", conf.ssl_certificate_location),
        ("ssl.key.location", conf.ssl_key_location),
        ("ssl.key.password", conf.ssl_key_password),
    ):
        if value:
            out[key] = value
    if conf.client_config or conf.security_protocol != "PLAINTEXT":
        _check_accepted(out)
    return out


_accepted: set[frozenset[tuple[str, str]]] = set()


def _check_accepted(conf: dict[str, Any]) -> None:
    """ConfigError when librdkafka refuses these settings (an unknown property, SASL
    without credentials, a key without its certificate, a CA file that is not PEM).

    librdkafka checks them when a client is built, with an error devctl would only
    show as an internal one: one throwaway producer (a few ms, no connection) finds
    out first, once per set of settings and process.
    """
    key = frozenset((k, str(v)) for k, v in conf.items())
    if key in _accepted:
        return
    from confluent_kafka import KafkaError, KafkaException, Producer

    from devctl.errors import ConfigError

    try:
        Producer(conf)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError._INVALID_ARG:
            raise ConfigError(
                f"the Kafka client refused its settings: {error.str()}",
                key="kafka",
                hint="check the kafka.* security settings and kafka.client_config",
            ) from None
        raise
    _accepted.add(key)


def consumer_conf(
    endpoints: Endpoints, settings: Settings, *, group_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    conf = settings.kafka
    session = conf.session_timeout_ms
    heartbeat = conf.heartbeat_interval_ms
    if endpoints.caps.short_group_session:
        session = session or LOCAL_SESSION_TIMEOUT_MS
        heartbeat = heartbeat or LOCAL_HEARTBEAT_INTERVAL_MS
    out = common_conf(endpoints, settings)
    out.update(
        {
            "group.id": group_id or conf.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    if session:
        out["session.timeout.ms"] = session
    if heartbeat:
        out["heartbeat.interval.ms"] = heartbeat
    out.update(overrides)
    return out


def producer_conf(endpoints: Endpoints, settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The configuration of every devctl producer (EventProducer, checks, benchmarks)."""
    out = common_conf(endpoints, settings)
    out.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            # librdkafka's default (consistent_random: CRC32) puts a key on another partition
            # than the Java, kafka-python and kafkajs producers (murmur2) for about two keys
            # in three: per-key order and co-partitioning with their records would break.
            "partitioner": "murmur2_random",
        }
    )
    out.update(overrides)
    return out


def make_admin(endpoints: Endpoints, settings: Settings) -> AdminClient:
    # Imported here: confluent_kafka.admin costs ~10 ms, which `devctl publish` (its
    # producer reads the metadata) no longer pays.
    from confluent_kafka.admin import AdminClient

    return AdminClient(common_conf(endpoints, settings))


def fetch_metadata(
    admin: AdminClient | Producer, endpoints: Endpoints, timeout: float, topic: str | None = None
) -> tuple[ClusterMetadata, float]:
    """One metadata request; return it with its latency in ms, or raise KafkaUnavailable.

    A producer's request for one ``topic`` lets the broker auto-create it (librdkafka's
    producers allow that by default): ask a producer for all topics instead.
    """
    started = time.perf_counter()
    try:
        metadata = admin.list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"Kafka at {endpoints.kafka_brokers} did not answer a metadata request "
            f"within {timeout:g}s: {kafka_reason(exc)}",
            hint=endpoints.unreachable_hint,
        ) from exc
    return metadata, (time.perf_counter() - started) * 1000


def kafka_reason(exc: BaseException) -> str:
    """The readable part of a KafkaException (its KafkaError's text)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return str(exc)


def kafka_code(exc: BaseException) -> int | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return int(exc.args[0].code())
    return None
