"""The configuration schema: one typed dataclass per section, one field per key.

Each key is declared once, as a field of its section: its Python type is the
annotation, and ``setting(...)`` carries the default, help text, range, choices,
extra check, environment names and secret-ness. Everything else is derived from
these classes: ``KEYS`` (dotted key -> ``Key``) that the loader validates each
layer against, the generated reference (config/devctl.yaml) and the typed
``Config`` the loader builds once. Adding a key is one field here (then regenerate
the reference: ``devctl config reference > config/devctl.yaml``).

Environment names: DevConnect's own (REDIS_URL, KAFKA_BROKERS, KAFKA_CLIENT_ID,
KAFKA_GROUP_ID) are honoured so the same .env file serves the app and devctl;
devctl's own start with DEVCTL_ and are listed first, so they win. Secrets never
have a default and are read only from the environment or .env.
"""

# No `from __future__ import annotations`: the annotations must be real types,
# since each key's kind (int, str | None, ...) is read from them.

import dataclasses
import os
import re
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from devctl.engines import DEFAULT_ENGINE
from devctl.engines import ENGINES as _ENGINE_REGISTRY

# Derived from the engine registry (which imports no engine), never listed here.
ENGINES = tuple(_ENGINE_REGISTRY)

_META = "devctl"  # the key of a field's metadata holding its Key
_KINDS: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str"}


class Key:
    """One config key: what `setting()` declares, plus its name and type once bound."""

    __slots__ = (
        "check",
        "choices",
        "default",
        "env",
        "example",
        "help",
        "key",
        "kind",
        "maximum",
        "minimum",
        "optional",
        "secret",
    )

    def __init__(
        self,
        default: Any,
        help: str,
        *,
        env: tuple[str, ...],
        secret: bool,
        choices: tuple[str, ...],
        minimum: float | None,
        maximum: float | None,
        check: Callable[[Any], str | None] | None,
        example: str | None,
    ) -> None:
        self.default = default
        self.help = help
        self.env = env
        self.secret = secret
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.check = check
        self.example = example
        self.key = ""
        self.kind = ""  # "str" | "int" | "float" | "bool" | "choice" | "mapping"
        self.optional = False

    def _bind(self, key: str, annotation: Any) -> None:
        # The dotted name and the type are known only once the field sits in its
        # section, so they are filled in by _collect(), once, at import.
        self.key = key
        args = annotation.__args__ if isinstance(annotation, types.UnionType) else (annotation,)
        self.optional = type(None) in args
        (base,) = (a for a in args if a is not type(None))
        if getattr(base, "__origin__", None) is dict:
            self.kind = "mapping"
        elif base in _KINDS:
            self.kind = "choice" if self.choices else _KINDS[base]
        else:
            raise TypeError(f"{key}: unsupported type {annotation!r}")
        if self.choices and base is not str:
            raise TypeError(f"{key}: choices need a str field")
        if self.optional != (self.default is None):
            raise TypeError(f"{key}: a key is optional (`| None`) exactly when its default is None")
        if self.secret and self.default is not None:
            raise TypeError(f"{key}: a secret has no default")

    def __repr__(self) -> str:
        return f"Key({self.key!r}, {self.kind}, default={self.default!r})"


def setting(
    default: Any,
    help: str,
    *,
    env: tuple[str, ...] = (),
    secret: bool = False,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    example: str | None = None,
) -> Any:
    """Declare a key as a section field: ``port: int = setting(6379, "help", ...)``.

    ``env``: environment names, highest priority first. ``check``: a problem with a
    value of the right type, or None, for what a range cannot say. ``example``: YAML
    shown (commented out) in the generated reference instead of the default.
    """
    key = Key(
        default,
        help,
        env=env,
        secret=secret,
        choices=choices,
        minimum=minimum,
        maximum=maximum,
        check=check,
        example=example,
    )
    return field(default=default, metadata={_META: key})


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
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. an unbalanced '[' (urlsplit reads it as an IPv6 host)
        return "is not a URL (check the host: an IPv6 address goes in [brackets])"
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


def _readable_file_problem(value: str) -> str | None:
    path = Path(value).expanduser()
    if not path.is_file():
        return f"no such file: {value}"
    if not os.access(path, os.R_OK):
        return f"cannot read {value}"
    return None


# librdkafka settings devctl sets itself from other keys: naming them in
# kafka.client_config would be ambiguous, so they are refused there.
_MANAGED_KAFKA = {
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "client.id",
    "group.id",
}
# Values that are secrets: not in a config file (the file may be committed). Names
# with these parts, inline PEM (keys, certificates) and the settings that carry
# credentials inside a string (OAuth client secrets, JAAS).
_SECRET_KAFKA = ("password", "secret", "token", "pem", "jaas", "oauthbearer.config", "keystore")


def _client_config_problem(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping of librdkafka setting names to values"
    for name, item in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_.]+", name):
            return f"{name!r} is not a librdkafka setting name"
        if name in _MANAGED_KAFKA:
            return f"{name} is set by devctl from its own kafka.* key"
        if any(word in name for word in _SECRET_KAFKA):
            return f"{name} holds a secret: set it in the environment, not in a config file"
        if not isinstance(item, str | int | float | bool):
            return f"{name}: a value must be a string, number or boolean"
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


# --- The sections. A section's docstring heads it in the generated reference.


@dataclass(frozen=True)
class RedisSettings:
    """Redis (Valkey on the local engine)"""

    port: int = setting(
        6379,
        "Port of the local engine's Redis",
        minimum=0,
        maximum=65535,
        env=("DEVCTL_REDIS_PORT",),
    )
    url: str | None = setting(
        None,
        "Redis URL for the external engine: redis://host:6379/0, rediss://, unix://",
        check=redis_url_problem,
        example="redis://redis.internal:6379/0",
        env=("DEVCTL_REDIS_URL", "REDIS_URL"),
    )
    password: str | None = setting(
        None,
        "Redis password (secret)",
        secret=True,
        env=("DEVCTL_REDIS_PASSWORD", "REDIS_PASSWORD"),
    )
    key_prefix: str = setting(
        "devconnect:", "Prefix of every DevConnect key", env=("DEVCTL_REDIS_KEY_PREFIX",)
    )
    connect_timeout: float = setting(
        2.0,
        "Seconds to wait for a connection",
        minimum=0.01,
        maximum=_SECONDS_MAX,
        env=("DEVCTL_REDIS_CONNECT_TIMEOUT",),
    )
    socket_timeout: float = setting(
        2.0,
        "Seconds to wait for a reply",
        minimum=0.01,
        maximum=_SECONDS_MAX,
        env=("DEVCTL_REDIS_SOCKET_TIMEOUT",),
    )
    tls_ca_file: str | None = setting(
        None,
        "CA certificate file (PEM) of a rediss:// server (unset: the system's CAs)",
        check=_readable_file_problem,
        env=("DEVCTL_REDIS_TLS_CA_FILE",),
    )
    tls_cert_file: str | None = setting(
        None,
        "Client certificate file (PEM), for a server that requires mutual TLS",
        check=_readable_file_problem,
        env=("DEVCTL_REDIS_TLS_CERT_FILE",),
    )
    tls_key_file: str | None = setting(
        None,
        "Client private key file (PEM) of tls_cert_file",
        check=_readable_file_problem,
        env=("DEVCTL_REDIS_TLS_KEY_FILE",),
    )


@dataclass(frozen=True)
class KafkaSettings:
    """Kafka clients (Tansu on the local engine)"""

    port: int = setting(
        9092,
        "Port of the local engine's Kafka broker",
        minimum=0,
        maximum=65535,
        env=("DEVCTL_KAFKA_PORT",),
    )
    brokers: str | None = setting(
        None,
        "Bootstrap servers for the external engine, host:port,host:port",
        check=kafka_brokers_problem,
        example="kafka-1:9092,kafka-2:9092",
        env=("DEVCTL_KAFKA_BROKERS", "KAFKA_BROKERS"),
    )
    client_id: str = setting(
        "devconnect-app",
        "Kafka client.id",
        check=_not_blank,
        env=("DEVCTL_KAFKA_CLIENT_ID", "KAFKA_CLIENT_ID"),
    )
    group_id: str = setting(
        "devconnect-group",
        "Default consumer group",
        check=_not_blank,
        env=("DEVCTL_KAFKA_GROUP_ID", "KAFKA_GROUP_ID"),
    )
    security_protocol: str = setting(
        "PLAINTEXT",
        "Kafka security.protocol",
        choices=KAFKA_PROTOCOLS,
        env=("DEVCTL_KAFKA_SECURITY_PROTOCOL",),
    )
    sasl_mechanism: str | None = setting(
        None,
        "SASL mechanism: " + ", ".join(SASL_MECHANISMS),
        check=_sasl_mechanism_problem,
        env=("DEVCTL_KAFKA_SASL_MECHANISM",),
    )
    sasl_username: str | None = setting(None, "SASL username", env=("DEVCTL_KAFKA_SASL_USERNAME",))
    sasl_password: str | None = setting(
        None, "SASL password (secret)", secret=True, env=("DEVCTL_KAFKA_SASL_PASSWORD",)
    )
    ssl_ca_location: str | None = setting(
        None,
        "CA certificate file (PEM) that signed the brokers' certificates (SSL, SASL_SSL)",
        check=_readable_file_problem,
        env=("DEVCTL_KAFKA_SSL_CA_LOCATION",),
    )
    ssl_certificate_location: str | None = setting(
        None,
        "Client certificate file (PEM), for brokers that require mutual TLS",
        check=_readable_file_problem,
        env=("DEVCTL_KAFKA_SSL_CERTIFICATE_LOCATION",),
    )
    ssl_key_location: str | None = setting(
        None,
        "Client private key file (PEM) of ssl_certificate_location",
        check=_readable_file_problem,
        env=("DEVCTL_KAFKA_SSL_KEY_LOCATION",),
    )
    ssl_key_password: str | None = setting(
        None,
        "Password of the client key (secret)",
        secret=True,
        env=("DEVCTL_KAFKA_SSL_KEY_PASSWORD",),
    )
    client_config: dict[str, Any] | None = setting(  # noqa: RUF009
        None,
        "Other librdkafka settings for every Kafka client (e.g. ssl.endpoint.identification."
        "algorithm, client.rack); devctl's own kafka.* settings and anything that holds a "
        "secret (passwords, tokens, inline PEM, OAuth or JAAS configs) are refused here",
        check=_client_config_problem,
        example="ssl.endpoint.identification.algorithm: https\nclient.rack: eu-west-1a",
    )
    # librdkafka refuses a session longer than max.poll.interval.ms (300000).
    session_timeout_ms: int | None = setting(
        None,
        "Consumer session.timeout.ms (unset: 6000 on local, librdkafka's default elsewhere)",
        minimum=1,
        maximum=300000,
        example="6000",
        env=("DEVCTL_KAFKA_SESSION_TIMEOUT_MS",),
    )
    heartbeat_interval_ms: int | None = setting(
        None,
        "Consumer heartbeat.interval.ms, below the session timeout (unset: 500 on local)",
        minimum=1,
        maximum=3600000,
        example="500",
        env=("DEVCTL_KAFKA_HEARTBEAT_INTERVAL_MS",),
    )
    # It is also librdkafka's socket.timeout.ms, which stops at 300000.
    request_timeout_ms: int = setting(
        5000,
        "Admin and metadata timeout",
        minimum=100,
        maximum=300000,
        env=("DEVCTL_KAFKA_REQUEST_TIMEOUT_MS",),
    )


@dataclass(frozen=True)
class LocalSettings:
    """The local engine"""

    redis_server: str | None = setting(
        None, "Path of a redis/valkey-server binary", env=("DEVCTL_REDIS_SERVER",)
    )
    kafka_broker: str | None = setting(None, "Path of a tansu binary", env=("DEVCTL_KAFKA_BROKER",))
    start_timeout: float = setting(
        20.0, "Seconds to wait for health on up", minimum=1, maximum=_SECONDS_MAX
    )
    stop_timeout: float = setting(
        10.0, "Seconds between SIGTERM and SIGKILL", minimum=0.1, maximum=_SECONDS_MAX
    )


@dataclass(frozen=True)
class DockerSettings:
    """The docker engine (docs/engines.md)"""

    compose_file: str | None = setting(
        None,
        "Compose file to run; unset: compose/docker-compose.yml in the working directory if it exists, else the one devctl ships",
        env=("DEVCTL_COMPOSE_FILE",),
    )
    project: str | None = setting(
        None,
        "Compose project name; unset: devctl-<hash of the data dir>, so checkouts never share containers",
        env=("DEVCTL_COMPOSE_PROJECT",),
    )
    with_ui: bool = setting(
        False, "Also run the Kafka UI (8080) and Redis Commander (8081)", env=("DEVCTL_WITH_UI",)
    )
    postgres_port: int = setting(
        5432, "Port of the docker engine's PostgreSQL", minimum=1, maximum=65535
    )
    start_timeout: float = setting(
        180.0,
        "Seconds `up` waits for the containers' health (first runs pull images)",
        minimum=1,
        maximum=_SECONDS_MAX,
    )


@dataclass(frozen=True)
class TopicDefaults:
    """Defaults of each topic (a topic may override them)"""

    partitions: int = setting(3, "Partitions of a new topic", minimum=1, maximum=MAX_PARTITIONS)
    replication_factor: int = setting(
        1, "Replication factor (at most the number of brokers)", minimum=1, maximum=32767
    )
    dead_letter: bool = setting(True, "Create <topic><suffix> for each topic")
    dead_letter_suffix: str = setting(".dlq", "Dead-letter topic suffix")


@dataclass(frozen=True)
class StateSettings:
    """The Redis domain: sessions, user cache, presence, rate limits, message cache, notifications"""

    session_ttl: int = setting(86400, "Session lifetime in seconds", minimum=1, maximum=_TTL_MAX)
    session_sliding: bool = setting(False, "Extend a session's TTL on each validation")
    user_cache_ttl: int = setting(1800, "User cache TTL in seconds", minimum=1, maximum=_TTL_MAX)
    presence_instance_ttl: int = setting(
        15,
        "Seconds an API instance stays alive without a heartbeat",
        minimum=1,
        maximum=_TTL_MAX,
    )
    # The cache of a conversation is read whole on every chat open.
    message_cache_size: int = setting(
        50, "Recent messages kept per conversation", minimum=1, maximum=100000
    )
    message_cache_ttl: int = setting(
        3600, "Message cache TTL in seconds", minimum=1, maximum=_TTL_MAX
    )
    # Both bound what one notification write scans and rewrites (a Lua script over the list).
    notifications_max: int = setting(
        100, "Notifications kept per user (the oldest are dropped)", minimum=1, maximum=1000
    )
    notifications_ttl: int = setting(
        30 * 86400,
        "Seconds a user's notifications live after the last new one",
        minimum=1,
        maximum=_TTL_MAX,
    )
    # setting() returns a dataclasses.field whose default is None: nothing shared.
    rate_limits: dict[str, Any] | None = setting(  # noqa: RUF009
        None,
        "Rate-limit policies overriding the defaults (login_ip 20 and login_email 5 per "
        "15 min, signup_ip 20 per 10 min, api_user 600/min, connection_request per day free 10 / silver 100 / "
        "gold unlimited, chat_message 30/min). Per policy: limit (null: unlimited), "
        "period (seconds), subject (ip, email, user or key); or tiers and default_tier",
        check=_rate_limits_problem,
        example=(
            "login_ip: {limit: 20, period: 900, subject: ip}\n"
            "connection_request:\n"
            "  period: 86400\n"
            "  tiers: {free: 10, silver: 100, gold: null}\n"
            "  default_tier: free"
        ),
    )


@dataclass(frozen=True)
class EventsSettings:
    """Events: envelope, producer, consumer runtime (docs/events.md)"""

    source: str = setting(
        "/devconnect/devctl",
        "CloudEvents 'source' of published events",
        check=_event_source_problem,
    )
    producer_queue_size: int = setting(
        100000,
        "Events the producer may hold locally before the queue is full",
        minimum=1,
        maximum=_INT32_MAX,
    )
    producer_queue_full: str = setting(
        "error",
        "When the queue is full: error (raise at once) or block",
        choices=("error", "block"),
    )
    producer_block_timeout: float = setting(
        5.0,
        "Seconds 'block' waits for room before raising",
        minimum=0,
        maximum=_SECONDS_MAX,
    )
    delivery_timeout_ms: int = setting(
        120000,
        "How long a queued event waits for the broker before it fails (above linger_ms)",
        minimum=1,
        maximum=_INT32_MAX,
    )
    linger_ms: int = setting(5, "Producer linger.ms (batching delay)", minimum=0, maximum=900000)
    # confluent-kafka's consume() takes at most 1,000,000 messages per call.
    consumer_batch_size: int = setting(
        100, "Records a consumer takes per poll", minimum=1, maximum=1000000
    )
    consumer_max_retries: int = setting(
        3, "Retries of a failing handler before DLQ", minimum=0, maximum=1000
    )
    consumer_backoff_ms: int = setting(
        200,
        "First retry delay (doubles each retry)",
        minimum=0,
        maximum=_SECONDS_MAX * 1000,
    )
    consumer_backoff_max_ms: int = setting(
        5000,
        "Longest retry delay (at least consumer_backoff_ms)",
        minimum=0,
        maximum=_SECONDS_MAX * 1000,
    )
    idempotency_ttl: int = setting(
        604800,
        "Seconds a handled event id is remembered per group",
        minimum=1,
        maximum=_TTL_MAX,
    )


def _origins_problem(value: str) -> str | None:
    origins = [o.strip() for o in value.split(",") if o.strip()]
    if not origins:
        return "give at least one origin, e.g. http://localhost:5173"
    for origin in origins:
        if origin == "*":
            return "'*' cannot be used: the web client sends credentials, which need exact origins"
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            return f"'{origin}' is not an origin (scheme://host[:port], e.g. http://localhost:5173)"
    return None


# Query parameters a PostgreSQL URL may carry (asyncpg's connect() takes these by name).
_PG_QUERY = {"sslmode", "ssl", "application_name", "target_session_attrs", "options"}
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _database_url_problem(value: str) -> str | None:
    # Never quotes the value: it may hold a password.
    usage = "use postgresql://user:password@host:port/db, or sqlite:///path (unset: SQLite in the data dir)"
    try:
        parts = urlsplit(value)
        scheme = parts.scheme.split("+")[0]
        _ = parts.hostname, parts.port  # a bad IPv6 literal or port raises here
    except ValueError as exc:
        return f"not a valid URL ({exc}); {usage}"
    if scheme not in ("sqlite", "postgresql", "postgres"):
        return usage
    if scheme == "sqlite":
        return None
    if not parts.hostname:
        return f"a PostgreSQL URL needs a host; {usage}"
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _PG_QUERY)
    if unknown:
        return f"unsupported parameter {', '.join(unknown)} (supported: {', '.join(sorted(_PG_QUERY))})"
    modes = query.get("sslmode", [])
    if any(mode not in _SSL_MODES for mode in modes):
        return f"sslmode must be one of {', '.join(_SSL_MODES)}"
    return None


_SECRET_MIN_BYTES = 16


def _api_secret_problem(value: str) -> str | None:
    if len(value.encode("utf-8")) < _SECRET_MIN_BYTES:
        return f"must be at least {_SECRET_MIN_BYTES} bytes (e.g. `openssl rand -hex 32`)"
    return None


@dataclass(frozen=True)
class ApiSettings:
    """The embedded DevConnect API: `devctl serve` (docs/api.md)"""

    host: str = setting(
        "127.0.0.1", "Address the API listens on", check=_not_blank, env=("DEVCTL_API_HOST",)
    )
    port: int = setting(
        3000,
        "Port of the first API instance; further instances take the ports above it",
        minimum=1,
        maximum=65535,
        env=("DEVCTL_API_PORT", "PORT"),
    )
    instances: int = setting(
        1,
        "API instances `devctl serve` starts",
        minimum=1,
        maximum=32,
        env=("DEVCTL_API_INSTANCES",),
    )
    frontend_url: str = setting(
        "http://localhost:5173",
        "Origins the API answers CORS for, comma-separated (exact origins: credentials are sent)",
        check=_origins_problem,
        env=("DEVCTL_FRONTEND_URL", "FRONTEND_URL"),
    )
    database_url: str | None = setting(
        None,
        "Database URL (secret: it may hold a password); unset: SQLite in WAL mode in the data dir",
        secret=True,
        check=_database_url_problem,
        env=("DEVCTL_DATABASE_URL", "DATABASE_URL"),
    )
    secret: str | None = setting(
        None,
        "Key that signs session cookies (secret); unset: one is generated into the data dir on first run",
        secret=True,
        check=_api_secret_problem,
        env=("DEVCTL_API_SECRET", "JWT_SECRET"),
    )
    cookie_secure: bool = setting(
        False,
        "Mark the session cookie Secure (browsers then send it over HTTPS only)",
        env=("DEVCTL_API_COOKIE_SECURE",),
    )
    outbox_batch_size: int = setting(
        500, "Outbox rows the relay publishes per round", minimum=1, maximum=100000
    )
    outbox_retention: float = setting(
        86400.0,
        "Seconds a published outbox row is kept before it is pruned",
        minimum=0,
        maximum=_TTL_MAX,
    )
    outbox_lease: float = setting(
        10.0,
        "Seconds a relay's claim on outbox rows lasts before another instance may take them (SQLite)",
        minimum=0.5,
        maximum=_SECONDS_MAX,
    )
    body_timeout: float = setting(
        15.0,
        "Seconds a request body may take to arrive before the answer is 408",
        minimum=0.1,
        maximum=_SECONDS_MAX,
        env=("DEVCTL_API_BODY_TIMEOUT",),
    )
    drain_timeout: float = setting(
        10.0,
        "Seconds a stopping instance waits for in-flight requests and the outbox",
        minimum=0,
        maximum=_SECONDS_MAX,
    )


@dataclass(frozen=True)
class Config:
    """Every setting: the top-level keys, then one field per section."""

    engine: str = setting(
        DEFAULT_ENGINE,
        "Which engine runs the stack; left unset, commands use the engine of the last "
        "`devctl up` (so this key is best left commented out)",
        choices=ENGINES,
        env=("DEVCTL_ENGINE",),
    )
    data_dir: str = setting(
        ".devctl",
        "State directory: pidfiles, logs, Redis data",
        check=_not_blank,
        env=("DEVCTL_DATA_DIR",),
    )
    redis: RedisSettings = field(default_factory=RedisSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    local: LocalSettings = field(default_factory=LocalSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    topic_defaults: TopicDefaults = field(default_factory=TopicDefaults)
    state: StateSettings = field(default_factory=StateSettings)
    events: EventsSettings = field(default_factory=EventsSettings)
    api: ApiSettings = field(default_factory=ApiSettings)


def _section_of(f: dataclasses.Field[Any]) -> type | None:
    """The section class of a field of Config, or None for a key."""
    return f.type if isinstance(f.type, type) and dataclasses.is_dataclass(f.type) else None


def _collect(cls: type, prefix: str, keys: dict[str, Key], sections: dict[str, str]) -> None:
    for f in dataclasses.fields(cls):
        section = _section_of(f)
        if section is not None:
            sections[f.name] = (section.__doc__ or f.name).strip()
            _collect(section, f"{f.name}.", keys, sections)
        else:
            spec = f.metadata[_META]
            spec._bind(prefix + f.name, f.type)
            keys[spec.key] = spec


# Derived from the classes above, once at import.
KEYS: dict[str, Key] = {}  # dotted key -> Key, in declaration order
SECTIONS: dict[str, str] = {}  # section name -> its title in the reference
_collect(Config, "", KEYS, SECTIONS)


def build_config(values: dict[str, Any]) -> Config:
    """The typed Config of already validated values (dotted key -> value, every key)."""

    def build(cls: Any, prefix: str) -> Any:
        return cls(
            **{
                f.name: build(f.type, f"{f.name}.") if _section_of(f) else values[prefix + f.name]
                for f in dataclasses.fields(cls)
            }
        )

    config: Config = build(Config, "")
    return config


def flatten_config(config: Config) -> dict[str, Any]:
    """Dotted key -> value of every key, in declaration order."""
    out: dict[str, Any] = {}
    for key in KEYS:
        section, _, leaf = key.rpartition(".")
        out[key] = getattr(getattr(config, section) if section else config, leaf)
    return out


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
