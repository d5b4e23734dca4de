"""Rate limiting with GCRA (generic cell rate algorithm) in one Lua script.

Each (policy, subject) bucket is ONE key holding the theoretical arrival time
(TAT) in microseconds of server time; the script reads it, decides and writes it
back with its expiry in the same atomic step, so there is no INCR-then-EXPIRE gap
and no counter without an expiry. GCRA needs O(1) memory whatever the limit
(a sliding-window log needs one entry per request) and is exact at the boundary:
a limit of N per period allows exactly N back to back, then one every period/N.
Server time (TIME) is used so API instances with skewed clocks agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from devctl.errors import ConfigError, UsageError
from devctl.state._redis import SyncExecutor, SyncFace, sync_op
from devctl.state.keys import KeySchema, normalise_email
from devctl.state.plan import Plan, Script, cmd
from devctl.state.validate import InvalidArgument, check_id

# KEYS: bucket. ARGV: emission interval T (us, integer), limit, cost.
# Returns {allowed, remaining, retry_after_us, tat - now (us)}.
_GCRA = Script(
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local burst = T * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + T * cost
if new_tat - now > burst then
  return {0, math.floor((burst - (tat - now)) / T), new_tat - now - burst, tat - now}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
             math.ceil((new_tat - now) / 1000))
end
return {1, math.floor((burst - (new_tat - now)) / T), 0, new_tat - now}
"""
)


# What a bucket may be keyed by ("key": anything else the caller chooses).
SUBJECTS = ("ip", "email", "user", "key")

# Bounds of a policy. The script computes in Lua doubles, exact for integers below
# 2**53 (~9.0e15): a TAT is now (~1.8e15 us since 1970) plus at most one period, so
# a year (3.2e13 us) stays exact for millennia. A millisecond is below any real
# policy and still a whole number of microseconds per request for its largest limit;
# 10**9 per period is more than any request rate one key sees. The emission interval
# (period / limit) must be at least 1 us, or the burst would no longer be the limit.
MIN_PERIOD_S = 0.001
MAX_PERIOD_S = 365 * 86400
MAX_LIMIT = 1_000_000_000


def policy_problem(limit: int | None, period: float) -> str | None:
    """Why (limit, period) is outside what GCRA here handles exactly; None if it is not."""
    if not MIN_PERIOD_S <= period <= MAX_PERIOD_S:  # also refuses inf and nan
        return (
            f"period must be between {MIN_PERIOD_S:g} s and {MAX_PERIOD_S:,} s (a year), "
            f"got {period!r}"
        )
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        return f"a limit must be between 1 and {MAX_LIMIT:,} (or null), got {limit!r}"
    if limit is not None and limit > int(period * 1_000_000):
        return (
            f"a limit of {limit:,} per {period:g} s is more than one request per microsecond "
            "(the limiter's resolution)"
        )
    return None


@dataclass(frozen=True)
class Policy:
    """N requests per period for one subject; ``tiers`` overrides N by membership tier."""

    name: str
    limit: int | None  # None: unlimited
    period: float  # seconds
    subject: str = "key"  # what a bucket is keyed by: ip, email, user
    tiers: Mapping[str, int | None] = field(default_factory=dict)
    default_tier: str | None = None

    def limit_for(self, tier: str | None) -> int | None:
        if not self.tiers:
            return self.limit
        chosen = tier or self.default_tier
        if chosen is None or chosen not in self.tiers:
            raise UsageError(
                f"policy '{self.name}' has no tier '{chosen}'",
                hint=f"tiers: {', '.join(self.tiers)}",
            )
        return self.tiers[chosen]

    def describe(self) -> str:
        def one(limit: int | None) -> str:
            return "unlimited" if limit is None else f"{limit}/{_period(self.period)}"

        if self.tiers:
            return ", ".join(f"{t} {one(n)}" for t, n in self.tiers.items())
        return one(self.limit)


def _period(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count}{unit}"
    return f"{seconds:g}s"


DEFAULT_POLICIES: dict[str, Policy] = {
    "login_ip": Policy("login_ip", 20, 900, "ip"),
    "login_email": Policy("login_email", 5, 900, "email"),
    # Each sign-up costs an argon2id hash (64 MiB, tens of ms): bounded per address.
    "signup_ip": Policy("signup_ip", 20, 600, "ip"),
    "api_user": Policy("api_user", 600, 60, "user"),
    "connection_request": Policy(
        "connection_request",
        None,
        86400,
        "user",
        tiers={"free": 10, "silver": 100, "gold": None},
        default_tier="free",
    ),
    "chat_message": Policy("chat_message", 30, 60, "user"),
}


def load_policies(config: Mapping[str, Any] | None) -> dict[str, Policy]:
    """Defaults overridden by ``state.rate_limits``; raise ConfigError on a bad entry.

    Each entry: ``{limit: N, period: SECONDS, subject: ip|email|user|key}``, or with tiers
    ``{period: SECONDS, tiers: {free: 10, silver: 100, gold: null}, default_tier: free}``;
    a null limit means unlimited. Keys left out keep their default.
    """
    policies = dict(DEFAULT_POLICIES)
    for name, entry in (config or {}).items():
        where = f"state.rate_limits.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError("must be a mapping with limit and period", key=where)
        unknown = set(entry) - {"limit", "period", "subject", "tiers", "default_tier"}
        if unknown:
            raise ConfigError(f"unknown setting {', '.join(sorted(unknown))}", key=where)
        base = policies.get(str(name), Policy(str(name), None, 0))
        period = entry.get("period", base.period)
        if isinstance(period, bool) or not isinstance(period, int | float) or period <= 0:
            raise ConfigError(
                f"period must be a positive number of seconds, got {period!r}", key=where
            )
        period = float(period)
        problem = policy_problem(None, period)
        if problem:
            raise ConfigError(problem, key=where)
        tiers_raw = entry.get("tiers", base.tiers)
        if not isinstance(tiers_raw, Mapping):
            raise ConfigError("tiers must map a tier name to a limit", key=where)
        tiers = {str(t): _limit(n, f"{where}.tiers.{t}", period) for t, n in tiers_raw.items()}
        default_tier = entry.get("default_tier", base.default_tier)
        if "default_tier" in entry and not tiers:
            raise ConfigError("default_tier needs tiers", key=where)
        if tiers and default_tier not in tiers:
            raise ConfigError(
                f"default_tier {default_tier!r} is not one of the tiers ({', '.join(tiers)})",
                key=where,
            )
        if name not in DEFAULT_POLICIES and "limit" not in entry and not tiers:
            raise ConfigError("a new policy needs a limit (or tiers)", key=where)
        limit = _limit(entry.get("limit", base.limit), where, period)
        subject = entry.get("subject", base.subject)
        if subject not in SUBJECTS:
            raise ConfigError(
                f"subject must be one of {', '.join(SUBJECTS)}, got {subject!r}", key=where
            )
        policies[str(name)] = Policy(
            str(name),
            limit,
            period,
            subject,
            tiers,
            default_tier if tiers else None,
        )
    return policies


def _limit(value: Any, where: str, period: float) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"a limit must be a positive integer or null, got {value!r}", key=where)
    problem = policy_problem(value, period)
    if problem:
        raise ConfigError(problem, key=where)
    return value


@dataclass(frozen=True)
class RateLimitResult:
    policy: str
    subject: str
    allowed: bool
    limit: int | None  # None: unlimited
    remaining: int | None
    retry_after: float  # seconds until this request would be allowed; 0 when allowed
    reset_after: float  # seconds until the bucket is full again

    @property
    def used(self) -> int | None:
        if self.limit is None or self.remaining is None:
            return None
        return self.limit - self.remaining

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "subject": self.subject,
            "allowed": self.allowed,
            "limit": self.limit,
            "remaining": self.remaining,
            "used": self.used,
            "retry_after": round(self.retry_after, 6),
            "reset_after": round(self.reset_after, 6),
        }


def normalise_subject(policy: Policy, subject: str) -> str:
    subject = check_id(subject, f"the {policy.subject} of a rate-limit bucket").strip()
    return normalise_email(subject) if policy.subject == "email" else subject


class RateLimiterOps:
    """Every rate-limit operation as a plan; ``RateLimiter`` and ``AsyncRateLimiter`` run them."""

    def __init__(self, keys: KeySchema, policies: Mapping[str, Policy]):
        self.keys = keys
        self.policies = dict(policies)

    def policy(self, policy: str | Policy) -> Policy:
        if isinstance(policy, Policy):
            return policy
        try:
            return self.policies[policy]
        except KeyError:
            raise UsageError(
                f"unknown rate-limit policy '{policy}'",
                hint=f"policies: {', '.join(sorted(self.policies))}",
            ) from None

    def check(
        self, policy: str | Policy, subject: str, *, tier: str | None = None, cost: int = 1
    ) -> Plan[RateLimitResult]:
        """Consume ``cost`` from the bucket if it fits; say whether it did."""
        if cost < 1:
            raise InvalidArgument("cost must be at least 1")
        return (yield from self._run(self.policy(policy), subject, tier, cost))

    def peek(
        self, policy: str | Policy, subject: str, *, tier: str | None = None
    ) -> Plan[RateLimitResult]:
        """The bucket's state without consuming; ``allowed`` says whether one more would pass."""
        return (yield from self._run(self.policy(policy), subject, tier, 0))

    def reset(self, policy: str | Policy, subject: str) -> Plan[bool]:
        """Empty a bucket (e.g. after a support call); True if it held anything."""
        chosen = self.policy(policy)
        deleted = yield cmd(
            "delete", self.keys.ratelimit(chosen.name, normalise_subject(chosen, subject))
        )
        return bool(deleted)

    def _run(
        self, policy: Policy, subject: str, tier: str | None, cost: int
    ) -> Plan[RateLimitResult]:
        subject = normalise_subject(policy, subject)
        limit = policy.limit_for(tier)
        if limit is None:
            return RateLimitResult(policy.name, subject, True, None, None, 0.0, 0.0)
        # Policies from the config were checked when it loaded; this catches one built
        # in code, before the script would compute with it.
        problem = policy_problem(limit, policy.period)
        if problem:
            raise InvalidArgument(f"rate-limit policy '{policy.name}': {problem}")
        interval = max(1, int(policy.period * 1_000_000) // limit)
        allowed, remaining, retry_us, tat_us = yield _GCRA(
            [self.keys.ratelimit(policy.name, subject)], [interval, limit, cost]
        )
        if cost == 0:
            # A peek: would one more request pass, and when?
            wait = max(0, int(tat_us) + interval - interval * limit)
            return RateLimitResult(
                policy.name,
                subject,
                wait == 0,
                limit,
                int(remaining),
                wait / 1e6,
                int(tat_us) / 1e6,
            )
        return RateLimitResult(
            policy.name,
            subject,
            bool(allowed),
            limit,
            int(remaining),
            int(retry_us) / 1e6,
            int(tat_us) / 1e6,
        )


class RateLimiter(SyncFace[RateLimiterOps]):
    """Check, inspect and reset rate-limit buckets."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        policies: Mapping[str, Policy],
        *,
        executor: SyncExecutor | None = None,
    ):
        super().__init__(client, keys, RateLimiterOps(keys, policies), executor)

    @property
    def policies(self) -> dict[str, Policy]:
        return self.ops.policies

    def policy(self, policy: str | Policy) -> Policy:
        """The policy of that name (a Policy is returned as is); UsageError if unknown."""
        return self.ops.policy(policy)

    check = sync_op(RateLimiterOps.check)
    peek = sync_op(RateLimiterOps.peek)
    reset = sync_op(RateLimiterOps.reset)
