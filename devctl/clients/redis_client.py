"""Redis clients with timeouts, so a hung server can never hang a caller.

``make_redis`` gives a redis-py client, for the domain; ``make_async_redis`` the
same client for asyncio (the API), with the same options. ``PlainRedis`` is one plain
socket speaking RESP2, for the few read-only commands a CLI command sends once
(`status`'s probe, `sessions count`): importing redis-py costs ~90 ms, most of it
asyncio, which the package's ``__init__`` imports whatever submodule is asked for
(``import redis.client`` too), more than those commands take otherwise.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import unquote, urlsplit

from devctl.clients.endpoints import Capabilities, Endpoints, unreachable_hint
from devctl.config.loader import Settings, redact_url
from devctl.errors import RedisUnavailable

if TYPE_CHECKING:
    import redis
    import redis.asyncio


def _require_running(endpoints: Endpoints) -> None:
    if "redis" in endpoints.not_running:
        raise RedisUnavailable(
            f"redis of the {endpoints.engine} stack is not running",
            hint=endpoints.unreachable_hint,
        )


def _client_options(
    endpoints: Endpoints, settings: Settings, decode: bool, listener: bool = False
) -> dict[str, Any]:
    """The options of both clients; the URL gives host, port, database and TLS.

    A ``listener`` (a pub/sub subscription) waits for messages as long as it takes:
    no read timeout, which would drop and resubscribe it (losing what is published
    meanwhile) whenever a channel is quiet; the health checks find a dead connection.
    """
    _require_running(endpoints)
    conf = settings.redis
    # A started server's URL carries the password it was started with (or none):
    # one source of credentials, whatever a later command's environment says.
    password = None if endpoints.caps.starts_servers else conf.password or None
    # from_url sets no retries: a refused or hung server costs one timeout, not ten.
    options: dict[str, Any] = {}
    if conf.tls_key_file and not conf.tls_cert_file:
        from devctl.errors import ConfigError

        raise ConfigError(
            "redis.tls_key_file needs redis.tls_cert_file (the certificate of that key)",
            key="redis.tls_cert_file",
        )
    if endpoints.redis_url.startswith("rediss://"):
        # TLS: the URL says so; the files say whom to trust and who we are.
        for option, value in (
            ("ssl_ca_certs", conf.tls_ca_file),
            ("ssl_certfile", conf.tls_cert_file),
            ("ssl_keyfile", conf.tls_key_file),
        ):
            if value:
                options[option] = value
    return options | {
        "password": password,
        "socket_connect_timeout": conf.connect_timeout,
        "socket_timeout": None if listener else conf.socket_timeout,
        "decode_responses": decode,
        "health_check_interval": 30,
        "client_name": "devctl",
    }


def make_redis(
    endpoints: Endpoints, settings: Settings, *, decode: bool = True, listener: bool = False
) -> redis.Redis:
    import redis

    options = _client_options(endpoints, settings, decode, listener)
    return redis.Redis.from_url(endpoints.redis_url, **options)


def make_async_redis(
    endpoints: Endpoints, settings: Settings, *, decode: bool = True, listener: bool = False
) -> redis.asyncio.Redis:
    """``make_redis`` for asyncio: a pool of connections opened as tasks need them."""
    import redis.asyncio

    options = _client_options(endpoints, settings, decode, listener)
    return redis.asyncio.Redis.from_url(endpoints.redis_url, **options)


def ping(client: redis.Redis, url: str, caps: Capabilities) -> float:
    """PING once; return the latency in milliseconds or raise RedisUnavailable."""
    import redis

    started = time.perf_counter()
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} refused the credentials",
            hint="set DEVCTL_REDIS_PASSWORD or put the password in REDIS_URL",
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(
            f"Redis at {redact_url(url)} is not reachable: {exc}", hint=unreachable_hint(caps)
        ) from exc
    return (time.perf_counter() - started) * 1000


@dataclass(frozen=True)
class PlainTarget:
    """Where and as whom a plain-TCP Redis URL is reached, as redis-py's from_url reads it."""

    host: str
    port: int
    username: str | None
    password: str | None
    db: int | None  # None: a path that is not a database number (redis-py refuses it)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def plain_target(url: str, settings: Settings, caps: Capabilities) -> PlainTarget | None:
    """The PlainTarget of ``url``; None for what only redis-py knows (TLS, unix sockets,
    query options)."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        return None
    if parts.scheme != "redis" or not parts.hostname or parts.query:
        return None
    # As make_redis: a started server's URL carries its password (or none); servers
    # devctl did not start fall back to the configured one. A password in the URL wins, as in
    # redis-py's from_url.
    password = unquote(parts.password) if parts.password else None
    if password is None and not caps.starts_servers:
        password = settings.redis.password or None
    username = unquote(parts.username) if parts.username else None
    path = unquote(parts.path).replace("/", "")
    db = int(path) if path.isdigit() else 0 if not path else None
    return PlainTarget(parts.hostname, port, username, password, db)


class ResponseError(Exception):
    """An error reply of the server (named as redis-py names it)."""


class CredentialsRefused(ConnectionError):
    """The server refused the password, or wants one and none was given."""


# The replies of Redis >= 6 and < 6 to AUTH when no password is configured.
_NO_PASSWORD_SET = re.compile(r"without any password configured|no password is set")

Reply: TypeAlias = "str | int | list[Reply] | ResponseError | None"


class PlainRedis:
    """One socket speaking RESP2: simple strings, errors, integers, bulk strings, arrays.

    Failures raise the built-in ConnectionError / TimeoutError (CredentialsRefused
    for a refused password) with redis-py's wording, so an error reads the same
    whichever client met it.
    """

    def __init__(self, sock: socket.socket, target: PlainTarget) -> None:
        self.sock = sock
        self.target = target
        self.buffer = b""

    @classmethod
    def connect(
        cls,
        target: PlainTarget,
        connect_timeout: float | None,
        read_timeout: float | None,
        client_name: str | None = None,
    ) -> PlainRedis:
        """Connect, AUTH when there is a password, SELECT a database other than 0."""
        try:
            sock = socket.create_connection((target.host, target.port), timeout=connect_timeout)
        except TimeoutError as exc:
            raise TimeoutError("Timeout connecting to server") from exc
        except OSError as exc:
            raise ConnectionError(_connect_failure(exc, target.address)) from exc
        sock.settimeout(read_timeout)
        conn = cls(sock, target)
        try:
            if target.password is not None:
                auth = [target.username, target.password] if target.username else [target.password]
                reply = conn.send(["AUTH", *auth])
                # A server without a password refuses AUTH yet answers what comes
                # next, and redis-py carries on there too: the next command decides.
                if isinstance(reply, ResponseError) and not _NO_PASSWORD_SET.search(str(reply)):
                    raise CredentialsRefused(str(reply))
            if client_name:
                conn.call("CLIENT", "SETNAME", client_name)
            if target.db:
                conn.call("SELECT", str(target.db))
        except BaseException:
            conn.close()
            raise
        return conn

    def call(self, *args: str) -> Reply:
        """Send one command and return its reply; an error reply is raised."""
        reply = self.send(args)
        if isinstance(reply, ResponseError):
            message = str(reply)
            if message.startswith(("NOAUTH", "WRONGPASS")):
                raise CredentialsRefused(message)
            # redis-py drops the generic code: "DB index is out of range", not "ERR DB ...".
            raise ResponseError(message.removeprefix("ERR "))
        return reply

    def send(self, args: Sequence[str]) -> Reply:
        """Send one command and return its reply, an error reply as a ResponseError value."""
        encoded = [arg.encode() for arg in args]
        request = b"*%d\r\n" % len(encoded) + b"".join(
            b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded
        )
        try:
            self.sock.sendall(request)
        except TimeoutError as exc:
            raise TimeoutError("Timeout writing to socket") from exc
        except OSError as exc:
            errno, message = exc.args[:2] if len(exc.args) > 1 else ("UNKNOWN", exc)
            raise ConnectionError(f"Error {errno} while writing to socket. {message}.") from exc
        try:
            return self._reply()
        except TimeoutError as exc:
            raise TimeoutError("Timeout reading from socket") from exc
        except _ClosedByServer:
            raise ConnectionError("Connection closed by server.") from None
        except _NotResp as exc:
            raise ConnectionError(f"Protocol Error: {exc}") from None
        except OSError as exc:
            raise ConnectionError(
                f"Error while reading from {self.target.address} : {exc.args}"
            ) from exc

    def scan_iter(self, match: str, count: int = 1000) -> Iterator[str]:
        """The keys matching ``match``, by SCAN (as redis-py's scan_iter)."""
        cursor = "0"
        while True:
            reply = self.call("SCAN", cursor, "MATCH", match, "COUNT", str(count))
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
                raise ConnectionError(f"unexpected reply to SCAN: {reply!r:.80}")
            cursor = str(reply[0])
            yield from (str(key) for key in reply[1])
            if cursor == "0":
                return

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> PlainRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reply(self) -> Reply:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"-":
            return ResponseError(rest.decode(errors="replace"))
        if kind == b":":
            return _number(rest)
        if kind == b"$":
            size = _number(rest)
            if size < 0:
                return None
            return self._exactly(size + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            size = _number(rest)
            return None if size < 0 else [self._reply() for _ in range(size)]
        raise _NotResp(repr(line[:40]))

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _ClosedByServer
        self.buffer += chunk


# Raised while reading, turned into ConnectionError by `send`; not OSErrors, so that
# they are not taken for a socket's.
class _ClosedByServer(Exception):
    """The server closed the connection."""


class _NotResp(Exception):
    """The server answered something that is not RESP: not a Redis."""


def _number(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise _NotResp(repr(text[:40])) from None


def _connect_failure(exc: OSError, address: str) -> str:
    """redis-py's words for a failed connect (``format_error_message``)."""
    if not exc.args:
        return f"Error connecting to {address}."
    if len(exc.args) == 1:
        return f"Error {exc.args[0]} connecting to {address}."
    return f"Error {exc.args[0]} connecting to {address}. {exc.args[1]}."


def plain_redis(
    endpoints: Endpoints, settings: Settings, client_name: str | None = "devctl"
) -> PlainRedis | None:
    """A connected PlainRedis for the stack's Redis with the configured timeouts, or
    None when only redis-py can reach that URL (then use ``make_redis``).

    Refuses a Redis the engine knows is not running, as ``make_redis`` does.
    """
    _require_running(endpoints)
    target = plain_target(endpoints.redis_url, settings, endpoints.caps)
    if target is None or target.db is None:
        return None
    conf = settings.redis
    return PlainRedis.connect(target, conf.connect_timeout, conf.socket_timeout, client_name)
