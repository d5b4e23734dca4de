"""Real-time checks: Socket.IO chat, presence and live notifications across two instances.

The targets are two API instances sharing one database: the first two healthy ones
of a `devctl serve` running in the data dir, else two of the run's own (started one
after the other on a SQLite database in a scratch directory of the data dir, with
the notifications consumer when no serve runs one), stopped and deleted at the end.
With ``--api-url`` both clients use that one API (the cross-instance part is then
not exercised, and the note says so).

Three check users (``devctl-check+<run id>-rta|rtb|rtc@devctl.invalid``, the api
checks' scheme, so their leftovers clean these too) sign up; A (instance 1) and B
(instance 2) become connections; B's coming online is seen once by A, a message
crosses the instances both ways with the right ``fromUserId``, a spoofed one is
ignored, and C's connection request reaches B's socket as a live ``notification``.

What a run leaves behind: nothing it can delete. The sockets are closed; the users
are deleted from the database (requests and messages by cascade); their sessions,
cache entries, last-seen times, notifications, conversation cache and the rate-limit
buckets charged are removed from Redis. Their events stay on Kafka, as the api
checks' do, and so does what the consumers keep of those events (idempotency markers,
analytics counters), each with its expiry: deleting a marker would let a redelivery
count twice.

Own instances need one database and one cookie key for both, and distinct names
(the presence lease is per instance), so they are launched here from
``api_instance``'s building blocks rather than by ``start_instance`` (one scratch
database and one name per call).
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import httpx

from devctl.checks import CheckContext, CheckFailed, check, expect
from devctl.checks.api_checks import (
    _check_users,
    _forget_in_redis,
    _source_for,
    _state,
    api_url_problem,
    check_email,
)
from devctl.errors import StackNotRunning

ROLES = ("rta", "rtb", "rtc")
HTTP_TIMEOUT = 10.0
EVENT_WAIT = 5.0  # for a Socket.IO event that should come (cross-instance: ~ms)
DUPLICATE_WAIT = 1.0  # how long an event that must come once is watched for a second
NOTIFICATION_WAIT = 20.0  # the consumer may still be joining its group (Tansu: seconds)
NOTIFICATIONS = "notifications"

_RUNS: weakref.WeakKeyDictionary[CheckContext, RealtimeRun] = weakref.WeakKeyDictionary()


class SocketLoop:
    """An event loop in a thread of its own, for the run's Socket.IO clients: the checks
    are plain functions in worker threads, the sockets must outlive each of them."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="devctl realtime sockets", daemon=True
        )
        self._thread.start()

    def call(self, coro: Any, timeout: float = EVENT_WAIT * 2) -> Any:
        """Run ``coro`` on the loop; its result, or what it raised."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise CheckFailed(f"Socket.IO: no answer within {timeout:g}s") from None

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()


@dataclass
class Client:
    """One check user: an HTTP client (own cookies) and, once opened, a socket."""

    role: str
    url: str  # the instance this user's HTTP and socket go to
    http: httpx.Client
    user_id: str = ""
    sio: Any = None
    loop: SocketLoop | None = None
    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)

    def open_socket(self, loop: SocketLoop) -> None:
        import socketio

        token = self.http.cookies.get("token")
        expect(token is not None, f"user {self.role.upper()} has no session cookie")

        async def connect() -> Any:
            # handle_sigint=False: Ctrl-C belongs to `devctl test`, not to the client.
            sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
            for name in ("private-message", "presence", "notification", "error"):
                sio.on(name, self._keeper(name))
            try:
                await sio.connect(self.url, auth={"token": token}, wait_timeout=int(EVENT_WAIT))
            except socketio.exceptions.ConnectionError as exc:
                raise CheckFailed(f"Socket.IO connect to {self.url} refused: {exc}") from None
            await sio.emit("register", self.user_id)
            return sio

        self.sio = loop.call(connect())
        self.loop = loop

    def _keeper(self, name: str) -> Any:
        async def keep(data: Any) -> None:
            self.events.put((name, data))

        return keep

    def emit(self, event: str, data: Any) -> None:
        expect(self.sio is not None and self.loop is not None, f"no socket for {self.role}")
        assert self.loop is not None
        self.loop.call(self.sio.emit(event, data))

    def close_socket(self) -> None:
        if self.sio is not None and self.loop is not None:
            sio, self.sio = self.sio, None
            self.loop.call(sio.disconnect())

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    def wait_for(self, name: str, match: dict[str, Any], seconds: float) -> dict[str, Any]:
        """The first ``name`` event holding ``match``; CheckFailed after ``seconds``."""
        limit = time.monotonic() + seconds
        seen: list[Any] = []
        while (left := limit - time.monotonic()) > 0:
            try:
                got, data = self.events.get(timeout=left)
            except queue.Empty:
                break
            if got == name and isinstance(data, dict) and _holds(data, match):
                return data
            seen.append((got, data))
        raise CheckFailed(
            f"user {self.role.upper()} got no {name} {match} within {seconds:g}s"
            + (f" (got {seen[:3]})" if seen else "")
        )

    def count(self, name: str, match: dict[str, Any], seconds: float) -> int:
        """How many ``name`` events holding ``match`` arrive within ``seconds``."""
        limit = time.monotonic() + seconds
        found = 0
        while (left := limit - time.monotonic()) > 0:
            try:
                got, data = self.events.get(timeout=left)
            except queue.Empty:
                break
            found += got == name and isinstance(data, dict) and _holds(data, match)
        return found


def _holds(data: Any, match: dict[str, Any]) -> bool:
    """Whether ``data`` holds every field of ``match`` (a dict in ``match``: the fields of
    the nested object it must hold)."""
    if not isinstance(data, dict):
        return False
    return all(
        _holds(data.get(k), v) if isinstance(v, dict) else data.get(k) == v
        for k, v in match.items()
    )


@dataclass
class RealtimeRun:
    urls: tuple[str, str]
    database_url: str
    source: str | None
    password: str
    emails: dict[str, str]
    consumer_note: str | None  # why the notification cannot be checked, or None
    clients: dict[str, Client] = field(default_factory=dict)
    sockets: SocketLoop = field(default_factory=SocketLoop)
    request_ids: list[str] = field(default_factory=list)

    def client(self, role: str) -> Client:
        found = self.clients.get(role)
        if found is None or not found.user_id:
            raise CheckFailed(f"no check user {role.upper()}: its signup failed")
        return found


def _run(ctx: CheckContext) -> RealtimeRun:
    run = _RUNS.get(ctx)
    if run is None:
        raise CheckFailed("no API to check: the first check of the group failed")
    return run


# --- the targets -------------------------------------------------------------------


@check("realtime", "two API instances with Socket.IO ready", gate=True)
def instances_ready(ctx: CheckContext) -> str:
    urls, database, note, consumer_note = _targets(ctx)
    for url in dict.fromkeys(urls):
        _expect_socketio(url)
    run = RealtimeRun(
        urls=urls,
        database_url=database,
        source=_source_for(urls[0], ctx.run_id),
        password=secrets.token_urlsafe(18) + "aA1!",
        emails={role: check_email(ctx.run_id, role) for role in ROLES},
        consumer_note=consumer_note,
    )
    _RUNS[ctx] = run
    ctx.defer(
        lambda: _remove_run(ctx, run),
        what=f"the real-time check users {', '.join(run.emails.values())} (sockets, database "
        "rows, sessions, cache entries, notifications, rate-limit buckets)",
    )
    return note


def _targets(ctx: CheckContext) -> tuple[tuple[str, str], str, str, str | None]:
    """(two instance URLs, their database URL, a note, why no notification can come)."""
    from devctl.consumers import CONSUMERS
    from devctl.db.engine import database_url

    unregistered = (
        None if NOTIFICATIONS in CONSUMERS else "the notifications consumer is not registered"
    )
    if ctx.api_url is not None:
        problem = api_url_problem(ctx.api_url)
        if problem:
            raise CheckFailed(problem)
        url = ctx.api_url.rstrip("/")
        note = f"both clients on {url} (one API given: not across instances)"
        return (url, url), database_url(ctx.settings), note, unregistered
    from devctl.supervisor.control import serve_status

    state, statuses = serve_status(ctx.settings.data_dir)
    healthy = [s for s in statuses if s.kind == "api" and s.health == "ok"]
    if state is not None and len(healthy) >= 2:
        consumer = [s for s in statuses if s.kind == "consumer" and s.service == NOTIFICATIONS]
        why = unregistered or (
            None
            if consumer and consumer[0].running
            else "the running serve runs no notifications consumer"
        )
        pair = (healthy[0].address, healthy[1].address)
        note = f"{healthy[0].service} and {healthy[1].service} of the running serve"
        return pair, database_url(ctx.settings), note, why
    started = time.perf_counter()
    urls, database = _start_instances(ctx, with_consumer=unregistered is None)
    took = time.perf_counter() - started
    return urls, database, f"two own instances, ready in {took:.1f} s", unregistered


def _start_instances(ctx: CheckContext, *, with_consumer: bool) -> tuple[tuple[str, str], str]:
    """Two instances of the run's own on one scratch SQLite database (one after the
    other: the first applies the migrations), and the notifications consumer."""
    from devctl.checks.api_instance import DATABASE_FILE, _remove_scratch, _scratch_dir

    root = _scratch_dir(ctx)
    ctx.defer(lambda: _remove_scratch(root), what=f"the check API's database directory {root}")
    database = f"sqlite:///{root / DATABASE_FILE}"
    limit = time.monotonic() + max(1.0, ctx.deadline - 3.0)
    urls = [_start_one(ctx, database, f"{ctx.run_id}-rt{n}", limit) for n in (1, 2)]
    if with_consumer:
        _start_consumer(ctx)
    return (urls[0], urls[1]), database


def _start_one(ctx: CheckContext, database: str, name: str, limit: float) -> str:
    from devctl.checks.api_instance import Instance, _launch_from_keeper, _wait_healthy
    from devctl.config.schema import KEYS
    from devctl.processes import free_port
    from devctl.supervisor.child import read_lines
    from devctl.supervisor.serve import API_MODULE, child_env
    from devctl.supervisor.spec import ChildSpec

    port = free_port()
    env = {**child_env(ctx.settings), KEYS["api.database_url"].env[0]: database}
    if ctx.settings.config.api.secret is None:
        # One cookie key for both: a session made on one instance is valid on the other.
        env[KEYS["api.secret"].env[0]] = _secret(ctx)
    argv = ("--host", "127.0.0.1", "--port", str(port), "--name", name)
    spec = ChildSpec(
        name=name,
        argv=(sys.executable, "-m", API_MODULE, *argv),
        role="api",
        env=env,
        cwd=ctx.settings.cwd,
    )
    proc = _launch_from_keeper(spec)
    from collections import deque

    lines: deque[str] = deque(maxlen=200)
    assert proc.stdout is not None
    reader = read_lines(proc.stdout, name, lambda _name, line: lines.append(line))
    instance = Instance(name, proc, f"http://127.0.0.1:{port}", database, lines, reader)
    ctx.defer(instance.stop, what=f"the real-time check API instance (pid {proc.pid})")
    if not _wait_healthy(instance, limit):
        instance.stop()
        raise StackNotRunning(
            f"the API instance started for the real-time checks did not start: "
            f"{instance.failure()}",
            hint="the same settings start `devctl serve`'s instances: fix what it says",
        )
    _wait_ready(instance.url, limit)
    return instance.url


_SECRETS: weakref.WeakKeyDictionary[CheckContext, str] = weakref.WeakKeyDictionary()


def _secret(ctx: CheckContext) -> str:
    if ctx not in _SECRETS:
        _SECRETS[ctx] = secrets.token_hex(32)
    return _SECRETS[ctx]


def _start_consumer(ctx: CheckContext) -> None:
    """The notifications consumer in its usual group: it resumes where a serve's left off,
    so it never notifies anyone twice (a new group would start at the earliest offsets)."""
    from devctl.checks.api_instance import Instance, _launch_from_keeper
    from devctl.supervisor.child import read_lines
    from devctl.supervisor.serve import CONSUMER_MODULE, child_env
    from devctl.supervisor.spec import ChildSpec

    name = f"{ctx.run_id}-{NOTIFICATIONS}"
    spec = ChildSpec(
        name=name,
        argv=(sys.executable, "-m", CONSUMER_MODULE, NOTIFICATIONS),
        role="consumer",
        env=child_env(ctx.settings),
        cwd=ctx.settings.cwd,
    )
    proc = _launch_from_keeper(spec)
    from collections import deque

    lines: deque[str] = deque(maxlen=200)
    assert proc.stdout is not None
    reader = read_lines(proc.stdout, name, lambda _name, line: lines.append(line))
    consumer = Instance(name, proc, "", "", lines, reader)
    ctx.defer(consumer.stop, what=f"the check's notifications consumer (pid {proc.pid})")


def _wait_ready(url: str, limit: float) -> None:
    from devctl.supervisor import health

    while True:
        answer = health.get(f"{url}/readyz", timeout=HTTP_TIMEOUT)
        if answer.status == 200:
            return
        if time.monotonic() > limit:
            raise StackNotRunning(f"the API at {url} is not ready: /readyz {answer.status}")
        time.sleep(0.1)


def _expect_socketio(url: str) -> None:
    """An Engine.IO handshake (long-polling, as the web client starts) answers 200."""
    try:
        answer = httpx.get(
            f"{url}/socket.io/", params={"EIO": "4", "transport": "polling"}, timeout=HTTP_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise StackNotRunning(f"the API at {url} does not answer: {exc}") from None
    expect(
        answer.status_code == 200 and answer.text.startswith("0"),
        f"no Socket.IO at {url}/socket.io/: answered {answer.status_code} {answer.text[:100]!r}",
    )


# --- the users ---------------------------------------------------------------------


def _http(run: RealtimeRun, url: str) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        transport=httpx.HTTPTransport(local_address=run.source),
        timeout=HTTP_TIMEOUT,
        trust_env=False,
    )


def _call(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        answer = client.http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CheckFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from None
    expect(
        answer.status_code == 200,
        f"{method} {path} answered {answer.status_code} {answer.text[:200]}",
    )
    return answer.json()


def _signup(run: RealtimeRun, role: str, url: str) -> Client:
    client = Client(role, url, _http(run, url))
    run.clients[role] = client
    body = {
        "firstName": f"Check{role[-1].upper()}",
        "lastName": "Realtime",
        "emailId": run.emails[role],
        "password": run.password,
    }
    user = _call(client, "POST", "/signup", json=body)
    client.user_id = str(user["_id"])
    return client


def _request(run: RealtimeRun, sender: Client, to: Client) -> str:
    body = _call(sender, "POST", f"/request/send/interested/{to.user_id}")
    request_id = str(body["data"]["_id"])
    run.request_ids.append(request_id)
    return request_id


@check("realtime", "check users A and B connected, on different instances")
def users_connected(ctx: CheckContext) -> str:
    run = _run(ctx)
    a = _signup(run, "rta", run.urls[0])
    b = _signup(run, "rtb", run.urls[1])
    request_id = _request(run, a, b)
    answer = _call(b, "PATCH", f"/user/requests/{request_id}/respond", json={"action": "accept"})
    expect(answer.get("data", {}).get("status") == "accepted", f"the review answered {answer}")
    return f"A on {a.url}, B on {b.url}"


@check("realtime", "presence: B coming online seen once by A")
def presence_once(ctx: CheckContext) -> str:
    run = _run(ctx)
    a, b = run.client("rta"), run.client("rtb")
    a.open_socket(run.sockets)
    a.drain()
    b.open_socket(run.sockets)
    a.wait_for("presence", {"userId": b.user_id, "online": True}, EVENT_WAIT)
    extra = a.count("presence", {"userId": b.user_id, "online": True}, DUPLICATE_WAIT)
    expect(extra == 0, f"A saw B come online {1 + extra} times, not once")
    b.close_socket()
    a.wait_for("presence", {"userId": b.user_id, "online": False}, EVENT_WAIT)
    extra = a.count("presence", {"userId": b.user_id, "online": False}, DUPLICATE_WAIT)
    expect(extra == 0, f"A saw B go offline {1 + extra} times, not once")
    b.open_socket(run.sockets)
    return "online once, offline once (across instances)"


@check("realtime", "a message crosses the instances both ways")
def message_across(ctx: CheckContext) -> str:
    run = _run(ctx)
    a, b = run.client("rta"), run.client("rtb")
    expect(a.sio is not None and b.sio is not None, "no sockets: the presence check failed")
    started = time.perf_counter()
    for sender, recipient in ((a, b), (b, a)):
        sender.drain()
        recipient.drain()
        text = f"check {secrets.token_hex(4)} from {sender.role.upper()}"
        sender.emit("private-message", {"toUserId": recipient.user_id, "message": text})
        want = {"message": text, "fromUserId": sender.user_id}
        got = recipient.wait_for("private-message", want, EVENT_WAIT)
        expect(isinstance(got.get("ts"), (str, int, float)), f"no ts in {got}")
        sender.wait_for("private-message", want, EVENT_WAIT)  # the sender's own copy
    took = (time.perf_counter() - started) * 1000
    return f"A -> B and B -> A, fromUserId right, {took:.0f} ms"


@check("realtime", "a spoofed fromUserId is ignored")
def spoof_ignored(ctx: CheckContext) -> str:
    run = _run(ctx)
    a, b = run.client("rta"), run.client("rtb")
    expect(a.sio is not None and b.sio is not None, "no sockets: the presence check failed")
    b.drain()
    text = f"spoof {secrets.token_hex(4)}"
    # A claims to be B: the server must take the sender from A's session.
    a.emit("private-message", {"toUserId": b.user_id, "message": text, "fromUserId": b.user_id})
    got = b.wait_for("private-message", {"message": text}, EVENT_WAIT)
    expect(got.get("fromUserId") == a.user_id, f"B got it from {got.get('fromUserId')}, not A")
    return "delivered as from A"


@check("realtime", "a notification arrives live over Socket.IO")
def notification_live(ctx: CheckContext) -> str:
    run = _run(ctx)
    if run.consumer_note is not None:
        return f"not checked: {run.consumer_note}"
    b = run.client("rtb")
    expect(b.sio is not None, "no socket for B: the presence check failed")
    c = _signup(run, "rtc", run.urls[0])
    b.drain()
    started = time.perf_counter()
    _request(run, c, b)
    wait = min(NOTIFICATION_WAIT, max(1.0, ctx.deadline - 5.0))
    # Only C's: the notification of A's request may come now too (a consumer that has
    # just joined its group works through what came before).
    b.wait_for("notification", {"notification": {"fromUserId": c.user_id}}, wait)
    took = (time.perf_counter() - started) * 1000
    return f"C's request reached B's socket in {took:.0f} ms"


# --- clean-up ------------------------------------------------------------------------


def _remove_run(ctx: CheckContext, run: RealtimeRun) -> None:
    """Close the sockets, delete the users from the database, then their Redis traces."""
    try:
        for client in run.clients.values():
            try:
                client.close_socket()
            finally:
                client.http.close()
    finally:
        run.sockets.close()
    ids = {run.emails[r]: c.user_id for r, c in run.clients.items() if c.user_id}
    failure: Exception | None = None
    try:
        ids.update(
            asyncio.run(_check_users(run.database_url, list(run.emails.values()), delete=True))
        )
    except Exception as exc:  # Redis is still cleaned; the error is reported after
        failure = exc
    users = [(email, ids.get(email)) for email in run.emails.values()]
    charged = [i for r in ("rta", "rtc") if (i := ids.get(run.emails[r])) is not None]
    _forget_in_redis(ctx, users, charged=charged, sources=[run.source] if run.source else [])
    state = _state(ctx)
    keys = state.keys
    found = [i for _email, i in users if i is not None]
    for user_id in found:
        state.ratelimits.reset("chat_message", user_id)
    doomed = [
        key
        for i in found
        for key in (keys.notifications(i), keys.notifications_unread(i), keys.last_seen(i))
    ]
    if len(found) >= 2:
        doomed += [
            keys.conversation(found[0], found[1]),
            keys.conversation_version(found[0], found[1]),
        ]
    if doomed:
        ctx.redis.delete(*doomed)
    if failure is not None:
        raise failure
