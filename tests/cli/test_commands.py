"""Every command exists, has help with an example, and behaves on the shared stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from devctl import __version__
from devctl.errors import EXIT_FAILED, EXIT_USAGE


def devctl(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devctl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _leaf_commands() -> list[list[str]]:
    import typer.main

    from devctl.cli.app import register

    root = typer.main.get_command(register())  # every command, as help lists them
    out: list[list[str]] = []

    def walk(command, path):  # type: ignore[no-untyped-def]
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk(child, [*path, name])
        else:
            out.append(path)

    walk(root, [])
    return out


def test_version_and_module_entry_point() -> None:
    result = devctl("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"devctl {__version__}"


@pytest.mark.parametrize("command", _leaf_commands(), ids=" ".join)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = devctl(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example" in result.stdout, f"`devctl {' '.join(command)} --help` shows no example"


def test_core_commands_exist() -> None:
    names = {" ".join(c) for c in _leaf_commands()}
    assert {
        "up",
        "down",
        "status",
        "logs",
        "doctor",
        "test",
        "config show",
        "config validate",
        "topics list",
        "topics describe",
        "topics create",
        "topics delete",
        "topics apply",
    } <= names


def test_unknown_flag_is_a_usage_error() -> None:
    result = devctl("up", "--no-such-flag")
    assert result.returncode == EXIT_USAGE
    assert "No such option" in result.stderr


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DEVCTL_REDIS_PASSWORD": "hunter2",
        "REDIS_URL": "redis://u:s3cret@h:1/0",
    }
    result = devctl("config", "show", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout and "s3cret" not in result.stdout
    shown = json.loads(result.stdout)
    assert shown["settings"]["redis.password"] == {
        "value": "********",
        "source": "env DEVCTL_REDIS_PASSWORD",
    }
    assert shown["settings"]["redis.url"]["value"] == "redis://u:********@h:1/0"
    table = devctl("config", "show", env=env, cwd=tmp_path)
    assert "hunter2" not in table.stdout and "s3cret" not in table.stdout


def test_topics_commands(stack, unique) -> None:  # type: ignore[no-untyped-def]
    env = stack.env
    name = f"cli-{unique}"
    created = devctl(
        "topics", "create", name, "--partitions", "2", "--config", "retention.ms=5000", env=env
    )
    assert created.returncode == 0, created.stderr
    again = devctl("topics", "create", name, env=env)
    assert again.returncode == EXIT_FAILED and "already exists" in again.stderr
    bad = devctl("topics", "create", f"{name}-x", "--config", "oops", env=env)
    assert bad.returncode == EXIT_USAGE and "key=value" in bad.stderr

    listed = json.loads(devctl("topics", "list", "--json", env=env).stdout)
    row = next(r for r in listed if r["name"] == name)
    assert (row["partitions"], row["messages"], row["configured"]) == (2, 0, False)
    assert not row["note"]  # counted in time: no "unknown" note

    described = json.loads(devctl("topics", "describe", name, "--json", env=env).stdout)
    assert [p["partition"] for p in described["partitions"]] == [0, 1]
    assert described["configs"]["retention.ms"] == "5000"
    missing = devctl("topics", "describe", f"nope-{unique}", env=env)
    assert missing.returncode == EXIT_FAILED and "does not exist" in missing.stderr

    refused = devctl("topics", "delete", name, env=env)
    assert refused.returncode == EXIT_USAGE and "--yes" in refused.stderr
    deleted = devctl("topics", "delete", name, "--yes", env=env)
    assert deleted.returncode == 0, deleted.stderr

    plan = json.loads(devctl("topics", "apply", "--dry-run", "--json", env=env).stdout)
    assert {row["action"] for row in plan} == {"unchanged"}


def test_topics_apply_reports_unsupported_growth(stack, unique, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = f"grow-{unique}"
    (tmp_path / "devctl.yaml").write_text(
        f"topics:\n  - name: {name}\n    partitions: 1\n    dead_letter: false\n"
    )
    assert devctl("topics", "apply", env=stack.env, cwd=tmp_path).returncode == 0
    (tmp_path / "devctl.yaml").write_text(
        f"topics:\n  - name: {name}\n    partitions: 4\n    dead_letter: false\n"
    )
    result = devctl("topics", "apply", "--json", env=stack.env, cwd=tmp_path)
    assert result.returncode == EXIT_FAILED
    [row] = json.loads(result.stdout)
    assert row["action"] == "unsupported" and "CreatePartitions" in row["detail"]
    assert devctl("topics", "delete", name, "--yes", env=stack.env).returncode == 0


def test_test_command_fails_on_a_missing_topic(stack, unique, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "devctl.yaml").write_text(
        f"topics:\n  - name: absent-{unique}\n    dead_letter: false\n"
    )
    result = devctl("test", "--json", "--group", "kafka", env=stack.env, cwd=tmp_path)
    assert result.returncode == EXIT_FAILED
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["configured topics exist"]["status"] == "fail"
    assert f"absent-{unique}" in checks["configured topics exist"]["reason"]


def test_test_leaves_no_keys_or_groups_behind(stack) -> None:  # type: ignore[no-untyped-def]
    client = stack.redis()
    before = set(client.scan_iter(match="*devctl-test-*"))
    result = devctl("test", "--json", env=stack.env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(client.scan_iter(match="*devctl-test-*")) == before == set()
    from devctl.clients.kafka_client import make_admin

    groups = make_admin(stack.endpoints, stack.settings).list_consumer_groups().result(timeout=10)
    assert not [g.group_id for g in groups.valid if g.group_id.startswith("devctl-test-")]


def test_doctor_reports_checks(stack) -> None:  # type: ignore[no-untyped-def]
    result = devctl("doctor", "--json", env=stack.env)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["redis binary"]["ok"] and "valkey" in checks["redis binary"]["detail"]
    assert checks["kafka binary"]["ok"] and "tansu" in checks["kafka binary"]["detail"]
    assert checks["redis port"]["ok"] and "devctl's own" in checks["redis port"]["detail"]
    assert checks["config"]["ok"] and checks["data dir"]["ok"]
    assert "docker engine" in checks
    assert result.returncode == 0, result.stdout


def test_doctor_flags_an_unwritable_data_dir_without_creating_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {
        "PATH": "/usr/bin:/bin",
        "DEVCTL_DATA_DIR": str(blocker / "data"),
        "DEVCTL_REDIS_PORT": "0",
        "DEVCTL_KAFKA_PORT": "0",
    }
    result = devctl("doctor", "--json", env=env, cwd=tmp_path)
    assert result.returncode == EXIT_FAILED
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert not checks["data dir"]["ok"] and "DEVCTL_DATA_DIR" in checks["data dir"]["fix"]
    assert not (tmp_path / ".devctl").exists()
