"""DevConnect's analytics in Redis: events per type per minute, hour and day, daily and
monthly active users, signups per day and per-user activity counters.

Writes are the effects of events, computed without I/O (``AnalyticsOps.effects``) and
queued on a pipeline the caller owns (``queue_effects``): the analytics consumer queues
them on the consumer runtime's ``ctx.tx``, a MULTI that also sets the events'
idempotency markers, so each event is counted exactly once, across redeliveries and
crashes alike. A batch of events is merged first (one HINCRBY per bucket and type, one
PFADD per active-users key), which keeps a batch's transaction small.

Buckets are UTC periods of the EVENT's time, not of the moment it is processed: a
replay or a consumer catching up after an outage counts each event where it happened.
Every bucket expires a fixed time after its period ends (``RETENTION``), so a late or
replayed event for a bucket already past its retention writes nothing. Per-user
counters expire ``USER_TTL`` after the user's last counted event.

Reads (``series``, ``daily_active``, ``monthly_active``, ``signups``, ``top_users``,
``summary``) serve `devctl stats` and `devctl top`; ``summary`` is the whole picture in
two round trips plus a SCAN for the top users. See docs/analytics.md.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from devctl.errors import UsageError
from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.keys import KeySchema, unescape_id
from devctl.state.plan import Command, Plan, cmd, pipeline
from devctl.state.validate import InvalidArgument

MINUTE, HOUR, DAY = 60, 3600, 86400

# Seconds of each granularity's bucket, and how long a bucket lives after its period ends.
STEP: dict[str, int] = {"m": MINUTE, "h": HOUR, "d": DAY}
RETENTION: dict[str, int] = {"m": 48 * HOUR, "h": 31 * DAY, "d": 400 * DAY}
# Active users: per day (``d``) and per month (``m``), after the period ends.
ACTIVE_RETENTION: dict[str, int] = {"d": 400 * DAY, "m": 800 * DAY}
SIGNUP_RETENTION = 400 * DAY
USER_TTL = 90 * DAY  # refreshed by every event that counts for the user

_BUCKET_FORMAT = {"m": "%Y%m%d%H%M", "h": "%Y%m%d%H", "d": "%Y%m%d"}

SIGNUP = "devconnect.user.signup"

# Per-user counters: event type -> (data field naming the user, counter) pairs.
# connection.requested is a request only with status "interested"; "ignored" is the
# feed's pass button (see _user_counters).
USER_COUNTERS: dict[str, tuple[tuple[str, str], ...]] = {
    "devconnect.user.login": (("userId", "logins"),),
    "devconnect.message.sent": (("fromUserId", "messages_sent"), ("toUserId", "messages_received")),
    "devconnect.message.read": (("toUserId", "messages_read"),),
    "devconnect.connection.requested": (
        ("fromUserId", "requests_sent"),
        ("toUserId", "requests_received"),
    ),
    "devconnect.connection.accepted": (
        ("toUserId", "requests_accepted"),
        ("fromUserId", "connections"),
        ("toUserId", "connections"),
    ),
    "devconnect.connection.rejected": (("toUserId", "requests_rejected"),),
    "devconnect.notification.created": (("userId", "notifications"),),
}
# The counters a user's row shows, in this order (others may appear in Redis later).
USER_FIELDS = (
    "messages_sent",
    "messages_received",
    "messages_read",
    "requests_sent",
    "requests_received",
    "requests_accepted",
    "requests_rejected",
    "connections",
    "passes",
    "logins",
    "notifications",
)
# Whose activity does not make its subject active: a notification is about its
# recipient, who did nothing.
PASSIVE_TYPES = frozenset({"devconnect.notification.created"})

# Windows `devctl stats --since` accepts: <n>m, <n>h or <n>d, 1 minute to 31 days
# (hourly buckets live 31 days).
WINDOW_MIN = MINUTE
WINDOW_MAX = 31 * DAY
WINDOW_EXAMPLES = ("15m", "1h", "6h", "24h", "7d")
# Beyond this window the series uses hourly buckets (minute buckets live 48 h).
MINUTE_SERIES_MAX = 48 * HOUR
_WINDOW = re.compile(r"(\d{1,6})([mhd])")
_UNIT = {"m": MINUTE, "h": HOUR, "d": DAY}

# `top_users` reads at most this many users' counters (a SCAN of the keyspace).
TOP_SCAN_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Activity:
    """What the analytics need of one event: its type, time (epoch seconds), subject
    (the user it concerns) and data."""

    type: str
    at: float
    subject: str | None
    data: Mapping[str, Any]


def parse_window(text: str, *, field: str | None = None) -> int:
    """``15m``, ``1h``, ``6h``, ``24h``, ``7d`` -> seconds (1 minute to 31 days).

    Anything else is a UsageError naming ``field`` with examples.
    """
    match = _WINDOW.fullmatch(text.strip().lower())
    seconds = int(match.group(1)) * _UNIT[match.group(2)] if match else 0
    if WINDOW_MIN <= seconds <= WINDOW_MAX:
        return seconds
    why = "is not a window" if match is None else "is outside 1m..31d"
    raise UsageError(
        f"'{text}' {why}: a number and m, h or d, from 1m to 31d",
        hint="e.g. " + ", ".join(WINDOW_EXAMPLES),
        field=field,
        data={"value": text, "examples": list(WINDOW_EXAMPLES)},
    )


def window_text(seconds: int) -> str:
    """The shortest way `parse_window` reads ``seconds``: 3600 -> ``1h``."""
    for unit, size in (("d", DAY), ("h", HOUR)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds // MINUTE}m"


def bucket_of(granularity: str, at: float) -> str:
    """The bucket (UTC period start as digits) of a time: ``m`` YYYYMMDDHHMM, ``h``
    YYYYMMDDHH, ``d`` YYYYMMDD, and ``M`` (month) YYYYMM."""
    if granularity == "M":
        return time.strftime("%Y%m", time.gmtime(at))
    return time.strftime(_BUCKET_FORMAT[granularity], time.gmtime(at))


def period_start(granularity: str, at: float) -> int:
    """Epoch seconds of the start of the UTC period holding ``at`` (``M``: the month)."""
    if granularity == "M":
        moment = time.gmtime(at)
        return calendar.timegm((moment.tm_year, moment.tm_mon, 1, 0, 0, 0))
    step = STEP[granularity]
    return int(at // step) * step


def period_end(granularity: str, at: float) -> int:
    """Epoch seconds of the end of the UTC period holding ``at`` (exclusive)."""
    if granularity == "M":
        moment = time.gmtime(at)
        year, month = (
            (moment.tm_year + 1, 1) if moment.tm_mon == 12 else (moment.tm_year, moment.tm_mon + 1)
        )
        return calendar.timegm((year, month, 1, 0, 0, 0))
    return period_start(granularity, at) + STEP[granularity]


def event_time(text: str | None) -> float | None:
    """Epoch seconds of an event's RFC 3339 ``time``; None when missing or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows t and z
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _user_counters(activity: Activity) -> Iterable[tuple[str, str]]:
    """(user, counter) pairs one event adds 1 to."""
    pairs = USER_COUNTERS.get(activity.type, ())
    data = activity.data
    if activity.type == "devconnect.connection.requested" and data.get("status") != "interested":
        pairs = (("fromUserId", "passes"),)
    for name, counter in pairs:
        user = data.get(name)
        if isinstance(user, str) and user:
            yield user, counter


@dataclass(frozen=True)
class Series:
    """Events per type in consecutive buckets (zero-filled), oldest first."""

    granularity: str  # m, h or d
    step: int  # seconds per bucket
    starts: list[int]  # epoch seconds of each bucket's start
    counts: dict[str, list[int]]  # event type -> count per bucket

    @property
    def totals(self) -> dict[str, int]:
        return {t: sum(v) for t, v in self.counts.items()}

    @property
    def per_bucket(self) -> list[int]:
        """All types together, per bucket."""
        return [sum(column) for column in zip(*self.counts.values(), strict=True)] or [
            0 for _ in self.starts
        ]


@dataclass(frozen=True)
class DayCount:
    day: str  # YYYY-MM-DD (UTC)
    count: int


@dataclass(frozen=True)
class UserActivity:
    user_id: str
    counters: dict[str, int]

    @property
    def messages(self) -> int:
        return self.counters.get("messages_sent", 0) + self.counters.get("messages_received", 0)


@dataclass(frozen=True)
class Summary:
    """What `devctl stats` shows: the window's series, DAU, MAU, signups, top users."""

    now: float
    window: int  # seconds
    series: Series
    daily_active: list[DayCount]  # oldest first, today last
    monthly_active: int
    month: str  # YYYY-MM
    signups: list[DayCount]  # oldest first, today last
    top_users: list[UserActivity] = field(default_factory=list)
    users_scanned: int = 0

    def to_json(self) -> dict[str, Any]:
        """The stable JSON shape of `devctl stats --json` (docs/analytics.md)."""
        series = self.series
        return {
            "now": _iso(self.now),
            "window": window_text(self.window),
            "window_seconds": self.window,
            "granularity": GRANULARITY_NAMES[series.granularity],
            "bucket_seconds": series.step,
            "buckets": [_iso(s) for s in series.starts],
            "total": sum(series.totals.values()),
            "per_bucket": series.per_bucket,
            "types": {
                t: {"total": sum(counts), "counts": counts} for t, counts in series.counts.items()
            },
            "dau": [{"day": d.day, "users": d.count} for d in self.daily_active],
            "dau_today": self.daily_active[-1].count if self.daily_active else 0,
            "mau": {"month": self.month, "users": self.monthly_active},
            "signups": [{"day": d.day, "count": d.count} for d in self.signups],
            "top_users": [
                {"user_id": u.user_id, **{f: u.counters.get(f, 0) for f in USER_FIELDS}}
                for u in self.top_users
            ],
            "users_scanned": self.users_scanned,
        }


GRANULARITY_NAMES = {"m": "minute", "h": "hour", "d": "day"}


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _day_text(start: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(start))


class AnalyticsOps:
    """Every analytics operation as a plan or a list of commands; ``Analytics`` runs them."""

    def __init__(self, keys: KeySchema):
        self.keys = keys

    # --- writes ---------------------------------------------------------------

    def effects(self, activities: Iterable[Activity], now: float | None = None) -> list[Command]:
        """The Redis commands that count ``activities`` (merged per key), to queue on a
        MULTI. Buckets already past their retention at ``now`` are left out."""
        now = time.time() if now is None else now
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        active: dict[str, set[str]] = defaultdict(set)
        signups: Counter[str] = Counter()
        users: dict[str, Counter[str]] = defaultdict(Counter)
        expire_at: dict[str, int] = {}

        def live(key: str, until: int) -> bool:
            expire_at[key] = until
            return until > now

        keys = self.keys
        for activity in activities:
            at = activity.at
            for granularity in ("m", "h", "d"):
                key = keys.analytics_counts(granularity, bucket_of(granularity, at))
                if live(key, period_end(granularity, at) + RETENTION[granularity]):
                    counts[key][activity.type] += 1
            subject = activity.subject
            if subject and activity.type not in PASSIVE_TYPES:
                for period, granularity in (("d", "d"), ("m", "M")):
                    key = keys.analytics_active(period, bucket_of(granularity, at))
                    if live(key, period_end(granularity, at) + ACTIVE_RETENTION[period]):
                        active[key].add(subject)
            if activity.type == SIGNUP:
                key = keys.analytics_signups(bucket_of("d", at))
                if live(key, period_end("d", at) + SIGNUP_RETENTION):
                    signups[key] += 1
            for user, counter in _user_counters(activity):
                users[keys.analytics_user(user)][counter] += 1

        out: list[Command] = []
        for key, by_type in counts.items():
            out.extend(cmd("hincrby", key, t, n) for t, n in by_type.items())
            out.append(cmd("expireat", key, expire_at[key]))
        for key, members in active.items():
            out.append(cmd("pfadd", key, *sorted(members)))
            out.append(cmd("expireat", key, expire_at[key]))
        for key, n in signups.items():
            out.append(cmd("incrby", key, n))
            out.append(cmd("expireat", key, expire_at[key]))
        for key, by_counter in users.items():
            out.extend(cmd("hincrby", key, c, n) for c, n in by_counter.items())
            out.append(cmd("expire", key, USER_TTL))
        return out

    def record(self, activities: Sequence[Activity], now: float | None = None) -> Plan[int]:
        """Count ``activities`` in one MULTI (no idempotency: for tools and tests; the
        consumer queues ``effects`` on its own transaction). Returns how many."""
        commands = self.effects(activities, now)
        if commands:
            yield pipeline(*commands, transaction=True)
        return len(activities)

    # --- reads ----------------------------------------------------------------

    def _series_requests(
        self, window: int, now: float, granularity: str | None = None
    ) -> tuple[str, int, list[int], list[Command]]:
        if granularity is None:
            granularity = "m" if window <= MINUTE_SERIES_MAX else "h"
        if granularity not in STEP or window < 1:
            raise InvalidArgument(f"no series of {window}s per {granularity!r} (m, h or d)")
        step = STEP[granularity]
        last = period_start(granularity, now)
        n = max(1, -(-window // step))  # ceil: the window's buckets, the current one last
        starts = [last - step * i for i in range(n - 1, -1, -1)]
        requests = [
            cmd("hgetall", self.keys.analytics_counts(granularity, bucket_of(granularity, s)))
            for s in starts
        ]
        return granularity, step, starts, requests

    @staticmethod
    def _series(granularity: str, step: int, starts: list[int], replies: list[Any]) -> Series:
        types = sorted({t for reply in replies for t in reply or {}})
        counts = {t: [int((reply or {}).get(t, 0)) for reply in replies] for t in types}
        return Series(granularity, step, starts, counts)

    def series(
        self, window: int, granularity: str | None = None, now: float | None = None
    ) -> Plan[Series]:
        """Events per type over the last ``window`` seconds, zero-filled, the current
        (partial) bucket last: per ``granularity`` (``m``, ``h`` or ``d``), by default
        per minute up to 48 h and per hour beyond."""
        now = time.time() if now is None else now
        granularity, step, starts, requests = self._series_requests(window, now, granularity)
        replies = yield pipeline(*requests)
        return self._series(granularity, step, starts, list(replies))

    def _days(self, days: int, now: float) -> list[int]:
        today = period_start("d", now)
        return [today - DAY * i for i in range(days - 1, -1, -1)]

    def daily_active(self, days: int = 7, now: float | None = None) -> Plan[list[DayCount]]:
        """Distinct active users (HyperLogLog estimate) of each of the last ``days`` UTC
        days, oldest first, today last."""
        now = time.time() if now is None else now
        starts = self._days(days, now)
        replies = yield pipeline(
            *(cmd("pfcount", self.keys.analytics_active("d", bucket_of("d", s))) for s in starts)
        )
        return [DayCount(_day_text(s), int(n)) for s, n in zip(starts, replies, strict=True)]

    def monthly_active(self, now: float | None = None) -> Plan[int]:
        """Distinct active users (estimate) of the UTC month holding ``now``."""
        now = time.time() if now is None else now
        count = yield cmd("pfcount", self.keys.analytics_active("m", bucket_of("M", now)))
        return int(count)

    def signups(self, days: int = 7, now: float | None = None) -> Plan[list[DayCount]]:
        """Signups on each of the last ``days`` UTC days, oldest first."""
        now = time.time() if now is None else now
        starts = self._days(days, now)
        replies = yield cmd(
            "mget", [self.keys.analytics_signups(bucket_of("d", s)) for s in starts]
        )
        return [DayCount(_day_text(s), int(n or 0)) for s, n in zip(starts, replies, strict=True)]

    def user(self, user_id: str) -> Plan[dict[str, int]]:
        """One user's activity counters ({} if none)."""
        found = yield cmd("hgetall", self.keys.analytics_user(user_id))
        return {k: int(v) for k, v in (found or {}).items()}

    def top_users(self, limit: int = 10) -> Plan[tuple[list[UserActivity], int]]:
        """The ``limit`` users with the most messages (sent + received; then sent, then
        id), and how many users' counters were read (a SCAN, at most TOP_SCAN_LIMIT)."""
        pattern = self.keys.scan_pattern("analytics_user")
        # Every user's key is this text and the escaped id.
        head = self.keys.analytics_user("x")[:-1]
        start = len(head)
        found: list[UserActivity] = []
        cursor: int | str = 0
        scanned = 0
        while True:
            cursor, batch = yield cmd("scan", cursor, match=pattern, count=1000)
            batch = [k for k in batch if k.startswith(head)]
            if batch:
                replies = yield pipeline(*(cmd("hgetall", k) for k in batch))
                for key, reply in zip(batch, replies, strict=True):
                    if reply:
                        counters = {k: int(v) for k, v in reply.items()}
                        found.append(UserActivity(unescape_id(key[start:]), counters))
                scanned += len(batch)
            if int(cursor) == 0 or scanned >= TOP_SCAN_LIMIT:
                break
        found.sort(key=lambda u: (-u.messages, -u.counters.get("messages_sent", 0), u.user_id))
        return found[:limit], scanned

    def summary(
        self, window: int, *, days: int = 7, top: int = 10, now: float | None = None
    ) -> Plan[Summary]:
        """Everything `devctl stats` shows, for the last ``window`` seconds."""
        now = time.time() if now is None else now
        granularity, step, starts, requests = self._series_requests(window, now)
        day_starts = self._days(days, now)
        keys = self.keys
        replies = yield pipeline(
            *requests,
            *(cmd("pfcount", keys.analytics_active("d", bucket_of("d", s))) for s in day_starts),
            cmd("pfcount", keys.analytics_active("m", bucket_of("M", now))),
            cmd("mget", [keys.analytics_signups(bucket_of("d", s)) for s in day_starts]),
        )
        replies = list(replies)
        n = len(requests)
        series = self._series(granularity, step, starts, replies[:n])
        dau = [
            DayCount(_day_text(s), int(c))
            for s, c in zip(day_starts, replies[n : n + days], strict=True)
        ]
        mau = int(replies[n + days])
        signups = [
            DayCount(_day_text(s), int(c or 0))
            for s, c in zip(day_starts, replies[n + days + 1], strict=True)
        ]
        users, scanned = yield from self.top_users(top) if top > 0 else _nothing()
        return Summary(
            now=now,
            window=window,
            series=series,
            daily_active=dau,
            monthly_active=mau,
            month=time.strftime("%Y-%m", time.gmtime(now)),
            signups=signups,
            top_users=users,
            users_scanned=scanned,
        )


def _nothing() -> Plan[tuple[list[UserActivity], int]]:
    return [], 0
    yield  # a plan that sends nothing


def queue_effects(pipe: Any, commands: Iterable[Command]) -> None:
    """Queue commands from ``AnalyticsOps.effects`` on a redis-py pipeline (``ctx.tx``)."""
    for command in commands:
        getattr(pipe, command.name)(*command.args, **command.kwargs)


class Analytics(SyncFace[AnalyticsOps]):
    """The analytics counters, blocking (the CLI, tests and tools)."""

    def __init__(self, client: redis.Redis, keys: KeySchema, executor: SyncExecutor | None = None):
        super().__init__(client, keys, AnalyticsOps(keys), executor)

    record = sync_op(AnalyticsOps.record)
    series = sync_op(AnalyticsOps.series)
    daily_active = sync_op(AnalyticsOps.daily_active)
    monthly_active = sync_op(AnalyticsOps.monthly_active)
    signups = sync_op(AnalyticsOps.signups)
    user = sync_op(AnalyticsOps.user)
    top_users = sync_op(AnalyticsOps.top_users)
    summary = sync_op(AnalyticsOps.summary)
