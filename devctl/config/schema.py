"""The configuration schema: every key, its type, default and whether it is secret.

Keys are dotted (``redis.port``). The loader validates each layer against
``FIELDS`` and records where each value came from. Secrets never have a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# "docker" joins when its engine lands; see devctl/engines/__init__.py.
ENGINES = ("local", "external")


@dataclass(frozen=True)
class Field:
    kind: str  # "str" | "int" | "float" | "bool" | "choice" | "mapping"
    default: Any = None
    help: str = ""
    secret: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


FIELDS: dict[str, Field] = {
    "engine": Field("choice", "local", "Which engine runs the stack", choices=ENGINES),
    "data_dir": Field("str", ".devctl", "State directory: pidfiles, logs, Redis data"),
    # Redis
    "redis.port": Field("int", 6379, "Port of the local engine's Redis", minimum=0, maximum=65535),
    "redis.url": Field("str", None, "Redis URL for the external engine", optional=True),
    "redis.password": Field("str", None, "Redis password (secret)", secret=True, optional=True),
    "redis.key_prefix": Field("str", "devconnect:", "Prefix of every DevConnect key"),
    "redis.connect_timeout": Field("float", 2.0, "Seconds to wait for a connection", minimum=0.01),
    "redis.socket_timeout": Field("float", 2.0, "Seconds to wait for a reply", minimum=0.01),
    # Kafka
    "kafka.port": Field(
        "int", 9092, "Port of the local engine's Kafka broker", minimum=0, maximum=65535
    ),
    "kafka.brokers": Field("str", None, "Bootstrap servers (comma-separated)", optional=True),
    "kafka.client_id": Field("str", "devconnect-app", "Kafka client.id"),
    "kafka.group_id": Field("str", "devconnect-group", "Default consumer group"),
    "kafka.security_protocol": Field(
        "choice",
        "PLAINTEXT",
        "Kafka security.protocol",
        choices=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
    ),
    "kafka.sasl_mechanism": Field("str", None, "SASL mechanism (PLAIN, SCRAM-...)", optional=True),
    "kafka.sasl_username": Field("str", None, "SASL username", optional=True),
    "kafka.sasl_password": Field("str", None, "SASL password (secret)", secret=True, optional=True),
    "kafka.session_timeout_ms": Field(
        "int", None, "Consumer session.timeout.ms (unset: 6000 on local)", optional=True
    ),
    "kafka.heartbeat_interval_ms": Field(
        "int", None, "Consumer heartbeat.interval.ms (unset: 500 on local)", optional=True
    ),
    "kafka.request_timeout_ms": Field("int", 5000, "Admin and metadata timeout", minimum=100),
    # Local engine
    "local.redis_server": Field("str", None, "Path of a redis/valkey-server binary", optional=True),
    "local.kafka_broker": Field("str", None, "Path of a tansu binary", optional=True),
    "local.start_timeout": Field("float", 20.0, "Seconds to wait for health on up", minimum=1),
    "local.stop_timeout": Field("float", 10.0, "Seconds between SIGTERM and SIGKILL", minimum=0.1),
    # Topic defaults (each topic may override)
    "topic_defaults.partitions": Field("int", 3, "Partitions of a new topic", minimum=1),
    "topic_defaults.replication_factor": Field("int", 1, "Replication factor", minimum=1),
    "topic_defaults.dead_letter": Field("bool", True, "Create <topic><suffix> for each topic"),
    "topic_defaults.dead_letter_suffix": Field("str", ".dlq", "Dead-letter topic suffix"),
    # Redis domain (sessions, cache, presence, rate limits, message cache)
    "state.session_ttl": Field("int", 86400, "Session lifetime in seconds", minimum=1),
    "state.session_sliding": Field("bool", False, "Extend a session's TTL on each validation"),
    "state.user_cache_ttl": Field("int", 1800, "User cache TTL in seconds", minimum=1),
    "state.presence_instance_ttl": Field(
        "int", 15, "Seconds an API instance stays alive without a heartbeat", minimum=1
    ),
    "state.message_cache_size": Field(
        "int", 50, "Recent messages kept per conversation", minimum=1
    ),
    "state.message_cache_ttl": Field("int", 3600, "Message cache TTL in seconds", minimum=1),
    "state.rate_limits": Field("mapping", None, "Rate-limit policies", optional=True),
    # Events: envelope, producer, consumer runtime (docs/events.md)
    "events.source": Field("str", "/devconnect/devctl", "CloudEvents 'source' of published events"),
    "events.producer_queue_size": Field(
        "int", 100000, "Events the producer may hold locally before the queue is full", minimum=1
    ),
    "events.producer_queue_full": Field(
        "choice",
        "error",
        "When the queue is full: error (raise at once) or block",
        choices=("error", "block"),
    ),
    "events.producer_block_timeout": Field(
        "float", 5.0, "Seconds 'block' waits for room before raising", minimum=0
    ),
    "events.delivery_timeout_ms": Field(
        "int", 120000, "How long a queued event waits for the broker before it fails", minimum=1
    ),
    "events.linger_ms": Field("int", 5, "Producer linger.ms (batching delay)", minimum=0),
    "events.consumer_batch_size": Field("int", 100, "Records a consumer takes per poll", minimum=1),
    "events.consumer_max_retries": Field(
        "int", 3, "Retries of a failing handler before DLQ", minimum=0
    ),
    "events.consumer_backoff_ms": Field(
        "int", 200, "First retry delay (doubles each retry)", minimum=0
    ),
    "events.consumer_backoff_max_ms": Field("int", 5000, "Longest retry delay", minimum=0),
    "events.idempotency_ttl": Field(
        "int", 604800, "Seconds a handled event id is remembered per group", minimum=1
    ),
}

SECTIONS = sorted({k.split(".", 1)[0] for k in FIELDS if "." in k})

# The topics DevConnect uses; each is keyed by user id (sender for chat and requests).
DEFAULT_TOPICS: tuple[str, ...] = (
    "user-events",
    "message-events",
    "connection-events",
    "notification-events",
    "analytics-events",
)

TOPIC_KEYS = ("name", "partitions", "replication_factor", "config", "dead_letter", "key")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)
    key: str = "user id"
    dead_letter_of: str | None = None  # set on the dead-letter topic of another topic


@dataclass(frozen=True)
class RedisSettings:
    port: int
    url: str | None
    password: str | None
    key_prefix: str
    connect_timeout: float
    socket_timeout: float


@dataclass(frozen=True)
class KafkaSettings:
    port: int
    brokers: str | None
    client_id: str
    group_id: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None
    session_timeout_ms: int | None
    heartbeat_interval_ms: int | None
    request_timeout_ms: int


@dataclass(frozen=True)
class LocalSettings:
    redis_server: str | None
    kafka_broker: str | None
    start_timeout: float
    stop_timeout: float


@dataclass(frozen=True)
class StateSettings:
    session_ttl: int
    session_sliding: bool
    user_cache_ttl: int
    presence_instance_ttl: int
    message_cache_size: int
    message_cache_ttl: int
    rate_limits: dict[str, Any] | None


@dataclass(frozen=True)
class EventsSettings:
    source: str
    producer_queue_size: int
    producer_queue_full: str
    producer_block_timeout: float
    delivery_timeout_ms: int
    linger_ms: int
    consumer_batch_size: int
    consumer_max_retries: int
    consumer_backoff_ms: int
    consumer_backoff_max_ms: int
    idempotency_ttl: int


_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse (or hide) a topic name, or None if it is fine."""
    if not _TOPIC_NAME.match(name):
        return "topic names are 1-249 characters of letters, digits, '.', '_' or '-'"
    if name in (".", ".."):
        return "'.' and '..' are not valid topic names"
    if name.startswith("__"):
        return "names starting with '__' are reserved for Kafka's internal topics"
    return None
