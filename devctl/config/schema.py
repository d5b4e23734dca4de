"""The configuration schema: every key, its type, default and whether it is secret.

Keys are dotted (``redis.port``). The loader validates each layer against
``FIELDS`` and records where each value came from. Secrets never have a default.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    # A problem with a value of the right type, or None: for what a range cannot say.
    check: Callable[[Any], str | None] | None = None
    # YAML shown (commented out) in the generated config/devctl.yaml instead of the default.
    example: str | None = None


# Topic partitions beyond this need an explicit opt-in: every partition costs the
# broker files and costs each listing or offset query one more lookup (100,000
# partitions on Tansu made `topics list` take 25 s), and no DevConnect topic needs
# more than a few dozen.
MAX_PARTITIONS = 1000

_SECONDS_MAX = 86400.0  # a wait longer than a day is a typo (ms given as s)
_TTL_MAX = 10 * 365 * 86400  # likewise for a TTL; Redis refuses absurd ones with a bare error
_INT32_MAX = 2**31 - 1  # librdkafka's int properties
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?)$")
KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER")


def _port_problem(port: str) -> str | None:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 1 to 65535"
    return None


def redis_url_problem(url: str) -> str | None:
    """Why redis-py would refuse (or misread) a Redis URL, or None.

    Accepted: ``redis://[user:password@]host[:port][/db]``, the same with
    ``rediss://`` (TLS), and ``unix:///path/to/socket[?db=N]``.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("redis", "rediss", "unix") or "://" not in url:
        return "must start with redis://, rediss:// or unix://"
    db_texts = parse_qs(parts.query).get("db", [])
    if parts.scheme == "unix":
        if not parts.path or parts.path == "/":
            return "a unix:// URL needs the socket path (unix:///run/redis.sock)"
    else:
        address = parts.netloc.rpartition("@")[2]  # never the password, it goes in messages
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            return f"the port in {address!r} is not a number from 1 to 65535"
        if not parts.hostname or not _HOST.match(
            f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        ):
            return "needs a host name (redis://host:6379/0)"
        path = parts.path.strip("/")
        if path:
            db_texts.append(path)
    for db in db_texts:
        if not db.isdigit():
            return f"the database {db!r} is not a number (redis://host:6379/0)"
    return None


def kafka_brokers_problem(brokers: str) -> str | None:
    """Why a bootstrap list such as ``kafka-1:9092,kafka-2:9092`` is unusable, or None."""
    for entry in brokers.split(","):
        entry = entry.strip()
        if not entry:
            return "an empty entry in the list (host:port,host:port)"
        scheme, sep, rest = entry.partition("://")
        if sep:
            if scheme.upper() not in KAFKA_PROTOCOLS:
                return f"{entry!r}: unknown protocol {scheme!r}"
            entry = rest
        host, colon, port = entry.rpartition(":")
        if not colon:
            return f"{entry!r} has no port (host:port)"
        if not host or not _HOST.match(host):
            return f"{entry!r} has no valid host name (host:port)"
        problem = _port_problem(port)
        if problem:
            return f"{entry!r}: {problem}"
    return None


def _not_blank(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


def _event_source_problem(value: str) -> str | None:
    # CloudEvents: 'source' is a non-empty URI-reference, so no spaces.
    if not value or any(c.isspace() for c in value):
        return "must be a non-empty URI reference without spaces (e.g. /devconnect/api)"
    return None


def _sasl_mechanism_problem(value: str) -> str | None:
    if value not in SASL_MECHANISMS:
        return "expected one of " + ", ".join(SASL_MECHANISMS)
    return None


def _rate_limits_problem(value: dict[str, Any]) -> str | None:
    # The policy rules live with the rate limiter; its ConfigError names the policy,
    # and the loader adds the file and line.
    from devctl.state.ratelimit import load_policies

    load_policies(value)
    return None


FIELDS: dict[str, Field] = {
    "engine": Field(
        "choice",
        "local",
        "Which engine runs the stack; left unset, commands use the engine of the last "
        "`devctl up` (so this key is best left commented out)",
        choices=ENGINES,
    ),
    "data_dir": Field(
        "str", ".devctl", "State directory: pidfiles, logs, Redis data", check=_not_blank
    ),
    # Redis
    "redis.port": Field("int", 6379, "Port of the local engine's Redis", minimum=0, maximum=65535),
    "redis.url": Field(
        "str",
        None,
        "Redis URL for the external engine: redis://host:6379/0, rediss://, unix://",
        optional=True,
        check=redis_url_problem,
        example="redis://redis.internal:6379/0",
    ),
    "redis.password": Field("str", None, "Redis password (secret)", secret=True, optional=True),
    "redis.key_prefix": Field("str", "devconnect:", "Prefix of every DevConnect key"),
    "redis.connect_timeout": Field(
        "float", 2.0, "Seconds to wait for a connection", minimum=0.01, maximum=_SECONDS_MAX
    ),
    "redis.socket_timeout": Field(
        "float", 2.0, "Seconds to wait for a reply", minimum=0.01, maximum=_SECONDS_MAX
    ),
    # Kafka
    "kafka.port": Field(
        "int", 9092, "Port of the local engine's Kafka broker", minimum=0, maximum=65535
    ),
    "kafka.brokers": Field(
        "str",
        None,
        "Bootstrap servers for the external engine, host:port,host:port",
        optional=True,
        check=kafka_brokers_problem,
        example="kafka-1:9092,kafka-2:9092",
    ),
    "kafka.client_id": Field("str", "devconnect-app", "Kafka client.id", check=_not_blank),
    "kafka.group_id": Field("str", "devconnect-group", "Default consumer group", check=_not_blank),
    "kafka.security_protocol": Field(
        "choice",
        "PLAINTEXT",
        "Kafka security.protocol",
        choices=KAFKA_PROTOCOLS,
    ),
    "kafka.sasl_mechanism": Field(
        "str",
        None,
        "SASL mechanism: " + ", ".join(SASL_MECHANISMS),
        optional=True,
        check=_sasl_mechanism_problem,
    ),
    "kafka.sasl_username": Field("str", None, "SASL username", optional=True),
    "kafka.sasl_password": Field("str", None, "SASL password (secret)", secret=True, optional=True),
    # librdkafka refuses a session longer than max.poll.interval.ms (300000).
    "kafka.session_timeout_ms": Field(
        "int",
        None,
        "Consumer session.timeout.ms (unset: 6000 on local, librdkafka's default elsewhere)",
        optional=True,
        minimum=1,
        maximum=300000,
        example="6000",
    ),
    "kafka.heartbeat_interval_ms": Field(
        "int",
        None,
        "Consumer heartbeat.interval.ms, below the session timeout (unset: 500 on local)",
        optional=True,
        minimum=1,
        maximum=3600000,
        example="500",
    ),
    # It is also librdkafka's socket.timeout.ms, which stops at 300000.
    "kafka.request_timeout_ms": Field(
        "int", 5000, "Admin and metadata timeout", minimum=100, maximum=300000
    ),
    # Local engine
    "local.redis_server": Field("str", None, "Path of a redis/valkey-server binary", optional=True),
    "local.kafka_broker": Field("str", None, "Path of a tansu binary", optional=True),
    "local.start_timeout": Field(
        "float", 20.0, "Seconds to wait for health on up", minimum=1, maximum=_SECONDS_MAX
    ),
    "local.stop_timeout": Field(
        "float", 10.0, "Seconds between SIGTERM and SIGKILL", minimum=0.1, maximum=_SECONDS_MAX
    ),
    # Topic defaults (each topic may override)
    "topic_defaults.partitions": Field(
        "int", 3, "Partitions of a new topic", minimum=1, maximum=MAX_PARTITIONS
    ),
    "topic_defaults.replication_factor": Field(
        "int", 1, "Replication factor (at most the number of brokers)", minimum=1, maximum=32767
    ),
    "topic_defaults.dead_letter": Field("bool", True, "Create <topic><suffix> for each topic"),
    "topic_defaults.dead_letter_suffix": Field("str", ".dlq", "Dead-letter topic suffix"),
    # Redis domain (sessions, cache, presence, rate limits, message cache)
    "state.session_ttl": Field(
        "int", 86400, "Session lifetime in seconds", minimum=1, maximum=_TTL_MAX
    ),
    "state.session_sliding": Field("bool", False, "Extend a session's TTL on each validation"),
    "state.user_cache_ttl": Field(
        "int", 1800, "User cache TTL in seconds", minimum=1, maximum=_TTL_MAX
    ),
    "state.presence_instance_ttl": Field(
        "int",
        15,
        "Seconds an API instance stays alive without a heartbeat",
        minimum=1,
        maximum=_TTL_MAX,
    ),
    # The cache of a conversation is read whole on every chat open.
    "state.message_cache_size": Field(
        "int", 50, "Recent messages kept per conversation", minimum=1, maximum=100000
    ),
    "state.message_cache_ttl": Field(
        "int", 3600, "Message cache TTL in seconds", minimum=1, maximum=_TTL_MAX
    ),
    "state.rate_limits": Field(
        "mapping",
        None,
        "Rate-limit policies overriding the defaults (login_ip 20 and login_email 5 per "
        "15 min, api_user 600/min, connection_request per day free 10 / silver 100 / "
        "gold unlimited, chat_message 30/min). Per policy: limit (null: unlimited), "
        "period (seconds), subject (ip, email, user or key); or tiers and default_tier",
        optional=True,
        check=_rate_limits_problem,
        example=(
            "login_ip: {limit: 20, period: 900, subject: ip}\n"
            "connection_request:\n"
            "  period: 86400\n"
            "  tiers: {free: 10, silver: 100, gold: null}\n"
            "  default_tier: free"
        ),
    ),
    # Events: envelope, producer, consumer runtime (docs/events.md)
    "events.source": Field(
        "str",
        "/devconnect/devctl",
        "CloudEvents 'source' of published events",
        check=_event_source_problem,
    ),
    "events.producer_queue_size": Field(
        "int",
        100000,
        "Events the producer may hold locally before the queue is full",
        minimum=1,
        maximum=_INT32_MAX,
    ),
    "events.producer_queue_full": Field(
        "choice",
        "error",
        "When the queue is full: error (raise at once) or block",
        choices=("error", "block"),
    ),
    "events.producer_block_timeout": Field(
        "float",
        5.0,
        "Seconds 'block' waits for room before raising",
        minimum=0,
        maximum=_SECONDS_MAX,
    ),
    "events.delivery_timeout_ms": Field(
        "int",
        120000,
        "How long a queued event waits for the broker before it fails (above linger_ms)",
        minimum=1,
        maximum=_INT32_MAX,
    ),
    "events.linger_ms": Field(
        "int", 5, "Producer linger.ms (batching delay)", minimum=0, maximum=900000
    ),
    # confluent-kafka's consume() takes at most 1,000,000 messages per call.
    "events.consumer_batch_size": Field(
        "int", 100, "Records a consumer takes per poll", minimum=1, maximum=1000000
    ),
    "events.consumer_max_retries": Field(
        "int", 3, "Retries of a failing handler before DLQ", minimum=0, maximum=1000
    ),
    "events.consumer_backoff_ms": Field(
        "int",
        200,
        "First retry delay (doubles each retry)",
        minimum=0,
        maximum=_SECONDS_MAX * 1000,
    ),
    "events.consumer_backoff_max_ms": Field(
        "int",
        5000,
        "Longest retry delay (at least consumer_backoff_ms)",
        minimum=0,
        maximum=_SECONDS_MAX * 1000,
    ),
    "events.idempotency_ttl": Field(
        "int",
        604800,
        "Seconds a handled event id is remembered per group",
        minimum=1,
        maximum=_TTL_MAX,
    ),
}

# Pairs of keys whose values depend on each other: (smaller, relation, larger, why).
RELATIONS: tuple[tuple[str, str, str, str], ...] = (
    (
        "kafka.heartbeat_interval_ms",
        "<",
        "kafka.session_timeout_ms",
        "the group coordinator needs several heartbeats per session",
    ),
    (
        "events.linger_ms",
        "<",
        "events.delivery_timeout_ms",
        "librdkafka refuses a producer whose message.timeout.ms is not above linger.ms",
    ),
    (
        "events.consumer_backoff_ms",
        "<=",
        "events.consumer_backoff_max_ms",
        "the first retry delay cannot exceed the longest",
    ),
)

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
