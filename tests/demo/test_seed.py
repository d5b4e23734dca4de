"""devctl seed demo against a real API instance on the test stack, as a user runs it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devctl.errors import EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_USAGE
from devctl.processes import free_port
from tests.api.conftest import ApiServer, start_api, stop_api
from tests.conftest import Stack


@pytest.fixture(scope="module")
def api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("seed-api")
    server = start_api(stack, f"sqlite:///{root / 'devconnect.db'}", root / "api.log")
    try:
        yield server
    finally:
        stop_api(server)


def seed(
    stack: Stack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devctl", "seed", "demo", *args],
        env={**stack.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=110,
    )


def _data(client: Any, path: str) -> Any:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_a_small_run_makes_users_requests_connections_and_messages(
    stack: Stack, api: ApiServer
) -> None:
    done = seed(
        stack,
        "--users", "6", "--messages", "20", "--api-url", api.url, "--json",
        env={"DEMO_PASSWORD_T": "Dem0!pass-word"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + api.log()[-3000:]
    result = json.loads(done.stdout)
    assert set(result) >= {
        "api_url", "users", "requests", "connections", "messages", "failures", "elapsed",
        "password", "requests_interested", "requests_ignored", "accepted", "rejected",
    }  # fmt: skip
    assert result["api_url"] == api.url
    assert len(result["users"]) == 6
    assert result["password"] is not None  # generated: shown once, here
    assert result["requests"] == result["requests_interested"] + result["requests_ignored"] > 0
    assert result["connections"] >= 1
    assert result["messages"] + len(result["failures"]) == 20
    assert result["messages"] >= 18
    assert "users: 6/6" in done.stderr  # progress on stderr, JSON alone on stdout

    # Everything exists through the API: every user logs in with the printed password
    # and sees its profile, connections and chats.
    password = result["password"]
    connections = 0
    history = 0
    ids = {u["user_id"] for u in result["users"]}
    for user in result["users"]:
        client = api.client()
        login = client.post("/login", json={"emailId": user["email"], "password": password})
        assert login.status_code == 200, login.text
        me = client.get("/profile/view").json()
        assert me["_id"] == user["user_id"]
        assert me["skills"] and me["about"] and me["age"]
        friends = _data(client, "/user/connections")
        connections += len(friends)
        for friend in friends:
            assert friend["_id"] in ids
            if friend["_id"] > user["user_id"]:  # each conversation once
                history += len(_data(client, f"/chat/{friend['_id']}/history?limit=200"))
    assert connections == 2 * result["connections"]
    assert history == result["messages"]


def test_the_password_comes_from_the_named_variable(stack: Stack, api: ApiServer) -> None:
    password = f"Env!{uuid.uuid4().hex[:10]}A1"
    done = seed(
        stack,
        "--users", "2", "--messages", "0", "--api-url", api.url, "--password-env", "SEED_PW",
        env={"SEED_PW": password},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr  # never echoed
    assert "password: the one in the environment variable given" in done.stdout
    email = next(line.split()[0] for line in done.stdout.splitlines() if "@example.com" in line)
    login = api.client().post("/login", json={"emailId": email, "password": password})
    assert login.status_code == 200, login.text


def test_a_missing_password_variable_is_a_usage_error(stack: Stack, api: ApiServer) -> None:
    done = seed(stack, "--api-url", api.url, "--password-env", f"NOPE_{uuid.uuid4().hex}")
    assert done.returncode == EXIT_USAGE
    assert "--password-env NOPE_" in done.stderr and "not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_api_down_names_the_url_and_devctl_serve(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    # No --api-url and no serve in this data dir: the configured port on loopback.
    done = seed(
        stack, "--users", "2", env={"DEVCTL_API_PORT": str(port), "DEVCTL_DATA_DIR": str(tmp_path)}
    )
    assert done.returncode == EXIT_NOT_RUNNING
    assert f"http://127.0.0.1:{port}" in done.stderr
    assert "devctl serve" in done.stderr
    assert "Traceback" not in done.stderr

    as_json = seed(stack, "--api-url", f"http://127.0.0.1:{port}", "--json")
    assert as_json.returncode == EXIT_NOT_RUNNING
    error = json.loads((as_json.stdout or as_json.stderr).strip().splitlines()[-1])["error"]
    assert error["code"] == "not-running" and "devctl serve" in error["hint"]


def test_bad_arguments_are_usage_errors(stack: Stack) -> None:
    for args, said in (
        (["--users", "1"], "--users"),
        (["--api-url", "ftp://x"], "--api-url"),
    ):
        done = seed(stack, *args)
        assert done.returncode == EXIT_USAGE, done.stderr
        assert said in done.stderr
        assert "Traceback" not in done.stderr


def test_ctrl_c_closes_the_sockets_and_prints_what_was_made(stack: Stack, api: ApiServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "seed", "demo", "--users", "4", "--messages", "2000",
         "--api-url", api.url],
        env=stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = ""
        while "messages:" not in seen:  # the sockets are open and chat has started
            line = proc.stderr.readline()
            assert line, seen
            seen += line
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = seen + err
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "made so far" in err
    assert "users" in err and "Traceback" not in err
    # What the partial summary says is real: its first login works with its password.
    email = next(line.split()[0] for line in err.splitlines() if "@example.com" in line)
    password = err.split("(shown once): ")[1].split()[0]
    login = api.client().post("/login", json={"emailId": email, "password": password})
    assert login.status_code == 200, login.text
