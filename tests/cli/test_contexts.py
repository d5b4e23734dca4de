"""`devctl context ...`, --context, and the guard of destructive commands on a protected
context: refused without the name (nothing changes on the servers), done with it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from devctl.clients.kafka_client import consumer_conf, make_admin
from devctl.errors import EXIT_USAGE
from devctl.state import from_settings
from devctl.streams.groups import GroupAdmin


class Run:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env, self.cwd = env, cwd

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devctl", *args],
            env={**self.env, **env},
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def contexts_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / "contexts.yaml"


@pytest.fixture
def devctl(stack: Any, unique: str, tmp_path: Path, contexts_file: Path) -> Run:
    """devctl on the session stack, with its own contexts file and Redis key prefix."""
    env = {
        **stack.env,
        "DEVCTL_CONTEXTS_FILE": str(contexts_file),
        "DEVCTL_REDIS_KEY_PREFIX": f"t{unique}:",
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    return Run(env, tmp_path)


@pytest.fixture
def prod(devctl: Run) -> Run:
    """A protected context `prod` on the local engine (the stack's env sets its ports)."""
    assert devctl("context", "add", "prod", "--engine", "local", "--protected").returncode == 0
    return devctl


@pytest.fixture
def state(stack: Any, unique: str) -> Iterator[Any]:
    services = from_settings(stack.settings, stack.endpoints, prefix=f"t{unique}:")
    try:
        yield services
    finally:
        keys = list(services.client.scan_iter(match=f"t{unique}:*"))
        if keys:
            services.client.delete(*keys)
        services.close()


def _keys(state: Any, unique: str) -> set[str]:
    return set(state.client.scan_iter(match=f"t{unique}:*"))


def refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "context: prod (protected, engine local)" in result.stderr
    assert "nothing was changed" in result.stderr
    assert "--confirm-context prod" in result.stderr


def test_commands_and_the_file(devctl: Run, contexts_file: Path) -> None:
    added = devctl(
        "context",
        "add",
        "staging",
        "--engine",
        "external",
        "--redis-url",
        "redis://redis.staging:6379/0",
        "--kafka-brokers",
        "k1:9092",
        "--set",
        "kafka.security_protocol=SSL",
    )
    assert added.returncode == 0, added.stderr
    assert contexts_file.stat().st_mode & 0o777 == 0o600
    assert devctl("context", "add", "dev", "--engine", "local", "--use").returncode == 0
    listed = json.loads(devctl("context", "list", "--json").stdout)
    assert listed["current"] == "dev" and listed["active"] == "dev"
    assert [c["name"] for c in listed["contexts"]] == ["staging", "dev"]
    table = devctl("context", "list").stdout
    assert "* dev" in " ".join(table.split()) and "redis.url=redis://redis.staging" in table
    shown = json.loads(devctl("--context", "staging", "context", "show", "--json").stdout)
    assert shown["settings"]["kafka.security_protocol"] == "SSL"
    assert shown["chosen_by"] == "flag"
    # config show: values from the context, with their provenance
    config = json.loads(devctl("--context", "staging", "config", "show", "--json").stdout)
    assert config["context"]["name"] == "staging"
    assert config["settings"]["kafka.brokers"] == {"value": "k1:9092", "source": "context staging"}
    text = devctl("config", "show", DEVCTL_CONTEXT="staging").stdout
    assert "context: staging (engine external)" in text
    assert devctl("context", "remove", "dev").returncode == 0
    assert json.loads(devctl("context", "list", "--json").stdout)["current"] is None
    # bad input: exit 2, a message, the file untouched
    before = contexts_file.read_text()
    for args in (
        ("context", "add", "bad", "--engine", "local", "--set", "redis.password=x"),
        ("context", "add", "bad", "--engine", "external", "--redis-url", "redis://u:pw@h:1/0"),
        ("context", "add", "bad", "--engine", "local", "--set", "nonsense"),
        ("context", "add", "staging", "--engine", "local"),
        ("context", "use", "nope"),
        ("--context", "nope", "status"),
    ):
        result = devctl(*args)
        assert result.returncode == EXIT_USAGE, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert contexts_file.read_text() == before


def test_status_names_the_active_context(prod: Run) -> None:
    result = prod("--context", "prod", "status")
    assert result.returncode == 0, result.stderr
    assert "context: prod (protected, engine local)" in result.stderr


def test_read_only_commands_work_on_a_protected_context(prod: Run) -> None:
    assert prod("--context", "prod", "topics", "list").returncode == 0
    assert prod("--context", "prod", "sessions", "count").returncode == 0


def test_topics_delete(prod: Run, stack: Any, unique: str) -> None:
    topic = f"ctx-{unique}"
    admin = make_admin(stack.endpoints, stack.settings)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)

    def exists() -> bool:
        return topic in admin.list_topics(timeout=10).topics

    refused(prod("--context", "prod", "topics", "delete", topic, "--yes"))
    wrong = prod("--context", "prod", "topics", "delete", topic, "--yes", "--confirm-context", "qa")
    assert wrong.returncode == EXIT_USAGE and "'qa' does not match" in wrong.stderr
    refused(prod("topics", "delete", topic, "--yes", DEVCTL_CONTEXT="prod"))
    assert exists()
    done = prod(
        "--context", "prod", "topics", "delete", topic, "--yes", "--confirm-context", "prod"
    )
    assert done.returncode == 0, done.stderr
    assert not exists()


def test_sessions_revoke(prod: Run, state: Any, unique: str) -> None:
    state.sessions.create("u1")
    before = _keys(state, unique)
    assert before
    refused(prod("--context", "prod", "sessions", "revoke", "--user", "u1", "--yes"))
    assert _keys(state, unique) == before
    assert state.sessions.list_for_user("u1")
    done = prod(
        "--context", "prod", "sessions", "revoke", "--user", "u1", "--yes",
        "--confirm-context", "prod",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not state.sessions.list_for_user("u1")


def test_cache_flush(prod: Run, state: Any, unique: str) -> None:
    state.user_cache.put({"_id": "u1", "firstName": "Ada"})
    assert state.user_cache.peek("u1") is not None
    refused(prod("--context", "prod", "cache", "flush", "--yes"))
    assert state.user_cache.peek("u1") is not None
    done = prod("--context", "prod", "cache", "flush", "--yes", "--confirm-context", "prod")
    assert done.returncode == 0, done.stderr
    assert state.user_cache.peek("u1") is None


def test_ratelimit_reset(prod: Run, state: Any, unique: str) -> None:
    state.ratelimits.check("login_ip", "203.0.113.9")
    before = _keys(state, unique)
    assert before
    refused(prod("--context", "prod", "ratelimit", "reset", "login_ip", "203.0.113.9", "--yes"))
    assert _keys(state, unique) == before
    done = prod(
        "--context", "prod", "ratelimit", "reset", "login_ip", "203.0.113.9", "--yes",
        "--confirm-context", "prod",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _keys(state, unique) == set()


def test_groups_reset_execute(prod: Run, stack: Any, unique: str) -> None:
    topic, group = f"ctx-{unique}", f"ctx-grp-{unique}"
    admin = make_admin(stack.endpoints, stack.settings)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=10)
    consumer = Consumer(consumer_conf(stack.endpoints, stack.settings, group_id=group))
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
    finally:
        consumer.close()
    groups = GroupAdmin(stack.endpoints, stack.settings)
    try:
        before = groups.committed(group)
        reset = ("groups", "reset", group, "--topic", topic, "--to", "latest", "--yes")
        # a dry run is not destructive: no confirmation asked
        assert prod("--context", "prod", *reset).returncode == 0
        refused(prod("--context", "prod", *reset, "--execute"))
        assert groups.committed(group) == before
        done = prod("--context", "prod", *reset, "--execute", "--confirm-context", "prod")
        assert done.returncode == 0, done.stderr
    finally:
        groups.delete(group)
        admin.delete_topics([topic])[topic].result(timeout=10)


def test_down_purge(prod: Run, tmp_path: Path) -> None:
    data = tmp_path / "other-data"
    (data / "logs").mkdir(parents=True)
    env = {"DEVCTL_DATA_DIR": str(data)}
    refused(prod("--context", "prod", "down", "--purge", "--yes", **env))
    assert (data / "logs").is_dir()
    # without --purge, down is not destructive (nothing runs in that data dir)
    assert prod("--context", "prod", "down", **env).returncode == 0
    done = prod("--context", "prod", "down", "--purge", "--yes", "--confirm-context", "prod", **env)
    assert done.returncode == 0, done.stderr
    assert not data.exists()


def test_json_errors_and_unprotected_contexts(prod: Run, tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    reset = ("groups", "reset", "g", "--topic", "t", "--to", "latest", "--execute", "--yes")
    result = prod("--context", "prod", *reset, "--json")
    assert result.returncode == EXIT_USAGE
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert error["code"] == "context-protected"
    assert prod("context", "add", "dev", "--engine", "local").returncode == 0
    plain = prod("--context", "dev", "down", "--purge", "--yes", DEVCTL_DATA_DIR=str(data))
    assert plain.returncode == 0, plain.stderr
    assert "context: dev (engine local)" in plain.stderr
    assert not data.exists()


def test_concurrent_changes_to_the_contexts_file_are_all_kept(
    devctl: Run, contexts_file: Path
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "devctl", "context", "add", f"c{i}", "--engine", "local"],
            env=devctl.env,
            cwd=devctl.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(8)
    ]
    assert [p.wait(60) for p in procs] == [0] * 8
    listed = json.loads(devctl("context", "list", "--json").stdout)
    assert sorted(c["name"] for c in listed["contexts"]) == sorted(f"c{i}" for i in range(8))


def test_an_empty_context_name_is_refused_not_a_fall_back_to_the_current_one(prod: Run) -> None:
    for result in (prod("--context", "", "status"), prod("status", DEVCTL_CONTEXT="")):
        assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
        assert "invalid context name ''" in result.stderr


def test_the_protection_prompt_goes_to_stderr_not_into_the_output(prod: Run) -> None:
    """A terminal on stdin (the prompt is asked), stdout piped: the command's output only."""
    import os
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devctl", "--context", "prod", "cache", "flush", "--yes"],
            env=prod.env,
            cwd=prod.cwd,
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(master, b"prod\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, out + err
    assert "Type its name" in err and "Type its name" not in out
    assert "context:" not in out  # the header is on stderr too
