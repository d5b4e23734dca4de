"""Every configured value is checked when settings load: endpoints, ranges, nested policies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devctl.config.loader import load_settings
from devctl.config.schema import KEYS
from devctl.errors import EXIT_USAGE, ConfigError

DEVCTL = [sys.executable, "-m", "devctl"]


def run(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))
    }
    # The data dir is the test's own, so no running stack is ever found or touched.
    clean.update(DEVCTL_DATA_DIR=str(cwd / "data"), COLUMNS="200", **env)
    return subprocess.run(
        [*DEVCTL, *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "url",
    [
        "garbage",
        "http://h:6379",
        "redis://:6379/0",
        "redis://h:99999/0",
        "redis://h:abc/0",
        "redis://h:0",
        "redis://h:6379/x",
        "redis://h:6379?db=one",
        "unix://",
    ],
)
def test_bad_redis_urls_are_refused_naming_the_variable(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={"REDIS_URL": url})
    assert info.value.message.startswith("env REDIS_URL, key 'redis.url': ")
    assert info.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    "url",
    [
        "redis://h:6379/0",
        "redis://h",
        "rediss://user:pw@redis.example.com:6380/15",
        "redis://[::1]:6379",
        "REDIS://h:1",
        "unix:///run/redis.sock?db=2",
    ],
)
def test_good_redis_urls_pass(tmp_path: Path, url: str) -> None:
    assert load_settings(cwd=tmp_path, environ={"REDIS_URL": url}).redis.url == url


def test_a_bad_url_never_shows_its_password(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={"REDIS_URL": "redis://u:hunter2@h:99999/0"})
    assert "hunter2" not in info.value.message
    assert "'h:99999'" in info.value.message


@pytest.mark.parametrize(
    ("brokers", "expected"),
    [
        ("nonsense:abc", "port 'abc' is not a number"),
        ("kafka-1", "has no port"),
        ("a:9092,,b:9092", "an empty entry"),
        ("a:9092,b:70000", "'b:70000': port '70000'"),
        (":9092", "no valid host name"),
        ("bogus://a:9092", "unknown protocol"),
    ],
)
def test_bad_broker_lists_are_refused(tmp_path: Path, brokers: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={"KAFKA_BROKERS": brokers})
    assert info.value.message.startswith("env KAFKA_BROKERS, key 'kafka.brokers': ")
    assert expected in info.value.message


def test_good_broker_lists_pass(tmp_path: Path) -> None:
    brokers = "kafka-1:9092, 10.0.0.2:9093,[::1]:9094,SASL_SSL://k.example.com:9095"
    assert load_settings(cwd=tmp_path, environ={"KAFKA_BROKERS": brokers}).kafka.brokers == brokers


def test_endpoints_in_dotenv_and_file_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("# endpoints\nKAFKA_BROKERS=nonsense:abc\n")
    with pytest.raises(ConfigError, match=r"^\.env:2 \(KAFKA_BROKERS\), key 'kafka\.brokers'"):
        load_settings(cwd=tmp_path, environ={})
    (tmp_path / ".env").unlink()
    (tmp_path / "devctl.yaml").write_text("redis:\n  port: 1\n  url: garbage\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    assert info.value.line == 3 and info.value.key == "redis.url"


@pytest.mark.parametrize("command", [("config", "validate"), ("status",)])
def test_cli_refuses_a_garbage_redis_url_with_exit_2(tmp_path: Path, command: tuple[str]) -> None:
    result = run(tmp_path, *command, REDIS_URL="garbage")
    assert result.returncode == 2, result.stderr
    assert "env REDIS_URL, key 'redis.url': must start with redis://" in result.stderr
    assert "internal error" not in result.stderr


def test_cli_refuses_nonsense_brokers_with_exit_2(tmp_path: Path) -> None:
    result = run(tmp_path, "config", "validate", KAFKA_BROKERS="nonsense:abc")
    assert result.returncode == 2, result.stderr
    assert "env KAFKA_BROKERS, key 'kafka.brokers'" in result.stderr


RATE_LIMITS = "state:\n  rate_limits:\n    api_user: {limit: 10}\n    login_ip:\n      {entry}\n"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("limit: -1", "a limit must be a positive integer or null, got -1"),
        ("limit: abc", "got 'abc'"),
        ("period: 0", "period must be a positive number of seconds, got 0"),
        ("subject: phone", "subject must be one of"),
        ("colour: red", "unknown setting colour"),
    ],
)
def test_bad_rate_limit_policies_name_file_and_line(
    tmp_path: Path, entry: str, expected: str
) -> None:
    path = tmp_path / "devctl.yaml"
    path.write_text(RATE_LIMITS.replace("{entry}", entry))
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    assert info.value.message.startswith(f"{path}:4, key 'state.rate_limits.login_ip'")
    assert expected in info.value.message


def test_ratelimit_policies_command_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "devctl.yaml"
    path.write_text(RATE_LIMITS.replace("{entry}", "limit: -1"))
    for command in (("config", "validate"), ("ratelimit", "policies")):
        result = run(tmp_path, *command)
        assert result.returncode == 2, result.stderr
        assert f"{path}:4, key 'state.rate_limits.login_ip'" in result.stderr


def _bad_values(key: str) -> list[Any]:
    """Values of the wrong type, and just outside each bound the schema declares."""
    spec = KEYS[key]
    wrong_type = {"int": "abc", "float": "abc", "bool": "yes please", "str": 12, "mapping": [1]}
    bad: list[Any] = [wrong_type.get(spec.kind, "no-such-choice")]
    if spec.minimum is not None:
        bad.append(spec.minimum - 1)
    if spec.maximum is not None:
        bad.append(spec.maximum + 1 if spec.kind == "int" else spec.maximum * 2)
    if spec.kind == "float":
        bad.append(float("inf"))
    return bad


DOMAIN_KEYS = [k for k in KEYS if k.startswith(("state.", "events."))]


@pytest.mark.parametrize("key", DOMAIN_KEYS)
def test_every_state_and_events_key_is_checked_with_file_and_line(tmp_path: Path, key: str) -> None:
    section, leaf = key.split(".", 1)
    for value in _bad_values(key):
        rendered = ".inf" if value == float("inf") else repr(value)
        path = tmp_path / "devctl.yaml"
        path.write_text(f"# comment\n{section}:\n  {leaf}: {rendered}\n")
        with pytest.raises(ConfigError) as info:
            load_settings(cwd=tmp_path, environ={})
        assert info.value.message.startswith(f"{path}:3, key '{key}': "), (value, info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("events:\n  linger_ms: 200000\n  delivery_timeout_ms: 100000\n", "linger_ms"),
        ("events:\n  consumer_backoff_ms: 9000\n", "consumer_backoff_max_ms (5000, from default)"),
        ("kafka:\n  session_timeout_ms: 6000\n  heartbeat_interval_ms: 6000\n", "must be below"),
        ("events:\n  source: ''\n", "non-empty URI reference"),
        ("kafka:\n  group_id: ' '\n", "must not be empty"),
        ("kafka:\n  sasl_mechanism: PLAINN\n", "expected one of PLAIN"),
        ("kafka:\n  request_timeout_ms: 600000\n", "must be at most 300000"),
        ("topics:\n  - name: t\n    partitions: 100000\n", "must be at most 1,000"),
        (
            "topics:\n  - name: t\n    config:\n      retention.sm: 1\n",
            "did you mean 'retention.ms'",
        ),
        ("topics:\n  - name: t\n    config:\n      retention.ms: abc\n", "must be an integer"),
    ],
)
def test_other_values_checked_together_and_alone(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "devctl.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    assert info.value.message.startswith(str(path)), info.value.message
    assert expected in info.value.message
