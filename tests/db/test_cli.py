"""`devctl db upgrade` and `devctl db status`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devctl.engines.processes import free_port
from tests.db.postgres import PostgresServer


def _devctl(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_")) and k != "DATABASE_URL"
    }
    return subprocess.run(
        [sys.executable, "-m", "devctl", *args],
        cwd=tmp_path,
        env={**clean, "DEVCTL_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_upgrade_then_status_on_the_default_sqlite(tmp_path: Path) -> None:
    before = _devctl(tmp_path, "db", "status", "--json")
    assert before.returncode == 0, before.stderr
    status = json.loads(before.stdout)
    assert status["backend"] == "sqlite" and status["exists"] is False
    assert status["url"].endswith(str(tmp_path / "data" / "devconnect.db"))
    assert [p["revision"] for p in status["pending"]] == ["0001"]
    assert not (tmp_path / "data").exists()

    upgraded = _devctl(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.splitlines()[0].startswith("applied 0001: The initial schema")
    assert "now at revision 0001" in upgraded.stdout
    assert (tmp_path / "data" / "devconnect.db").exists()

    after = _devctl(tmp_path, "db", "status", "--json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout) | {"url": None} == {
        "backend": "sqlite",
        "url": None,
        "exists": True,
        "current": "0001",
        "head": "0001",
        "up_to_date": True,
        "unknown_revision": False,
        "pending": [],
    }
    table = _devctl(tmp_path, "db", "status")
    assert table.returncode == 0, table.stderr
    assert "up to date" in table.stdout and "0001" in table.stdout


def test_upgrade_on_postgres_from_database_url(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    try:
        upgraded = _devctl(tmp_path, "db", "upgrade", "--json", DATABASE_URL=url)
        assert upgraded.returncode == 0, upgraded.stderr
        report = json.loads(upgraded.stdout)
        assert report["backend"] == "postgresql"
        assert (report["from"], report["to"], [a["revision"] for a in report["applied"]]) == (
            None,
            "0001",
            ["0001"],
        )
        found = _devctl(tmp_path, "db", "status", "--json", DATABASE_URL=url)
        assert json.loads(found.stdout)["up_to_date"] is True
    finally:
        postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.mark.parametrize("json_output", [True, False])
def test_an_unreachable_database_exits_3(tmp_path: Path, json_output: bool) -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/devconnect"
    args = ("db", "status", "--json") if json_output else ("db", "upgrade")
    result = _devctl(tmp_path, *args, DATABASE_URL=url)
    assert result.returncode == 3, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    if json_output:
        error = json.loads(result.stderr)["error"]
        assert error["code"] == "database-unavailable"
        assert "DATABASE_URL" in error["hint"]
    else:
        assert "is unavailable" in result.stderr


def test_an_unsupported_url_is_a_config_error(tmp_path: Path) -> None:
    result = _devctl(tmp_path, "db", "status", DATABASE_URL="mysql://u@h/d")
    assert result.returncode == 2
    assert "api.database_url" in result.stderr
