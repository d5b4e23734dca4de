"""The Redis-domain commands, run as a user runs them (a subprocess) against the shared stack.

Each test uses its own key prefix (DEVCTL_REDIS_KEY_PREFIX), so counts and lists are exact.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devctl.cli.main import main
from devctl.engines.processes import free_port
from devctl.errors import EXIT_FAILED, EXIT_NOT_RUNNING, EXIT_USAGE
from devctl.state import StateServices
from tests.conftest import interrupt, running

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def devctl(stack: Any, prefix: str, state: StateServices) -> Iterator[Run]:
    """Run devctl on the shared stack under this test's key prefix (``state`` cleans it up)."""
    env = {**stack.env, "DEVCTL_REDIS_KEY_PREFIX": prefix, "COLUMNS": "250"}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devctl", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    yield run


@pytest.fixture
def cli(
    stack: Any,
    prefix: str,
    state: StateServices,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """Like ``devctl`` but in this process (through the same ``main``): fast, for many cases.

    Keyword arguments set environment variables for that one run (e.g. COLUMNS="40").
    """
    for name in list(os.environ):
        if name.startswith(("DEVCTL_", "REDIS_", "KAFKA_")):
            monkeypatch.delenv(name)
    base = {**stack.env, "DEVCTL_REDIS_KEY_PREFIX": prefix, "COLUMNS": "250"}

    def run(*args: str, stdin: str | None = None, **env: str) -> Any:
        with monkeypatch.context() as patch:
            for name, value in {**base, **env}.items():
                patch.setenv(name, value)
            patch.setattr(sys, "stdin", io.StringIO(stdin or ""))
            capsys.readouterr()
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_keys_prints_the_schema_with_the_configured_prefix(devctl: Run, prefix: str) -> None:
    rows = json.loads(ok(devctl("keys", "--json")).stdout)
    kinds = {r["kind"]: r for r in rows}
    assert kinds["session"]["pattern"] == f"{prefix}{{u:<user>}}:session:<sha256(token)>"
    assert kinds["idempotency"]["type"] == "string"
    assert all({"pattern", "type", "ttl", "purpose", "hash_tag"} <= set(r) for r in rows)
    table = ok(devctl("keys")).stdout
    assert "HASH TAG" in table.splitlines()[1] and f"{prefix}{{u:<user>}}:user" in table


def test_sessions_seed_hides_tokens_unless_asked(devctl: Run, state: StateServices) -> None:
    seeded = ok(devctl("sessions", "seed", "--users", "3", "--ttl", "600", "--json"))
    sessions = json.loads(seeded.stdout)["sessions"]
    assert len(sessions) == 3 and all("token" not in s for s in sessions)
    shown = json.loads(
        ok(
            devctl(
                "sessions", "seed", "--users", "2", "--id-prefix", "tok-", "--show-tokens", "--json"
            )
        ).stdout
    )["sessions"]
    tokens = [s["token"] for s in shown]
    assert all(state.sessions.validate(t) is not None for t in tokens)
    table = ok(devctl("sessions", "seed", "--users", "1", "--id-prefix", "tbl-"))
    assert "dc1." not in table.stdout and "--show-tokens" in table.stderr

    listed = ok(devctl("sessions", "list", "--json"))
    assert not any(t in listed.stdout for t in tokens)
    rows = json.loads(listed.stdout)
    assert len(rows) == 6
    assert {r["token_prefix"] for r in rows if r["user_id"].startswith("tok-")} == {
        t[:12] for t in tokens
    }
    assert all(500 < r["expires_in"] <= 600 for r in rows if r["user_id"].startswith("seed-"))
    text = ok(devctl("sessions", "list", "--user", "tok-00001")).stdout
    assert "tok-00001" in text and "tok-00002" not in text and tokens[0] not in text
    assert len(json.loads(ok(devctl("sessions", "list", "--limit", "2", "--json")).stdout)) == 2
    assert json.loads(ok(devctl("sessions", "count", "--json")).stdout) == {
        "sessions": 6,
        "users": 6,
    }


def test_sessions_show_and_revoke(devctl: Run, state: StateServices) -> None:
    state.user_cache.put({"_id": "42", "firstName": "Ada", "lastName": "L"})
    token = state.sessions.create("42", ip="9.9.9.9").token
    shown = json.loads(ok(devctl("sessions", "show", "-", "--json", stdin=token + "\n")).stdout)
    assert shown["session"]["user_id"] == "42" and shown["session"]["ip"] == "9.9.9.9"
    assert shown["user"]["firstName"] == "Ada"
    assert token not in json.dumps(shown)

    refused = devctl("sessions", "revoke", token)  # no terminal, no --yes
    assert refused.returncode == EXIT_USAGE and "--yes" in refused.stderr
    assert state.sessions.validate(token) is not None
    ok(devctl("sessions", "revoke", token, "--yes"))
    assert state.sessions.validate(token) is None
    gone = devctl("sessions", "show", token)
    assert gone.returncode == EXIT_FAILED and "no valid session" in gone.stderr

    keep, drop = state.sessions.create("7"), state.sessions.create("7")
    ok(devctl("sessions", "revoke", "--user", "7", "--id", drop.info.session_id[:12], "--yes"))
    assert state.sessions.validate(drop.token) is None
    assert state.sessions.validate(keep.token) is not None
    ok(devctl("sessions", "revoke", "--user", "7", "--yes"))
    assert state.sessions.validate(keep.token) is None
    assert devctl("sessions", "revoke", "--user", "7", "--yes").returncode == EXIT_FAILED
    assert devctl("sessions", "revoke").returncode == EXIT_USAGE


def test_presence_seed_list_show(devctl: Run, state: StateServices) -> None:
    seeded = json.loads(
        ok(devctl("presence", "seed", "--users", "6", "--instances", "2", "--json")).stdout
    )
    instances = seeded.pop("instances")
    assert seeded == {"users": 6, "connections": 8, "went_online": 6, "instance_ttl": 600.0}
    # Instance ids are this run's own: seed-<run>-instance-<k>.
    assert [i.rsplit("-", 1)[1] for i in instances] == ["1", "2"]
    assert all(i.startswith("seed-") and "-instance-" in i for i in instances)
    assert instances[0].split("-instance-")[0] == instances[1].split("-instance-")[0]
    state.presence.heartbeat("api-x")
    state.presence.connect("solo", "c", "api-x")
    state.presence.disconnect("solo", "c", "api-x")
    listed = json.loads(ok(devctl("presence", "list", "--json")).stdout)
    by_user = {u["user_id"]: u for u in listed["users"]}
    assert len(by_user) == 7 and not by_user["solo"]["online"]
    assert by_user["seed-user-00001"]["connections"] == 2
    assert by_user["seed-user-00001"]["instances"] == instances
    online = json.loads(ok(devctl("presence", "list", "--online", "--json")).stdout)["users"]
    assert {u["user_id"] for u in online} == {f"seed-user-0000{n}" for n in range(1, 7)}
    shown = json.loads(ok(devctl("presence", "show", "seed-user-00002", "--json")).stdout)
    assert shown["online"] is True and shown["connections"] == 1
    table = ok(devctl("presence", "list")).stdout
    assert instances[0] in table and "alive" in table and "offline" in table


def test_presence_watch_streams_changes(
    devctl: Run, stack: Any, prefix: str, state: StateServices
) -> None:
    env = {**stack.env, "DEVCTL_REDIS_KEY_PREFIX": prefix}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "devctl", "presence", "watch", "--json", "--count", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        channel = state.pubsub.presence_channel()
        deadline = time.monotonic() + 20
        while state.pubsub.subscribers(channel) < 1:
            assert time.monotonic() < deadline and watcher.poll() is None, "watch never subscribed"
            time.sleep(0.05)
        state.presence.heartbeat("api-1")
        state.presence.connect("w", "c1", "api-1")
        state.presence.connect("w", "c2", "api-1")  # no transition: not shown
        state.presence.disconnect("w", "c1", "api-1")
        state.presence.disconnect("w", "c2", "api-1")
        out, err = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["userId"], e["online"]) for e in lines] == [("w", True), ("w", False)]
    assert "2 presence changes seen" in err


def test_ratelimit_policies_show_reset(devctl: Run, state: StateServices) -> None:
    names = {p["name"] for p in json.loads(ok(devctl("ratelimit", "policies", "--json")).stdout)}
    assert "connection_request" in names
    for _ in range(3):
        state.ratelimits.check("login_email", "ada@example.com")
    shown = json.loads(
        ok(devctl("ratelimit", "show", "login_email", "Ada@Example.com", "--json")).stdout
    )
    assert (shown["used"], shown["remaining"], shown["allowed"]) == (3, 2, True)
    tiered = json.loads(
        ok(
            devctl("ratelimit", "show", "connection_request", "42", "--tier", "gold", "--json")
        ).stdout
    )
    assert tiered["limit"] is None and tiered["allowed"] is True
    assert devctl("ratelimit", "show", "nope", "x").returncode == EXIT_USAGE
    assert devctl("ratelimit", "reset", "login_email", "ada@example.com").returncode == EXIT_USAGE
    ok(devctl("ratelimit", "reset", "login_email", "ada@example.com", "--yes"))
    assert state.ratelimits.peek("login_email", "ada@example.com").used == 0


def test_cache_stats_and_flush(devctl: Run, state: StateServices) -> None:
    state.user_cache.get("1", lambda uid: {"_id": uid})
    state.user_cache.get("1", lambda uid: {"_id": uid})
    state.user_cache.remember_email("a@b.c", "1")
    state.messages.recent("1", "2", loader=lambda a, b, n: [{"text": "hi"}])
    state.sessions.create("1")
    stats = json.loads(ok(devctl("cache", "stats", "--json")).stdout)
    assert stats["caches"]["user"] == {"lookups": 2, "hits": 1, "misses": 1}
    assert stats["keys"]["user"] == 1 and stats["keys"]["email"] == 1
    assert stats["keys"]["messages"] == 1 and stats["keys"]["session"] == 1
    assert stats["memory"]["used_bytes"] > 0
    assert "HIT RATIO" in ok(devctl("cache", "stats")).stdout.splitlines()[1]

    assert devctl("cache", "flush", "--kind", "bogus", "--yes").returncode == EXIT_USAGE
    assert devctl("cache", "flush", "--kind", "user").returncode == EXIT_USAGE  # no --yes
    ok(devctl("cache", "flush", "--kind", "user", "--yes"))
    assert state.user_cache.peek("1") is None
    assert state.client.exists(state.keys.email("a@b.c"))
    ok(devctl("cache", "flush", "--yes"))
    assert not state.client.exists(state.keys.email("a@b.c"))
    assert state.messages.recent("1", "2") == []
    after = json.loads(ok(devctl("cache", "stats", "--json")).stdout)
    assert after["keys"]["session"] == 1  # sessions are never flushed by `cache flush`
    assert after["caches"]["user"]["lookups"] == 0


def test_devctl_test_runs_the_state_checks_and_leaves_nothing(devctl: Run, stack: Any) -> None:
    client = stack.redis()
    before = set(client.scan_iter(match="devconnect:*", count=1000))
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "test", "--group", "state", "--json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    names = [c["name"] for c in report["checks"]]
    assert len(names) == 6 and all(c["status"] == "pass" for c in report["checks"])
    assert "dead-instance sweep" in names and "rate limiter exact at its boundary" in names
    # Nothing new is left (keys of earlier tests may expire meanwhile: rate-limit buckets).
    assert set(client.scan_iter(match="devconnect:*", count=1000)) - before == set()
    client.close()


def test_presence_watch_exits_cleanly_on_ctrl_c(
    stack: Any, prefix: str, state: StateServices
) -> None:
    env = {**stack.env, "DEVCTL_REDIS_KEY_PREFIX": prefix}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "devctl", "presence", "watch", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    with running(watcher):
        deadline = time.monotonic() + 20
        while state.pubsub.subscribers(state.pubsub.presence_channel()) < 1:
            assert time.monotonic() < deadline and watcher.poll() is None, "watch never subscribed"
            time.sleep(0.05)
        out, err = interrupt(watcher, timeout=10)
    assert watcher.returncode == 0, err
    assert out == "" and "0 presence changes seen" in err and "Traceback" not in err


def test_data_is_shown_literally_never_as_markup(
    cli: Run, state: StateServices, prefix: str
) -> None:
    state.user_cache.put({"_id": "[/x]", "firstName": "[bold]Eve[/]", "lastName": "[/x]"})
    token = state.sessions.create("[/x]", ip="[red]10.0.0.1", user_agent="Mozilla [/x]").token
    state.sessions.create("u", user_agent="Mozilla [/x]")
    state.presence.heartbeat("api-1")
    state.presence.connect("[/x]", "c1", "api-1")

    listed = ok(cli("sessions", "list")).stdout
    assert listed.count("Mozilla [/x]") == 2 and "[red]10.0.0.1" in listed
    assert "sessions of [/x]" in ok(cli("sessions", "list", "--user", "[/x]")).stdout
    shown = ok(cli("sessions", "show", "-", stdin=token)).stdout
    assert "[bold]Eve[/] [/x]" in shown and "Mozilla [/x]" in shown
    assert "[/x]" in ok(cli("presence", "show", "[/x]")).stdout
    assert "[/x]" in ok(cli("presence", "list")).stdout
    assert "[/x]" in ok(cli("ratelimit", "show", "login_ip", "[/x]")).stdout
    odd_prefix = f"{prefix}[/x]:"
    assert (
        f"{odd_prefix}{{u:<user>}}:user"
        in ok(cli("keys", "--count", DEVCTL_REDIS_KEY_PREFIX=odd_prefix)).stdout
    )


def test_show_tokens_prints_each_token_whole_on_a_narrow_terminal(
    cli: Run, state: StateServices
) -> None:
    shown = ok(cli("sessions", "seed", "--users", "3", "--show-tokens", COLUMNS="40"))
    lines = [line.split("\t") for line in shown.stdout.splitlines() if "\t" in line]
    assert [user for user, _ in lines] == ["seed-user-00001", "seed-user-00002", "seed-user-00003"]
    for user, token in lines:
        valid = state.sessions.validate(token)
        assert valid is not None and valid.session.user_id == user


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sessions", "seed", "--ttl", "1e18"], "--ttl must be between 1 and"),
        (["sessions", "seed", "--ttl", "inf"], "--ttl must be between 1 and"),
        (["sessions", "seed", "--ttl", "nan"], "--ttl must be between 1 and"),
        (["presence", "seed", "--ttl", "inf"], "--ttl must be between 1 and"),
        (["presence", "seed", "--ttl", "1e18"], "--ttl must be between 1 and"),
        (["presence", "show", ""], "USER must not be empty"),
        (["ratelimit", "show", "login_ip", ""], "KEY must not be empty"),
        (["ratelimit", "show", "login_ip", " "], "KEY must not be empty"),
        (["ratelimit", "reset", "login_ip", "", "--yes"], "KEY must not be empty"),
        (["ratelimit", "show", "login_ip", "1.2.3.4", "--tier", "gold"], "has no tiers"),
        (["sessions", "revoke", "--user", "", "--yes"], "--user must not be empty"),
        (["sessions", "revoke", "--user", "7", "--id", "", "--yes"], "--id must not be empty"),
        (["sessions", "revoke", "--id", "abc", "--yes"], "give a TOKEN or --user"),
        (["sessions", "list", "--user", ""], "--user must not be empty"),
        (["sessions", "show", "not-a-token"], "not a session token"),
        (["sessions", "revoke", "dc1.short.NDI", "--yes"], "not a session token"),
    ],
)
def test_bad_input_is_a_usage_error_and_changes_nothing(
    cli: Run, state: StateServices, args: list[str], message: str
) -> None:
    keep = state.sessions.create("7")
    result = cli(*args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert message in result.stderr and "internal error" not in result.stderr
    assert state.sessions.validate(keep.token) is not None
    assert state.user_cache.peek("seed-user-00001") is None  # seed refused before writing


def test_a_prefix_with_a_hash_tag_is_a_config_error(cli: Run) -> None:
    for args in (["keys"], ["sessions", "count"]):
        result = cli(*args, DEVCTL_REDIS_KEY_PREFIX="dev{x}:")
        assert result.returncode == EXIT_USAGE and "redis.key_prefix" in result.stderr


def test_presence_sweep_reports_dead_instances_and_offline_users(
    cli: Run, state: StateServices
) -> None:
    state.presence.heartbeat("doomed", ttl=0.2)
    state.presence.heartbeat("healthy", ttl=30)
    state.presence.connect("gone", "c1", "doomed")
    state.presence.connect("stays", "c2", "doomed")
    state.presence.connect("stays", "c3", "healthy")
    time.sleep(0.3)
    swept = json.loads(ok(cli("presence", "sweep", "--json")).stdout)
    assert swept == {
        "dead_instances": ["doomed"],
        "went_offline": ["gone"],
        "connections_removed": 2,
    }
    again = ok(cli("presence", "sweep"))
    assert "0 dead instances swept, 0 connections removed, 0 users went offline" in again.stderr
    assert again.stdout == ""  # a summary only: nothing a script would read


@pytest.mark.parametrize("mode", [["--json"], []])
def test_presence_watch_needs_redis_to_start_in_both_modes(cli: Run, mode: list[str]) -> None:
    started = time.monotonic()
    result = cli(
        "presence",
        "watch",
        *mode,
        DEVCTL_ENGINE="external",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        KAFKA_BROKERS="127.0.0.1:1",
        DEVCTL_REDIS_CONNECT_TIMEOUT="0.3",
    )
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert "Redis is not reachable" in result.stderr and time.monotonic() - started < 5


def test_presence_seed_runs_do_not_interfere(devctl: Run, state: StateServices) -> None:
    """A later run with a short TTL neither cuts an earlier run's leases nor leaves
    connections that no sweep removes (issue 9, task 11)."""
    first = json.loads(ok(devctl("presence", "seed", "--users", "6", "--json")).stdout)
    second = json.loads(
        ok(devctl("presence", "seed", "--users", "6", "--ttl", "1", "--json")).stdout
    )
    assert not set(first["instances"]) & set(second["instances"])
    assert second["went_online"] == 0  # the users were online already
    time.sleep(1.5)  # the second run's leases lapse
    swept = json.loads(ok(devctl("presence", "sweep", "--json")).stdout)
    assert sorted(swept["dead_instances"]) == sorted(second["instances"])
    assert swept["went_offline"] == [] and swept["connections_removed"] == 8
    listed = json.loads(ok(devctl("presence", "list", "--json")).stdout)
    assert len(listed["users"]) == 6
    assert all(u["online"] and u["stale_connections"] == 0 for u in listed["users"])
    alive = {i["instance_id"] for i in listed["instances"] if i["alive"]}
    assert alive == set(first["instances"]) and listed["instances_total"] == 2


def test_presence_list_bounds_users_and_instances(devctl: Run, state: StateServices) -> None:
    state.presence.heartbeat_many([f"api-{n}" for n in range(30)], ttl=60)
    for n in range(3):
        state.presence.connect(f"u{n}", "c", "api-0")
    text = ok(devctl("presence", "list", "--limit", "2"))
    assert "instances (2 of 30)" in text.stdout and "presence (2 users)" in text.stdout
    instance_rows = text.stdout.split("instances (2 of 30)")[1].splitlines()
    assert sum("api-" in line for line in instance_rows) == 2
    assert "28 more instances not shown (--limit 2)" in text.stderr
    assert "1 more user not shown (--limit 2)" in text.stderr
    listed = json.loads(ok(devctl("presence", "list", "--limit", "1", "--json")).stdout)
    assert len(listed["users"]) == 1 and listed["users_not_shown"] == 2
    assert len(listed["instances"]) == 1
    assert listed["instances_total"] == 30 and listed["instances_not_shown"] == 29


@pytest.mark.parametrize(
    "args",
    [
        ["presence", "seed", "--instances", "200000"],
        ["presence", "seed", "--users", "200000"],
        ["sessions", "seed", "--users", "100001"],
    ],
)
def test_absurd_seed_sizes_need_confirmation(
    cli: Run, state: StateServices, args: list[str]
) -> None:
    refused = cli(*args)  # no terminal, no --yes
    assert refused.returncode == EXIT_USAGE, refused.stderr
    assert "more than the usual maximum" in refused.stderr and "--yes" in refused.stderr
    assert state.presence.known_users() == [] and state.sessions.count() == (0, 0)


def test_seed_summaries_go_to_stderr_and_use_singulars(cli: Run, state: StateServices) -> None:
    shown = ok(cli("sessions", "seed", "--users", "1", "--show-tokens"))
    [line] = shown.stdout.splitlines()  # stdout holds the token line only
    user, token = line.split("\t")
    assert user == "seed-user-00001" and state.sessions.validate(token) is not None
    assert "seeded 1 user with one session (" in shown.stderr and "id seed-user-00001" in (
        shown.stderr
    )
    two = ok(cli("sessions", "seed", "--users", "2")).stderr
    assert "seeded 2 users with one session each" in two
    presence = ok(cli("presence", "seed", "--users", "1", "--instances", "1"))
    assert presence.stdout == ""
    # The one user has a second tab, on the same (only) instance.
    assert "2 connections of 1 user on 1 instance (1 went online)" in presence.stderr
    assert "the instance stays alive for 600s" in presence.stderr
    assert ok(cli("sessions", "count")).stdout == "3 live sessions, 2 users\n"
    revoked = ok(cli("sessions", "revoke", "--user", "seed-user-00002", "--yes"))
    assert "revoked 1 session of seed-user-00002" in revoked.stderr and revoked.stdout == ""


def test_progress_is_drawn_on_a_terminal_only_after_a_second() -> None:
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from devctl.cli.commands.presence import progress_on_stderr

    for terminal in (True, False):
        buffer = io.StringIO()
        app = SimpleNamespace(err=Console(file=buffer, force_terminal=terminal, width=80))
        with progress_on_stderr(app, "seeding") as progress:  # type: ignore[arg-type]
            progress(1, 10)
            assert buffer.getvalue() == ""  # a quick step stays silent
            time.sleep(1.05)
            progress(5, 10)
        assert ("5/10" in buffer.getvalue()) is terminal


@pytest.mark.parametrize(
    "policy",
    [
        "{limit: 5, period: .inf}",
        "{limit: 99999999999999999999, period: 60}",
        "{limit: 5, period: 315360001}",
        "{limit: 5, period: 1.0e+20}",
        "{limit: 5, period: 0.000001}",
    ],
)
def test_a_rate_limit_out_of_bounds_is_refused_when_the_config_loads(
    cli: Run, tmp_path: Any, policy: str
) -> None:
    """Defect: accepted by `config validate`, then `ratelimit show` crashed (OverflowError)
    or reported a negative remaining."""
    config = tmp_path / "devctl.yaml"
    config.write_text(f"state:\n  rate_limits:\n    login_ip: {policy}\n")
    for args in (("config", "validate"), ("ratelimit", "show", "login_ip", "1.2.3.4")):
        result = cli("--config", str(config), *args)
        assert result.returncode == EXIT_USAGE, result.stderr
        assert "devctl.yaml:3" in result.stderr and "state.rate_limits.login_ip" in result.stderr
        assert "internal error" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("presence", "seed", "--users", "100000000000000000000", "--yes"),
        ("presence", "seed", "--users", "10", "--instances", "100000000000000000000", "--yes"),
        ("sessions", "seed", "--users", "100000000000000000000", "--yes"),
    ],
)
def test_seeding_has_a_hard_upper_limit(cli: Run, state: StateServices, args: Any) -> None:
    """Defect: a huge --users with --yes ended in a MemoryError (internal error)."""
    result = cli(*args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "between 1 and" in result.stderr and "internal error" not in result.stderr
    assert state.presence.known_users() == [] and state.sessions.count() == (0, 0)
