"""The topic-level configs Apache Kafka knows, with the type of each value.

Apache Kafka refuses an unknown topic config name (INVALID_CONFIG); the embedded
broker (Tansu 0.6) stores any name and any value without a word, so a typo such
as ``retention.sm`` would be kept and silently do nothing. devctl checks names and
values against this list before asking any broker. Source: the "Topic-Level
Configs" of the Kafka 3.9 documentation.
"""

from __future__ import annotations

import difflib

# name -> kind: "long" / "int" (integers; int is 32-bit), "double", "boolean",
# "list" (comma-separated), "string"; or a tuple of the allowed values.
TOPIC_CONFIGS: dict[str, str | tuple[str, ...]] = {
    "cleanup.policy": "list",
    "compression.gzip.level": "int",
    "compression.lz4.level": "int",
    "compression.type": ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
    "compression.zstd.level": "int",
    "delete.retention.ms": "long",
    "file.delete.delay.ms": "long",
    "flush.messages": "long",
    "flush.ms": "long",
    "follower.replication.throttled.replicas": "list",
    "index.interval.bytes": "int",
    "leader.replication.throttled.replicas": "list",
    "local.retention.bytes": "long",
    "local.retention.ms": "long",
    "max.compaction.lag.ms": "long",
    "max.message.bytes": "int",
    "message.downconversion.enable": "boolean",
    "message.format.version": "string",
    "message.timestamp.after.max.ms": "long",
    "message.timestamp.before.max.ms": "long",
    "message.timestamp.difference.max.ms": "long",
    "message.timestamp.type": ("CreateTime", "LogAppendTime"),
    "min.cleanable.dirty.ratio": "double",
    "min.compaction.lag.ms": "long",
    "min.insync.replicas": "int",
    "preallocate": "boolean",
    "remote.log.copy.disable": "boolean",
    "remote.log.delete.on.disable": "boolean",
    "remote.storage.enable": "boolean",
    "retention.bytes": "long",
    "retention.ms": "long",
    "segment.bytes": "int",
    "segment.index.bytes": "int",
    "segment.jitter.ms": "long",
    "segment.ms": "long",
    "unclean.leader.election.enable": "boolean",
}

_CLEANUP_POLICIES = {"delete", "compact"}
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


def topic_config_problem(name: str, value: str) -> str | None:
    """Why Kafka would refuse ``name=value`` as a topic config, or None."""
    kind = TOPIC_CONFIGS.get(name)
    if kind is None:
        close = difflib.get_close_matches(name, list(TOPIC_CONFIGS), n=1)
        suggestion = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown topic config '{name}'{suggestion}"
    if isinstance(kind, tuple):
        if value not in kind:
            return f"{name} must be one of {', '.join(kind)}, got {value!r}"
    elif kind in _RANGES:
        low, high = _RANGES[kind]
        try:
            number = int(value)
        except ValueError:
            return f"{name} must be an integer, got {value!r}"
        if not low <= number <= high:
            return f"{name} is out of range, got {value!r}"
    elif kind == "double":
        try:
            float(value)
        except ValueError:
            return f"{name} must be a number, got {value!r}"
    elif kind == "boolean":
        if value.lower() not in ("true", "false"):
            return f"{name} must be true or false, got {value!r}"
    elif name == "cleanup.policy":
        policies = {p.strip() for p in value.split(",")}
        if not policies <= _CLEANUP_POLICIES:
            return f"cleanup.policy must be delete, compact or both, got {value!r}"
    return None
