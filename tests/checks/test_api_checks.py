"""The api group of `devctl test` on real servers: an instance of its own, a running API
(SQLite and PostgreSQL), a running serve; what it leaves behind (nothing: no check user in
the database, no key of the run in Redis, no process); an API that fails (the gate says
why, the rest is skipped, exit 3); a run killed half-way cleaned up by a later one."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devctl.checks import LEFTOVER_AGE, CheckContext, within
from devctl.checks.api_checks import api_ready, remove_leftovers
from devctl.checks.api_instance import start_failure
from devctl.errors import EXIT_NOT_RUNNING, EXIT_USAGE
from devctl.processes import free_port
from tests.api.conftest import ApiServer, start_api, stop_api
from tests.cli.conftest import Cli
from tests.conftest import Stack, running
from tests.db.postgres import PostgresServer, postgres_server, start_postgres  # noqa: F401

GROUP = [
    "API reachable and ready",
    "leftovers of interrupted runs removed",
    "signup of two check users",
    "login sets the cookie and answers the user",
    "profile view answers the logged-in user",
    "connection request sent",
    "request received and accepted",
    "both see the connection",
    "events of the journey on Kafka",
]
RUN_ID = re.compile(r"devctl-test-[0-9a-f]{8}-[0-9a-f]{8}")
CHECK_USERS = "SELECT count(*) FROM users WHERE email LIKE 'devctl-check+%'"


def devctl_test(env: dict[str, str], *args: str, timeout: float = 120) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "devctl", "test", "--json", "-g", "api", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def checks_of(result: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"] if c["group"] == "api"}


def run_id_of(checks: dict[str, dict[str, Any]]) -> str:
    found = RUN_ID.search(checks["signup of two check users"]["reason"])
    assert found, checks
    return found[0]


def keys(stack: Stack) -> set[str]:
    client = stack.redis()
    try:
        return set(client.scan_iter(count=1000))
    finally:
        client.close()


def processes_of(run_id: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if run_id in cmdline:
            found.append(f"{proc.pid}: {cmdline}")
    return found


def sqlite_count(path: Path, query: str = CHECK_USERS) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute(query).fetchone()[0])


def assert_all_passed(result: Any) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stdout + result.stderr
    checks = checks_of(result)
    assert list(checks) == GROUP
    assert {c["status"] for c in checks.values()} == {"pass"}, checks
    document = json.loads(result.stdout)
    assert document["cleanup_problems"] == [] and document["ok"] is True
    return checks


# --- passing ---------------------------------------------------------------------------


def test_an_instance_of_its_own_passes_and_leaves_nothing_behind(stack: Stack) -> None:
    before = keys(stack)
    secret = (stack.data_dir / "api-secret").exists()  # the API tests' instances write one
    started = time.monotonic()
    result = devctl_test(stack.env)
    took = time.monotonic() - started
    checks = assert_all_passed(result)
    gate = checks["API reachable and ready"]["reason"]
    assert gate.startswith("own instance at http://127.0.0.1:"), gate
    run_id = run_id_of(checks)
    assert (
        f"devctl-check+{run_id}-a@devctl.invalid" in checks["signup of two check users"]["reason"]
    )
    assert processes_of(run_id) == []
    assert not list((stack.data_dir / "tmp").glob(f"{run_id}*"))
    assert (stack.data_dir / "api-secret").exists() == secret  # it had a key of its own
    assert keys(stack) - before == set()  # sessions, cache entries, buckets: all gone
    assert took < 15, took  # a healthy run takes a few seconds


@pytest.fixture(params=["sqlite", "postgresql"])
def running_api(
    request: pytest.FixtureRequest, stack: Stack, tmp_path: Path
) -> Iterator[tuple[ApiServer, Any]]:
    """A running API instance, and how to count the check users in its database."""
    if request.param == "sqlite":
        path = tmp_path / "devconnect.db"
        url = f"sqlite:///{path}"

        def count() -> int:
            return sqlite_count(path)
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        name = f"checks_{uuid.uuid4().hex[:10]}"
        url = postgres.create_database(name)

        def count() -> int:
            return int(postgres.psql(CHECK_USERS, database=name))

    server = start_api(stack, url, tmp_path / "api.log")
    try:
        yield server, count
    finally:
        stop_api(server)
        if request.param == "postgresql":
            postgres.drop_database(name)


def test_a_running_api_passes_and_keeps_running_without_the_check_users(
    stack: Stack, running_api: tuple[ApiServer, Any]
) -> None:
    server, count_check_users = running_api
    before = keys(stack)
    result = devctl_test(server.env, "--api-url", server.url)
    checks = assert_all_passed(result)
    assert checks["API reachable and ready"]["reason"] == server.url
    assert count_check_users() == 0
    assert keys(stack) - before == set()
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


def test_a_running_serve_is_the_target(cli: Cli) -> None:
    port = free_port()
    serve = cli.run(
        "serve", "--detach", "--port", str(port), "--no-consumers", "--instances", "1", timeout=120
    )
    assert serve.returncode == 0, serve.stdout + serve.stderr
    result = cli.run("test", "--json", "-g", "api", timeout=120)
    checks = assert_all_passed(result)
    gate = checks["API reachable and ready"]["reason"]
    assert gate == f"api-1 of the running serve at http://127.0.0.1:{port}", gate
    assert sqlite_count(cli.data_dir / "devconnect.db") == 0
    assert not (cli.data_dir / "tmp").exists()


# --- failing ---------------------------------------------------------------------------


def assert_gate_failed(result: Any, *reason: str) -> str:
    assert result.returncode == EXIT_NOT_RUNNING, result.stdout + result.stderr
    checks = checks_of(result)
    gate = checks.pop("API reachable and ready")
    assert gate["status"] == "fail" and all(part in gate["reason"] for part in reason), gate
    assert {(c["status"], c["reason"]) for c in checks.values()} == {("skip", "api not reachable")}
    document = json.loads(result.stdout)
    assert document["unreachable"] == {"api": gate["reason"]}
    assert document["down"] == {} and document["cleanup_problems"] == []
    return str(gate["reason"])


def test_a_secret_the_instance_would_refuse_stops_the_run_before_it_starts(stack: Stack) -> None:
    # The API instance refuses a short secret; the config check now refuses it first,
    # so the run ends as a configuration error and starts nothing. (How a failed start
    # is explained from the instance's log: the start_failure test below.)
    before = keys(stack)
    result = devctl_test({**stack.env, "DEVCTL_API_SECRET": "short"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "api.secret" in result.stdout + result.stderr
    assert "short" not in result.stdout + result.stderr  # a secret is never echoed
    assert not list((stack.data_dir / "tmp").glob("devctl-test-*"))
    assert keys(stack) - before == set()


def test_an_api_whose_database_went_away_fails_the_gate(stack: Stack, tmp_path: Path) -> None:
    postgres = start_postgres()
    try:
        url = postgres.create_database("gone")
        server = start_api(stack, url, tmp_path / "api.log")
    except BaseException:
        postgres.stop()
        raise
    try:
        postgres.stop()  # its port now refuses connections
        result = devctl_test(server.env, "--api-url", server.url)
        reason = assert_gate_failed(result, f"the API at {server.url} is not ready", "database")
        assert "Connect" in reason or "refused" in reason, reason
        text = subprocess.run(
            [sys.executable, "-m", "devctl", "test", "-g", "api", "--api-url", server.url],
            capture_output=True,
            text=True,
            env=server.env,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert text.returncode == EXIT_NOT_RUNNING
        assert "FAIL api      API reachable and ready" in text.stdout
        assert "SKIP api" in text.stdout and "0 passed, 1 failed, 8 skipped" in text.stdout
        assert "api not reachable:" in text.stderr and "Traceback" not in text.stderr
        assert "hint: the first check of api failed, so the rest was skipped" in text.stderr
    finally:
        stop_api(server)


def test_an_api_url_that_does_not_answer_or_is_no_url(stack: Stack) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert_gate_failed(devctl_test(stack.env, "--api-url", dead), f"the API at {dead}", "refused")
    bad = devctl_test(stack.env, "--api-url", "ftp://example.com")
    assert bad.returncode == EXIT_USAGE
    assert "--api-url: 'ftp://example.com' is not an http(s) URL" in bad.stderr


def test_a_serve_without_a_healthy_instance_is_not_replaced(cli: Cli) -> None:
    from devctl.supervisor.control import stop_serve
    from devctl.supervisor.daemon import detach
    from devctl.supervisor.plan import ServePlan
    from tests.supervisor.conftest import FAST, child

    assert cli.run("up").returncode == 0
    port = free_port()
    degraded = child(
        "api-1",
        "server",
        port,
        503,  # /readyz: degraded, database down
        role="api",
        port=port,
        health_url=f"http://127.0.0.1:{port}/healthz",
        ready_url=f"http://127.0.0.1:{port}/readyz",
        stop_timeout=5,
    )
    try:
        state = detach(ServePlan((degraded,), cli.data_dir, FAST), cwd=cli.cwd, timeout=30)
        result = cli.run("test", "--json", "-g", "api", timeout=120)
        assert_gate_failed(
            result,
            f"devctl serve runs (pid {state.supervisor.pid}) but none of its API instances",
            "api-1 degraded",
        )
        assert not (cli.data_dir / "tmp").exists()  # no instance of its own instead
    finally:
        stop_serve(cli.data_dir, timeout=10)


# --- killed half-way -------------------------------------------------------------------


def test_a_killed_run_leaves_no_process_and_the_next_run_removes_what_it_left(
    stack: Stack, tmp_path: Path
) -> None:
    before = keys(stack)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "test", "-g", "api"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**stack.env, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
    )
    with running(proc):
        assert proc.stdout is not None
        run_id = ""
        for line in proc.stdout:
            found = RUN_ID.search(line)
            run_id = found[0] if found and not run_id else run_id
            # By then it holds sessions and charged every kind of rate-limit bucket.
            if "connection request sent" in line:
                break
        else:
            raise AssertionError(f"the run ended early: {proc.communicate()}")
        assert line.startswith("PASS") and run_id, line
        assert processes_of(run_id), "its API instance should be running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # Its instance died with it (PR_SET_PDEATHSIG), even without a clean-up.
    deadline = time.monotonic() + 10
    while processes_of(run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(run_id) == []
    [left] = list((stack.data_dir / "tmp").glob(f"{run_id}-api-*"))
    assert keys(stack) - before, "its users' sessions should still be in Redis"

    from devctl.db.migrate import upgrade

    target = f"sqlite:///{tmp_path / 'target.db'}"  # the next run's API's database
    upgrade(target)
    ctx = CheckContext(stack.settings, stack.endpoints)
    try:
        remove_leftovers(ctx, target)
        assert left.exists()  # too young to be a leftover: a run still going is never touched
        users, dirs = remove_leftovers(ctx, target, now=time.time() + LEFTOVER_AGE + 1)
    finally:
        assert ctx.close() == []
    assert users >= 2 and dirs >= 1
    assert not left.exists()
    assert keys(stack) - before == set()


def test_check_users_of_killed_runs_are_removed_from_the_target_database(
    stack: Stack, tmp_path: Path
) -> None:
    from devctl.checks import new_run_id
    from devctl.checks.api_checks import check_email, loopback_source
    from devctl.state.keys import KeySchema

    path = tmp_path / "devconnect.db"
    server = start_api(stack, f"sqlite:///{path}", tmp_path / "api.log")
    killed, live = new_run_id(time.time() - LEFTOVER_AGE - 60), new_run_id(time.time() - 30)
    schema = KeySchema(stack.settings.redis.key_prefix)
    try:
        before = keys(stack)
        users = {}
        for run_id in (killed, live):
            # As the run did: from its own loopback address, signed up and logged in.
            client = server.client(source=loopback_source(run_id))
            body = {
                "firstName": "Left",
                "emailId": check_email(run_id, "a"),
                "password": "Aa1!aaaa",
            }
            assert client.post("/signup", json=body).status_code == 200
            login = client.post("/login", json={"emailId": body["emailId"], "password": "Aa1!aaaa"})
            assert login.status_code == 200, login.text
            users[run_id] = login.json()["_id"]
        result = devctl_test(server.env, "--api-url", server.url)
        checks = assert_all_passed(result)
        assert checks["leftovers of interrupted runs removed"]["reason"] == (
            "removed 1 user, 0 instance directories"
        )
        assert sqlite_count(path) == 1  # the live run's user stays
        left = keys(stack) - before
        assert left and all(users[killed] not in key for key in left), left
        assert schema.ratelimit("login_ip", loopback_source(killed)) not in left
        assert schema.ratelimit("login_ip", loopback_source(live)) in left
    finally:
        stop_api(server)
        client = stack.redis()
        client.delete(*(keys(stack) - before) or ["-"])
        client.close()


def test_the_gate_runs_in_process_and_its_clean_up_stops_the_instance(stack: Stack) -> None:
    from devctl.supervisor import health

    ctx = CheckContext(stack.settings, stack.endpoints)
    try:
        # In a worker thread that ends, as run_checks runs it: PR_SET_PDEATHSIG fires when
        # the launching thread ends, so the instance must come from a thread of its own.
        finished, note = within(lambda: api_ready(ctx), 60, "gate")
        assert finished and note.startswith("own instance at "), note
        time.sleep(0.5)
        url = note.split()[3].rstrip(",")
        assert health.get(f"{url}/healthz").status == 200
        assert processes_of(ctx.run_id)
    finally:
        assert ctx.close() == []
    assert processes_of(ctx.run_id) == []


# --- the whole command -------------------------------------------------------------------


def test_devctl_test_shows_the_api_group(stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "test"],
        capture_output=True,
        text=True,
        env={**stack.env, "COLUMNS": "200"},
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("PASS api ")]
    assert [row[14:].split("  ")[0].strip() for row in rows] == GROUP
    assert re.search(r"\d+ passed, 0 failed, 0 skipped in ", result.stdout)


# --- reading why an instance failed -------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (
            [
                "ERROR:    Traceback (most recent call last):",
                '  File "x.py", line 1, in <module>',
                "ConnectionRefusedError: [Errno 111] Connection refused",
                "",
                "The above exception was the direct cause of the following exception:",
                "devctl.errors.DatabaseUnavailable: the database postgresql+asyncpg://u@h:1/x "
                "is unavailable: Connection refused",
                "ERROR:    Application startup failed. Exiting.",
            ],
            "DatabaseUnavailable: the database postgresql+asyncpg://u@h:1/x is unavailable: "
            "Connection refused",
        ),
        (
            ["2026-12-01 18:10:26.030 ERROR devctl.api: api-1: key 'api.secret': too short"],
            "api-1: key 'api.secret': too short",
        ),
        (
            [
                "ERROR:    [Errno 98] error while attempting to bind on address "
                "('127.0.0.1', 3000): address already in use"
            ],
            "[Errno 98] error while attempting to bind on address ('127.0.0.1', 3000): "
            "address already in use",
        ),
        (["Killed"], "Killed"),
        ([], "it printed nothing"),
    ],
)
def test_the_reason_an_instance_failed_is_read_from_its_output(
    output: list[str], reason: str
) -> None:
    assert start_failure(output) == reason
