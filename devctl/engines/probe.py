"""Health probes shared by every engine: one PING, one metadata request."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from devctl.clients.endpoints import Endpoints, unreachable_hint
from devctl.config.loader import Settings, redact_url
from devctl.errors import RedisUnavailable

# The clients are imported by the probe that uses them: confluent_kafka costs ~25 ms
# to import, and a command that reaches one service must not pay for the other.
# Redis is probed over a plain socket (see _resp_probe): redis-py costs ~90 ms to
# import, most of `devctl status`, for one PING and one INFO.


@dataclass(frozen=True)
class ProbeResult:
    latency_ms: float
    version: str | None = None
    detail: str | None = None


def probe_redis(
    url: str, settings: Settings, timeout: float | None = None, engine: str = "local"
) -> ProbeResult:
    target = _plain_redis_target(url, settings, engine)
    if target is None:
        return _probe_redis_py(url, settings, timeout, engine)
    conf = settings.redis
    connect_timeout = conf.connect_timeout if timeout is None else timeout
    read_timeout = conf.socket_timeout if timeout is None else timeout
    return _resp_probe(url, engine, target, connect_timeout, read_timeout)


@dataclass(frozen=True)
class _RedisTarget:
    host: str
    port: int
    username: str | None
    password: str | None


def _plain_redis_target(url: str, settings: Settings, engine: str) -> _RedisTarget | None:
    """Where and how to reach a plain-TCP Redis URL; None for what only redis-py knows
    (TLS, unix sockets, query options), which is then probed with redis-py."""
    try:
        parts = urlsplit(url)
        port = parts.port or 6379
    except ValueError:
        return None
    if parts.scheme != "redis" or not parts.hostname or parts.query:
        return None
    # As make_redis: the local engine's URL carries its password (or none); other
    # engines fall back to the configured one. A password in the URL wins, as in
    # redis-py's from_url.
    password = unquote(parts.password) if parts.password else None
    if password is None and engine != "local":
        password = settings.redis.password or None
    username = unquote(parts.username) if parts.username else None
    return _RedisTarget(parts.hostname, port, username, password)


def _resp_probe(
    url: str, engine: str, target: _RedisTarget, connect_timeout: float, read_timeout: float
) -> ProbeResult:
    """AUTH (when there is a password), PING and INFO server over one socket.

    Errors read as make_redis/ping's would: credentials refused, or not reachable.
    """

    def unreachable(reason: str) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis at {redact_url(url)} is not reachable: {reason}",
            hint=unreachable_hint(engine),
        )

    started = time.perf_counter()
    try:
        sock = socket.create_connection((target.host, target.port), timeout=connect_timeout)
    except TimeoutError as exc:
        raise unreachable("Timeout connecting to server") from exc
    except OSError as exc:
        raise unreachable(
            f"Error {exc.errno} connecting to {target.host}:{target.port}. {exc.strerror}."
        ) from exc
    with sock:
        sock.settimeout(read_timeout)
        reader = _RespReader(sock)
        try:
            if target.password is not None:
                auth = [target.username, target.password] if target.username else [target.password]
                reply = reader.call("AUTH", *auth)
                # A server without a password refuses AUTH yet answers PING, and
                # redis-py carries on there too: PING decides.
                if isinstance(reply, _RespError) and not _NO_PASSWORD_SET.search(reply.message):
                    raise _credentials_refused(url) from None
            reply = reader.call("PING")
            if isinstance(reply, _RespError):
                if reply.message.startswith("NOAUTH"):
                    raise _credentials_refused(url)
                raise unreachable(reply.message)
            latency = (time.perf_counter() - started) * 1000
            # Managed Redis may disable INFO; PING is what counts.
            info = reader.call("INFO", "server")
        except TimeoutError as exc:
            raise unreachable("Timeout reading from socket") from exc
        except OSError as exc:
            raise unreachable(
                f"Error while reading from {target.host}:{target.port}: {exc}"
            ) from exc
    if not isinstance(info, str):
        return ProbeResult(latency)
    fields = dict(
        line.split(":", 1) for line in info.splitlines() if ":" in line and not line.startswith("#")
    )
    name = "valkey" if "valkey_version" in fields else "redis"
    version = fields.get("valkey_version") or fields.get("redis_version")
    return ProbeResult(latency, f"{name} {version}")


def _credentials_refused(url: str) -> RedisUnavailable:
    return RedisUnavailable(
        f"Redis at {redact_url(url)} refused the credentials",
        hint="set DEVCTL_REDIS_PASSWORD or put the password in REDIS_URL",
    )


# The replies of Redis >= 6 and < 6 to AUTH when no password is configured.
_NO_PASSWORD_SET = re.compile(r"without any password configured|no password is set")


@dataclass(frozen=True)
class _RespError:
    message: str


class _RespReader:
    """The few RESP2 replies the probe needs: simple strings, errors, integers, bulk."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def call(self, *args: str) -> str | int | _RespError | None:
        encoded = [arg.encode() for arg in args]
        request = b"*%d\r\n" % len(encoded) + b"".join(
            b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in encoded
        )
        self.sock.sendall(request)
        return self._reply()

    def _reply(self) -> str | int | _RespError | None:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode(errors="replace")
        if kind == b"-":
            return _RespError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            return self._exactly(size + 2)[:-2].decode(errors="replace")
        raise ConnectionError(f"unexpected reply {line[:40]!r}")

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
            raise ConnectionError("Connection closed by server.")
        self.buffer += chunk


def _probe_redis_py(
    url: str, settings: Settings, timeout: float | None, engine: str
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
