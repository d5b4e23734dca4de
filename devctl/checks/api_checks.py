"""API checks: DevConnect's HTTP API end to end, and the events it publishes on Kafka.

The target is, in order: the URL given (``CheckContext.api_url``), the first healthy
API instance of a `devctl serve` running in the same data dir, else an instance of
the run's own (``python -m devctl.api`` on a free loopback port, with the same
settings and stack, on a SQLite database in a scratch directory of the data dir),
stopped and deleted at the end (``api_instance`` starts and stops it). Two check
users sign up, log in, read their profile, send and accept a connection request and
see each other as connections; the events of these steps must then appear on Kafka
after the offsets noted before the first.

What a run leaves behind: nothing it can delete. Its users are deleted from the API's
database (requests and messages go with them, by cascade; their outbox rows stay for
the relay to publish and prune); their sessions, user cache entries and the rate-limit
buckets the run charged are removed from Redis. The events on Kafka cannot be
deleted: they stay, recognisable by the users' ``@devctl.invalid`` emails (RFC 2606:
never a mailbox) that carry the run id, ``devctl-check+<run id>-a@devctl.invalid``.
A run killed before its clean-up is cleaned by a later one (``remove_leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import re
import secrets
import shutil
import socket
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from devctl.checks import CheckContext, CheckFailed, check, counted, expect, is_leftover
from devctl.checks.api_instance import DATABASE_FILE, SCRATCH_DIR, start_instance
from devctl.errors import StackNotRunning

if TYPE_CHECKING:
    from devctl.state import StateServices

EMAIL_PREFIX = "devctl-check+"
EMAIL_DOMAIN = "devctl.invalid"
_CHECK_EMAIL = re.compile(
    re.escape(EMAIL_PREFIX) + r"(?P<run>.+)-[a-z]+@" + re.escape(EMAIL_DOMAIN)
)
ROLES = ("a", "b")
SIGNUP, LOGIN = "devconnect.user.signup", "devconnect.user.login"
REQUESTED, ACCEPTED = "devconnect.connection.requested", "devconnect.connection.accepted"

HTTP_TIMEOUT = 10.0

_RUNS: weakref.WeakKeyDictionary[CheckContext, ApiRun] = weakref.WeakKeyDictionary()


def check_email(run_id: str, role: str) -> str:
    """The email of a check user: the run id in it, on a domain that never receives mail."""
    return f"{EMAIL_PREFIX}{run_id}-{role}@{EMAIL_DOMAIN}"


def api_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an API's base URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host"
    return None


@dataclass
class Target:
    """The API the checks drive, and the database its users live in."""

    url: str
    what: str  # how messages name it: "api-1 of the running serve", ...
    database_url: str
    source: str | None = None  # the loopback address the check's clients come from


@dataclass
class ApiRun:
    """What the checks of one run share: target, users, clients, Kafka positions."""

    target: Target
    password: str
    emails: dict[str, str]
    user_agent: str
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    logged_in: set[str] = field(default_factory=set)
    request_id: str | None = None
    accepted: bool = False
    clients: dict[str, httpx.Client] = field(default_factory=dict)

    def client(self, role: str) -> httpx.Client:
        """The HTTP client of a user (its own cookie jar), from the run's source address."""
        if role not in self.clients:
            transport = httpx.HTTPTransport(local_address=self.target.source)
            # trust_env=False: no proxy from the environment between us and the API.
            self.clients[role] = httpx.Client(
                base_url=self.target.url,
                transport=transport,
                timeout=HTTP_TIMEOUT,
                trust_env=False,
                headers={"User-Agent": self.user_agent},
            )
        return self.clients[role]

    def user_id(self, role: str) -> str:
        user = self.users.get(role)
        if user is None:
            raise CheckFailed(f"no check user {role.upper()}: its signup failed")
        return str(user["_id"])


def _run(ctx: CheckContext) -> ApiRun:
    run = _RUNS.get(ctx)
    if run is None:
        raise CheckFailed("no API to check: the first check of the group failed")
    return run


def _said(response: httpx.Response) -> str:
    """``status message`` of an answer, for failure reasons."""
    try:
        body = response.json()
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return f"{response.status_code} {message or response.text[:200]}".rstrip()


def _call(run: ApiRun, role: str, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON body of a 200 answer to ``role``'s request; CheckFailed otherwise."""
    try:
        response = run.client(role).request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CheckFailed(f"{method} {path}: {type(exc).__name__}: {exc}") from None
    expect(response.status_code == 200, f"{method} {path} answered {_said(response)}")
    try:
        return response.json()
    except ValueError:
        raise CheckFailed(f"{method} {path}: not JSON: {response.text[:200]!r}") from None


# --- the target ----------------------------------------------------------------------


@check("api", "API reachable and ready", gate=True)
def api_ready(ctx: CheckContext) -> str:
    """Find or start the API, wait for its /readyz, note where the topics end."""
    target, note = _target(ctx)
    _expect_ready(target)
    run = ApiRun(
        target=target,
        password=secrets.token_urlsafe(18) + "aA1!",  # the API's strength rules
        emails={role: check_email(ctx.run_id, role) for role in ROLES},
        user_agent=f"devctl-test/{ctx.run_id}",
    )
    _RUNS[ctx] = run
    ctx.defer(
        lambda: _remove_run_users(ctx, run),
        what=f"the check users {', '.join(run.emails.values())} (database rows, sessions, "
        "cache entries, rate-limit buckets)",
    )
    _note_offsets(ctx, run)
    return note


def _target(ctx: CheckContext) -> tuple[Target, str]:
    from devctl.db.engine import database_url

    database = database_url(ctx.settings)
    if ctx.api_url is not None:
        problem = api_url_problem(ctx.api_url)
        if problem:
            raise CheckFailed(problem)
        url = ctx.api_url.rstrip("/")
        return Target(url, f"the API at {url}", database, _source_for(url, ctx.run_id)), url
    from devctl.supervisor.control import serve_status

    state, statuses = serve_status(ctx.settings.data_dir)
    apis = [s for s in statuses if s.kind == "api"]
    if state is not None and apis:
        healthy = [s for s in apis if s.health == "ok"]
        if not healthy:
            # Not replaced by an instance of our own: that would hide what ails the serve.
            states = "; ".join(
                f"{s.service} {s.health}" + (f" ({s.detail})" if s.detail else "") for s in apis
            )
            raise StackNotRunning(
                f"devctl serve runs (pid {state.supervisor.pid}) but none of its API "
                f"instances is healthy: {states}",
                hint="`devctl status` shows them; `devctl logs api` tells why",
            )
        first = healthy[0]
        what = f"{first.service} of the running serve"
        source = _source_for(first.address, ctx.run_id)
        return Target(first.address, what, database, source), (f"{what} at {first.address}")
    started = time.perf_counter()
    target = _start_instance(ctx)
    took = time.perf_counter() - started
    return target, f"own instance at {target.url}, ready in {took:.1f} s"


def _start_instance(ctx: CheckContext) -> Target:
    """An instance of the run's own (api_instance), once it is ready."""
    instance, limit = start_instance(ctx)
    target = Target(instance.url, f"the API instance at {instance.url}", instance.database)
    target.source = _source_for(instance.url, ctx.run_id)
    # Just started: Kafka's producer may still be connecting; wait for ready.
    while True:
        try:
            _expect_ready(target)
            return target
        except StackNotRunning:
            if time.monotonic() > limit or instance.proc.poll() is not None:
                raise
            time.sleep(0.1)


def loopback_source(run_id: str) -> str:
    """The loopback address (127.x.y.z, never 127.0.0.1) a run's clients come from.

    Derived from the run id, so a later run can reset the login bucket of a run that
    was killed before its clean-up.
    """
    digest = hashlib.sha256(run_id.encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"


def _source_for(url: str, run_id: str) -> str | None:
    """The run's own loopback address when the API is on loopback, else None.

    The API's per-IP login limit then charges a bucket no real client shares, which the
    clean-up can reset; None (the default route) when the API is elsewhere or this
    system has only 127.0.0.1.
    """
    host = urlsplit(url).hostname or ""
    try:
        # IPv4 only: a 127.x.y.z source cannot reach ::1.
        loopback = host == "localhost" or ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    address = loopback_source(run_id)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return None
    return address


def _expect_ready(target: Target) -> None:
    from devctl.supervisor import health

    answer = health.get(f"{target.url}/readyz", timeout=HTTP_TIMEOUT)
    if answer.status is None:
        raise StackNotRunning(f"{target.what} does not answer: {answer.error}")
    if answer.status != 200:
        failing = [
            f"{name}: {c.get('error') or c.get('status')}"
            for name, c in answer.checks.items()
            if isinstance(c, dict) and c.get("status") != "ok"
        ]
        raise StackNotRunning(
            f"{target.what} is not ready (/readyz {answer.status}): "
            + ("; ".join(failing) or "no reason given")
        )


def _note_offsets(ctx: CheckContext, run: ApiRun) -> None:
    """Where the events' topics end now: the events of this run come after."""
    from devctl.events.registry import REGISTRY
    from devctl.streams.offsets import end_offsets

    topics = sorted({REGISTRY[t].topic for t in (SIGNUP, LOGIN, REQUESTED, ACCEPTED)})
    listed = ctx.admin.list_topics(timeout=ctx.timeout).topics
    run.missing_topics = [t for t in topics if t not in listed]
    partitions = [(t, p) for t in topics if t in listed for p in listed[t].partitions]
    ends = end_offsets(ctx.endpoints, ctx.settings, partitions, timeout=ctx.timeout)
    run.offsets = {key: offsets.high for key, offsets in ends.items()}


# --- the user journey ----------------------------------------------------------------


@check("api", "leftovers of interrupted runs removed")
def leftovers(ctx: CheckContext) -> str:
    """Delete the check users of runs that could not clean up (killed, crashed)."""
    users, dirs = remove_leftovers(ctx, _run(ctx).target.database_url)
    if not users and not dirs:
        return "none"
    where = counted(dirs, "instance directory", "instance directories")
    return f"removed {counted(users, 'user')}, {where}"


@check("api", "signup of two check users")
def signup(ctx: CheckContext) -> str:
    run = _run(ctx)
    for role in ROLES:
        body = {
            "firstName": f"Check{role.upper()}",
            "lastName": "Devctl",
            "emailId": run.emails[role],
            "password": run.password,
        }
        user = _call(run, role, "POST", "/signup", json=body)
        expect(isinstance(user, dict) and "_id" in user, f"signup answered {user!r}, not a user")
        expect(user.get("emailId") == run.emails[role], f"signup answered {user.get('emailId')}")
        expect("password" not in user, "signup answered the password")
        expect(run.client(role).cookies.get("token") is not None, "signup set no token cookie")
        run.users[role] = user
    found = asyncio.run(_check_users(run.target.database_url, list(run.emails.values())))
    expect(
        {found.get(email) for email in run.emails.values()} == {run.user_id(r) for r in ROLES},
        f"the users are not in the database these settings name ({_redacted(run)}): "
        "the clean-up cannot delete them",
    )
    return ", ".join(run.emails.values())


@check("api", "login sets the cookie and answers the user")
def login(ctx: CheckContext) -> str:
    run = _run(ctx)
    for role in ROLES:
        run.user_id(role)
        client = run.client(role)
        client.cookies.clear()
        body = {"emailId": run.emails[role], "password": run.password}
        user = _call(run, role, "POST", "/login", json=body)
        run.logged_in.add(role)
        expect(client.cookies.get("token") is not None, "login set no token cookie")
        expect(
            isinstance(user, dict) and user.get("_id") == run.user_id(role),
            f"login answered {user!r}, not user {role.upper()} at the top level",
        )
    return "two logins, each a fresh session cookie"


@check("api", "profile view answers the logged-in user")
def profile_view(ctx: CheckContext) -> str:
    run = _run(ctx)
    user = _call(run, "a", "GET", "/profile/view")
    expect(
        isinstance(user, dict) and user.get("_id") == run.user_id("a"),
        f"GET /profile/view answered {user!r}, not user A",
    )
    expect(user.get("emailId") == run.emails["a"], f"profile email {user.get('emailId')}")
    anonymous = run.client("anonymous").get("/profile/view")
    expect(
        anonymous.status_code == 401,
        f"without a cookie GET /profile/view answered {_said(anonymous)}, not 401",
    )
    return "user A; 401 without a cookie"


@check("api", "connection request sent")
def send_request(ctx: CheckContext) -> str:
    run = _run(ctx)
    a, b = run.user_id("a"), run.user_id("b")
    body = _call(run, "a", "POST", f"/request/send/interested/{b}")
    request = body.get("data") if isinstance(body, dict) else None
    expect(isinstance(request, dict), f"answered {body!r}, no request under data")
    assert isinstance(request, dict)
    expect(
        (request.get("fromUserId"), request.get("toUserId"), request.get("status"))
        == (a, b, "interested"),
        f"the request reads {request}",
    )
    run.request_id = str(request["_id"])
    return f"request {run.request_id}, A -> B"


@check("api", "request received and accepted")
def review_request(ctx: CheckContext) -> str:
    run = _run(ctx)
    expect(run.request_id is not None, "no request to review: sending it failed")
    body = _call(run, "b", "GET", "/user/requests/received")
    pending = body.get("data") if isinstance(body, dict) else None
    expect(isinstance(pending, list), f"received requests answered {body!r}")
    assert isinstance(pending, list)
    mine = [r for r in pending if isinstance(r, dict) and r.get("_id") == run.request_id]
    expect(len(mine) == 1, f"B's received requests do not hold {run.request_id}: {pending}")
    sender = mine[0].get("fromUserId")
    expect(
        isinstance(sender, dict) and sender.get("_id") == run.user_id("a"),
        f"the sender is not populated as user A: {sender!r}",
    )
    path = f"/user/requests/{run.request_id}/respond"
    answer = _call(run, "b", "PATCH", path, json={"action": "accept"})
    decided = answer.get("data") if isinstance(answer, dict) else None
    expect(
        isinstance(decided, dict) and decided.get("status") == "accepted",
        f"PATCH {path} answered {answer!r}",
    )
    run.accepted = True
    return "B saw A's request and accepted it"


@check("api", "both see the connection")
def connections(ctx: CheckContext) -> str:
    run = _run(ctx)
    expect(run.accepted, "no accepted request: the review failed")
    for role, other in (("a", "b"), ("b", "a")):
        body = _call(run, role, "GET", "/user/connections")
        data = body.get("data") if isinstance(body, dict) else None
        ids = [u.get("_id") for u in data if isinstance(u, dict)] if isinstance(data, list) else []
        expect(
            ids == [run.user_id(other)],
            f"{role.upper()}'s connections are {ids}, expected only {other.upper()}",
        )
    return "A and B each list the other"


@check("api", "events of the journey on Kafka")
def events_on_kafka(ctx: CheckContext) -> str:
    """Read from the offsets noted before the first signup until every event the API
    acknowledged is there: the outbox relay publishes after the commit, so wait."""
    run = _run(ctx)
    expect(not run.missing_topics, f"missing topics: {', '.join(run.missing_topics)}")
    wanted = _expected_events(run)
    expect(bool(wanted), "nothing to look for: no step of the journey succeeded")
    started = time.perf_counter()
    missing = _find_events(ctx, run, wanted)
    expect(
        not missing,
        f"not on Kafka within {ctx.timeout * 2:g}s: {'; '.join(missing)}",
    )
    took = (time.perf_counter() - started) * 1000
    return f"{len(wanted)} events found in {took:.0f} ms"


def _expected_events(run: ApiRun) -> list[tuple[str, dict[str, str], str]]:
    """(type, data fields it must hold, label) of each event the API acknowledged."""
    wanted = [(SIGNUP, {"userId": run.user_id(r)}, f"signup {r.upper()}") for r in run.users]
    wanted += [(LOGIN, {"userId": run.user_id(r)}, f"login {r.upper()}") for r in run.logged_in]
    if run.request_id is not None:
        pair = {"requestId": run.request_id, "fromUserId": run.user_id("a")}
        pair["toUserId"] = run.user_id("b")
        wanted.append((REQUESTED, pair, "request A -> B"))
        if run.accepted:
            wanted.append((ACCEPTED, pair, "B accepted"))
    return wanted


def _find_events(
    ctx: CheckContext, run: ApiRun, wanted: list[tuple[str, dict[str, str], str]]
) -> list[str]:
    """The labels of the events not found before the deadline."""
    from confluent_kafka import TopicPartition

    from devctl.events._batches import coordinates, headers_of
    from devctl.events.reading import read_record
    from devctl.streams.offsets import offsets_consumer

    pending = list(wanted)
    consumer = offsets_consumer(ctx.endpoints, ctx.settings)  # assigns only, never commits
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in run.offsets.items()])
        deadline = time.monotonic() + ctx.timeout * 2
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            topic, partition, offset = coordinates(msg)
            reading = read_record(
                topic, msg.key(), msg.value(), headers_of(msg), partition=partition, offset=offset
            )
            data = (reading.event or {}).get("data")
            if not isinstance(data, dict):
                continue
            pending = [
                (kind, fields, label)
                for kind, fields, label in pending
                if not (reading.type == kind and all(data.get(k) == v for k, v in fields.items()))
            ]
    finally:
        consumer.close()
    return [label for _kind, _fields, label in pending]


# --- clean-up and leftovers ----------------------------------------------------------


def _state(ctx: CheckContext) -> StateServices:
    from devctl.state import from_settings

    return from_settings(ctx.settings, ctx.endpoints, client=ctx.redis, stats=False)


def _redacted(run: ApiRun) -> str:
    from devctl.db.engine import redacted_url

    return redacted_url(run.target.database_url)


def _remove_run_users(ctx: CheckContext, run: ApiRun) -> None:
    """Delete the run's users from the database, then their traces in Redis."""
    for client in run.clients.values():
        client.close()
    ids = {run.emails[role]: str(user["_id"]) for role, user in run.users.items()}
    failure: Exception | None = None
    try:
        ids.update(
            asyncio.run(
                _check_users(run.target.database_url, list(run.emails.values()), delete=True)
            )
        )
    except Exception as exc:  # Redis is still cleaned; the error is reported after
        failure = exc
    users = [(email, ids.get(email)) for email in run.emails.values()]
    charged = [i for i in [ids.get(run.emails["a"])] if i is not None]
    sources = [run.target.source] if run.target.source else []
    _forget_in_redis(ctx, users, charged=charged, sources=sources)
    if failure is not None:
        raise failure


def _retire_instances(ctx: CheckContext, runs: Iterable[str]) -> None:
    """End the presence leases of the API instances killed runs started (named
    ``<run>-api-...``): their registry entries go, with any connection they held."""
    prefixes = tuple(f"{run}-api-" for run in runs)
    if not prefixes:
        return
    presence = _state(ctx).presence
    for info in presence.instances():
        if info.instance_id.startswith(prefixes):
            presence.retire(info.instance_id)


def _forget_in_redis(
    ctx: CheckContext,
    users: Iterable[tuple[str, str | None]],
    *,
    charged: Iterable[str] = (),
    sources: Iterable[str] = (),
) -> None:
    """Sessions, cache entries and rate-limit buckets of check users (email, id or None).

    ``charged``: the users whose daily connection requests were charged;
    ``sources``: runs' own loopback addresses, whose login and sign-up buckets are reset (never a
    shared address: a real client's bucket must not be emptied).
    """
    state = _state(ctx)
    keys = state.keys
    for email, user_id in users:
        state.ratelimits.reset("login_email", email)
        if user_id is None:
            continue
        state.sessions.revoke_all(user_id)
        state.user_cache.invalidate(user_id)
        # invalidate keeps the version counter (so a fill racing it is dropped); the
        # user is gone from the database, so no fill can bring it back.
        ctx.redis.delete(
            keys.user_version(user_id),
            keys.user_lock(user_id),
            keys.email(email),
            keys.email_version(email),
        )
    for user_id in charged:
        state.ratelimits.reset("connection_request", user_id)
    for source in sources:
        state.ratelimits.reset("login_ip", source)
        state.ratelimits.reset("signup_ip", source)


async def _check_users(
    url: str, emails: list[str] | None = None, *, delete: bool = False
) -> dict[str, str]:
    """email -> id of check users in the database at ``url`` (those of ``emails``, else
    every one), deleted with their requests and messages when ``delete``."""
    from sqlalchemy import delete as delete_rows
    from sqlalchemy import select
    from sqlalchemy.pool import NullPool

    from devctl.db.engine import connection_errors, make_engine
    from devctl.db.models import User

    query = select(User.email, User.id)
    if emails is not None:
        query = query.where(User.email.in_(emails))
    else:
        query = query.where(User.email.like(f"{EMAIL_PREFIX}%@{EMAIL_DOMAIN}"))
    engine = make_engine(url, poolclass=NullPool)
    try:
        with connection_errors(url):
            async with engine.begin() as connection:
                found = {str(e): str(i) for e, i in (await connection.execute(query)).all()}
                if delete and found:
                    # Requests and messages go by ON DELETE CASCADE.
                    await connection.execute(
                        delete_rows(User).where(User.id.in_(list(found.values())))
                    )
    finally:
        await engine.dispose()
    return found


def remove_leftovers(
    ctx: CheckContext, database_url: str, now: float | None = None
) -> tuple[int, int]:
    """Check users and instance directories of runs older than LEFTOVER_AGE, removed.

    The users are deleted from the database at ``database_url`` (the target's), with
    their sessions, cache entries and buckets. The database directory of an instance
    a killed run started is read for its users' Redis traces, then deleted. A run
    still going is younger than that, so it is never touched.
    """
    found = asyncio.run(_check_users(database_url))
    old: dict[str, str] = {}
    runs: set[str] = set()
    for email, user_id in found.items():
        match = _CHECK_EMAIL.fullmatch(email)
        if match and is_leftover(email, now):
            old[email] = user_id
            runs.add(match["run"])
    if old:
        asyncio.run(_check_users(database_url, list(old), delete=True))
    scratch = ctx.settings.data_dir / SCRATCH_DIR
    dirs = [
        path
        for path in (sorted(scratch.iterdir()) if scratch.is_dir() else [])
        if path.is_dir() and is_leftover(path.name, now)
    ]
    for path in dirs:
        runs.add(path.name.split("-api-")[0])
        with contextlib.suppress(Exception):  # unreadable: its users' Redis traces expire
            old.update(asyncio.run(_check_users(f"sqlite:///{path / DATABASE_FILE}")))
    _forget_in_redis(
        ctx, old.items(), charged=old.values(), sources=[loopback_source(r) for r in runs]
    )
    _retire_instances(ctx, runs)
    for path in dirs:
        shutil.rmtree(path)
    with contextlib.suppress(OSError):  # only when no run uses it
        scratch.rmdir()
    return len(old), len(dirs)
