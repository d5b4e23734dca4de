"""The one error hierarchy of devctl.

The domain raises these; the CLI renders them in one place (``devctl.cli.main``)
and turns ``exit_code`` into the process exit code; ``error_code`` is the stable machine
name shown in ``--json`` errors (``{"error": {"code", "message", "hint"}}``), so
scripts branch on it rather than on the message. The exit codes are documented in
the README:

    0  success
    1  a check or an operation failed
    2  usage or configuration error (bad flag, bad config file, port taken,
       binary missing: something the user must change before retrying); also a
       destructive command refused on a protected context (``context-protected``)
    3  the stack is not running or not reachable
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130


class DevctlError(Exception):
    """Base of every expected failure; carries a user-facing message and a hint.

    ``field`` is the domain's name of the input the error is about (``reset_to``,
    ``data_dir``, ``redis.port``: a setting key where there is one); messages speak
    of it in the domain's words and each front end names it its own way (the CLI by
    its flag, see ``devctl.cli.flags``). ``data`` holds the structured facts; by
    convention ``data["value"]`` is the refused input as it was given (the field's
    value is wrong) and ``data["examples"]`` valid values for it. Without a
    ``value``, the field is the remedy (changing it would help).
    """

    exit_code = EXIT_FAILED
    # Named error_code, not code: DeliveryFailed.code is the broker's numeric error.
    error_code = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        details: str | None = None,
        field: str | None = None,
        data: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.hint = hint
        # Shown only when the user asks for details (log tails, low-level causes).
        self.details = details
        self.field = field
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return self.message


class OperationFailed(DevctlError):
    """An operation ran and did not succeed (exit 1)."""

    error_code = "operation-failed"


class UsageError(DevctlError):
    """Bad arguments that the command line parser could not catch itself."""

    error_code = "usage"
    exit_code = EXIT_USAGE


class ConfigError(DevctlError):
    """Invalid configuration: bad YAML, unknown key, wrong type, bad value."""

    error_code = "config"
    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ):
        where = []
        if source:
            where.append(f"{source}:{line}" if line else source)
        if key:
            where.append(f"key '{key}'")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message, hint=hint)
        self.source = source
        self.key = key
        self.line = line


class BinaryNotFound(DevctlError):
    """A server binary the local engine needs cannot be found."""

    error_code = "binary-not-found"
    exit_code = EXIT_USAGE


class PortInUse(DevctlError):
    """A port the local engine wants is taken by another process."""

    error_code = "port-in-use"
    exit_code = EXIT_USAGE


class ServiceStartError(DevctlError):
    """A server process did not become healthy."""

    error_code = "service-start-failed"


class StackNotRunning(DevctlError):
    """The stack is not running, or its endpoints do not answer."""

    error_code = "not-running"
    exit_code = EXIT_NOT_RUNNING

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = "`devctl status` shows what runs; `devctl up` starts the local stack",
        **kw: Any,
    ):
        super().__init__(message, hint=hint, **kw)


class RedisUnavailable(StackNotRunning):
    """Redis did not answer within the configured timeouts."""

    error_code = "redis-unavailable"


class KafkaUnavailable(StackNotRunning):
    """Kafka did not answer within the configured timeouts."""

    error_code = "kafka-unavailable"


class UnsupportedOperation(DevctlError):
    """The engine or broker cannot do what was asked (e.g. grow a topic on Tansu)."""

    error_code = "unsupported"


class NotFound(DevctlError):
    """A named thing (topic, session, group) does not exist."""

    error_code = "not-found"


class DatabaseUnavailable(StackNotRunning):
    """The API's database did not answer within its timeouts."""

    error_code = "database-unavailable"

    def __init__(
        self,
        message: str,
        *,
        hint: str
        | None = "check the database URL (api.database_url / DATABASE_URL) and that the server runs",
        **kw: Any,
    ):
        super().__init__(message, hint=hint, **kw)


class InvalidInput(UsageError):
    """A request or argument that breaks a rule of the data (bad email, weak password)."""

    error_code = "invalid-input"


class Unauthenticated(DevctlError):
    """No valid session: missing, malformed, tampered, expired or revoked token."""

    error_code = "unauthenticated"


class Forbidden(DevctlError):
    """Authenticated, but not allowed to do this (edit another user, review another's request)."""

    error_code = "forbidden"


class Conflict(DevctlError):
    """The change collides with existing data (email taken, request already exists)."""

    error_code = "conflict"


class RateLimited(DevctlError):
    """A rate limit refused the operation; ``data`` holds the limit, use and retry time."""

    error_code = "rate-limited"


class TooManyConnections(RateLimited):
    """One user holds as many real-time connections on an instance as it allows."""

    error_code = "too-many-connections"


class ContextProtected(DevctlError):
    """A destructive operation on a protected context without its name confirmed (exit 2)."""

    error_code = "context-protected"
    exit_code = EXIT_USAGE
