"""Every environment variable devctl reads, in one place.

DevConnect's own names (REDIS_URL, KAFKA_BROKERS, KAFKA_CLIENT_ID, KAFKA_GROUP_ID)
are honoured so the same .env file serves the app and devctl. devctl's own names
start with DEVCTL_. When both exist for a key, the DEVCTL_ name wins.
"""

from __future__ import annotations

# dotted config key -> environment names, highest priority first
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "engine": ("DEVCTL_ENGINE",),
    "data_dir": ("DEVCTL_DATA_DIR",),
    "redis.port": ("DEVCTL_REDIS_PORT",),
    "redis.url": ("DEVCTL_REDIS_URL", "REDIS_URL"),
    "redis.password": ("DEVCTL_REDIS_PASSWORD", "REDIS_PASSWORD"),
    "redis.key_prefix": ("DEVCTL_REDIS_KEY_PREFIX",),
    "redis.connect_timeout": ("DEVCTL_REDIS_CONNECT_TIMEOUT",),
    "redis.socket_timeout": ("DEVCTL_REDIS_SOCKET_TIMEOUT",),
    "kafka.port": ("DEVCTL_KAFKA_PORT",),
    "kafka.brokers": ("DEVCTL_KAFKA_BROKERS", "KAFKA_BROKERS"),
    "kafka.client_id": ("DEVCTL_KAFKA_CLIENT_ID", "KAFKA_CLIENT_ID"),
    "kafka.group_id": ("DEVCTL_KAFKA_GROUP_ID", "KAFKA_GROUP_ID"),
    "kafka.security_protocol": ("DEVCTL_KAFKA_SECURITY_PROTOCOL",),
    "kafka.sasl_mechanism": ("DEVCTL_KAFKA_SASL_MECHANISM",),
    "kafka.sasl_username": ("DEVCTL_KAFKA_SASL_USERNAME",),
    "kafka.sasl_password": ("DEVCTL_KAFKA_SASL_PASSWORD",),
    "kafka.session_timeout_ms": ("DEVCTL_KAFKA_SESSION_TIMEOUT_MS",),
    "kafka.heartbeat_interval_ms": ("DEVCTL_KAFKA_HEARTBEAT_INTERVAL_MS",),
    "kafka.request_timeout_ms": ("DEVCTL_KAFKA_REQUEST_TIMEOUT_MS",),
    "local.redis_server": ("DEVCTL_REDIS_SERVER",),
    "local.kafka_broker": ("DEVCTL_KAFKA_BROKER",),
}

CONFIG_FILE = "DEVCTL_CONFIG"
DEBUG = "DEVCTL_DEBUG"
