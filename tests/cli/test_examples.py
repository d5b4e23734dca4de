"""Every example in `--help` and in the README's shell blocks runs as written.

The examples run through bash (so their pipes, `&&` and redirections work) with a
`devctl` on PATH, against a stack of this module's own in a scratch directory:
the session stack is left alone, since examples delete topics, flush caches and
revoke sessions. Examples that start or stop a stack (`up`, `down`) run on a fresh
data dir each. One that follows until Ctrl-C gets it after a few seconds, and
must then exit 0 as documented.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devctl.engines.processes import free_port
from tests.cli.conftest import Cli, _stop_strays
from tests.conftest import running

README = Path(__file__).resolve().parents[2] / "README.md"
# Examples that follow until Ctrl-C.
FOLLOWS = re.compile(r"devctl (logs \S+ .*-f\b|tail |groups lag --watch|presence watch)")
# Examples that start or stop a stack: each runs on a data dir of its own.
LIFECYCLE = re.compile(r"devctl (up|down)\b")
# Examples that talk to a running API: they run while `devctl serve --detach` does.
NEEDS_SERVE = re.compile(r"devctl seed demo\b")


def help_examples() -> list[str]:
    """The `Example: devctl ...` lines of every command's help, the root's included."""
    import typer.main

    from devctl.cli.app import register

    found: list[str] = []

    def walk(command: object) -> None:
        text = getattr(command, "help", None) or ""
        found.extend(m.group(1).strip() for m in re.finditer(r"Example:\s*(devctl.*)", text))
        for child in (getattr(command, "commands", None) or {}).values():
            walk(child)

    walk(typer.main.get_command(register()))
    return found


def readme_examples() -> list[str]:
    """Lines that run devctl in the README's ```sh blocks (comments stripped)."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("devctl ")]


EXAMPLES = sorted(set(help_examples()) | set(readme_examples()))


@dataclass
class Scratch:
    cli: Cli
    bin: Path

    def env(self, cwd: Path) -> dict[str, str]:
        return {**self.cli.env, "PATH": f"{self.bin}{os.pathsep}{self.cli.env['PATH']}"}


def _cli(root: Path) -> Cli:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.update(
        DEVCTL_DATA_DIR=str(root / "data"),
        DEVCTL_REDIS_PORT=str(free_port()),
        DEVCTL_KAFKA_PORT=str(free_port()),
        COLUMNS="200",
        NO_COLOR="1",
    )
    root.mkdir(parents=True, exist_ok=True)
    return Cli(root, root / "data", env)


def _stop(cli: Cli) -> None:
    cli.run("down")
    from devctl.engines.processes import stop

    for record in cli.seen.values():
        stop(record, 5)
    _stop_strays(cli.cwd)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scratch]:
    """A stack of this module's own, with what the examples name: a group
    `analytics-consumer` with committed offsets; `_prepare` adds the rest."""
    root = tmp_path_factory.mktemp("examples")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "devctl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m devctl "$@"\n')
    wrapper.chmod(0o755)
    cli = _cli(root / "stack")
    try:
        ok(cli.run("up"))
        ok(
            cli.run(
                "publish",
                "analytics-events",
                "--type",
                "devconnect.analytics.activity",
                "--data",
                '{"userId": "42", "action": "example"}',
            )
        )
        ok(
            cli.run(
                "tail",
                "analytics-events",
                "--group",
                "analytics-consumer",
                "--from-beginning",
                "--count",
                "1",
            )
        )
        yield Scratch(cli, bin_dir)
    finally:
        _stop(cli)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args}: {result.stderr}"
    return result


def _prepare(example: str, scratch: Scratch, cwd: Path) -> None:
    """What an example assumes exists, made just before it runs."""
    cwd.mkdir(parents=True, exist_ok=True)
    if "config/devctl.yaml" in example:
        (cwd / "config").mkdir(exist_ok=True)
        reference = ok(scratch.cli.run("config", "reference")).stdout
        (cwd / "config" / "devctl.yaml").write_text(reference)
    if "--user 42" in example:
        _session_of_user_42(scratch.cli)
    if "topics delete scratch" in example:
        scratch.cli.run("topics", "create", "scratch")
    if "topics create audit-events" in example:
        scratch.cli.run("topics", "delete", "audit-events", "--yes")


def _session_of_user_42(cli: Cli) -> None:
    from devctl.config.loader import load_settings
    from devctl.engines.local import LocalEngine
    from devctl.state import from_settings

    settings = load_settings(cwd=cli.cwd, environ=cli.env)
    with from_settings(settings, LocalEngine(settings).endpoints()) as state:
        state.sessions.create("42", ip="203.0.113.7")


def _run(example: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        ["bash", "-o", "pipefail", "-c", example],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C goes to the example's whole pipeline
    )
    with running(proc):
        try:
            out, err = proc.communicate(timeout=4 if FOLLOWS.search(example) else 120)
        except subprocess.TimeoutExpired:
            if not FOLLOWS.search(example):
                raise
            os.killpg(proc.pid, signal.SIGINT)
            out, err = proc.communicate(timeout=20)
    return subprocess.CompletedProcess(example, proc.returncode, out, err)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_runs(example: str, scratch: Scratch, tmp_path: Path) -> None:
    if "| jq" in example and shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    cwd = tmp_path / "cwd"
    if LIFECYCLE.search(example):
        own = _cli(tmp_path / "own")
        if "--redis-port 6380" in example and not _port_free(6380):
            pytest.skip("port 6380 is taken on this machine")
        try:
            _prepare(example, scratch, cwd)
            env = {**own.env, "PATH": f"{scratch.bin}{os.pathsep}{own.env['PATH']}"}
            result = _run(example, env, cwd)
            own.remember()
        finally:
            _stop(own)
    elif NEEDS_SERVE.search(example):
        _prepare(example, scratch, cwd)
        with _serving(scratch.cli):
            result = _run(example, scratch.env(cwd), cwd)
    else:
        _prepare(example, scratch, cwd)
        result = _run(example, scratch.env(cwd), cwd)
    assert result.returncode == 0, f"{example}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text and "internal error" not in text


@contextlib.contextmanager
def _serving(cli: Cli) -> Iterator[None]:
    """`devctl serve --detach` (one instance, no consumers) on the module's stack while an
    example that talks to the API runs; only serve is stopped afterwards, not the stack."""
    from devctl.supervisor.runstate import running_serve

    ok(cli.run("serve", "--detach", "--no-consumers", "--port", str(free_port()), timeout=120))
    try:
        yield
    finally:
        state = running_serve(cli.data_dir)
        if state is not None:
            os.kill(state.supervisor.pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while running_serve(cli.data_dir) is not None and time.monotonic() < deadline:
                time.sleep(0.1)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_examples_were_found() -> None:
    """Guards the extraction: a change of format must not make this module test nothing."""
    assert len(help_examples()) >= 30
    assert "devctl status" in readme_examples()
    assert all(example.startswith("devctl ") for example in EXAMPLES)
