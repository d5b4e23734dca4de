"""Manners of the CLI (issue 9): piped output, JSON errors, exit codes, help, logs."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from devctl.engines.processes import free_port
from devctl.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_NOT_RUNNING, EXIT_USAGE
from tests.conftest import Stack, running


def run(
    *args: str, env: dict[str, str], stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    """devctl with stdout and stderr piped, as `devctl ... | cat` runs it."""
    return subprocess.run(
        [sys.executable, "-m", "devctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=stdin,
    )


@pytest.fixture
def env(stack: Stack) -> dict[str, str]:
    """The session stack's environment, without COLUMNS (what a pipe in a script has)."""
    out = {k: v for k, v in stack.env.items() if k not in ("COLUMNS", "LINES")}
    out["NO_COLOR"] = "1"
    return out


@pytest.fixture
def stopped(tmp_path: Path) -> dict[str, str]:
    """An environment pointing at a data dir and ports where nothing runs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVCTL_", "REDIS_", "KAFKA_"))}
    env.pop("COLUMNS", None)
    env.update(
        DEVCTL_DATA_DIR=str(tmp_path / "data"),
        DEVCTL_REDIS_PORT=str(free_port()),
        DEVCTL_KAFKA_PORT=str(free_port()),
    )
    return env


# --- piped output is never wrapped -------------------------------------------


def test_piped_status_keeps_every_address_on_one_line(stack: Stack, env: dict[str, str]) -> None:
    result = run("status", env=env)
    assert result.returncode == 0, result.stderr
    port = stack.settings.redis.port
    assert f"redis://127.0.0.1:{port}/0" in result.stdout
    assert f"127.0.0.1:{stack.settings.kafka.port}" in result.stdout


def test_piped_tables_and_errors_are_not_folded(env: dict[str, str]) -> None:
    types = run("events", "types", "--json", env=env)
    names = [entry["type"] for entry in json.loads(types.stdout)]
    table = run("events", "types", env=env)
    assert table.returncode == 0, table.stderr
    for name in names:
        assert name in table.stdout
    # The plain layout: a header, then one line per type (its name and description
    # joined), not cells folded over several lines each.
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["TYPE", "TOPIC"]
    assert [line.split()[0] for line in lines[1:]] == names

    long_name = "a-topic-whose-name-is-long-enough-to-wrap-" + "x" * 60
    missing = run("topics", "describe", long_name, env=env)
    assert missing.returncode == EXIT_FAILED
    assert f"error: topic '{long_name}' does not exist" in missing.stderr


def test_piped_table_rows_are_never_folded_even_with_a_narrow_columns(
    env: dict[str, str],
) -> None:
    # The plain layout of a pipe has no width to honour: each row stays on its line.
    wide = run("events", "types", env=env)
    narrow = run("events", "types", env={**env, "COLUMNS": "60"})
    assert narrow.returncode == 0, narrow.stderr
    assert narrow.stdout == wide.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) > 60


# --- --json errors -------------------------------------------------------------


def _json_error(stderr: str) -> dict[str, str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    error: dict[str, str] = json.loads(lines[0])["error"]
    assert set(error) >= {"code", "message", "hint"}
    return error


def test_json_errors_are_json_on_stderr(env: dict[str, str], stopped: dict[str, str]) -> None:
    missing = run("topics", "describe", f"nope-{uuid.uuid4().hex[:8]}", "--json", env=env)
    assert missing.returncode == EXIT_FAILED
    assert missing.stdout == ""
    assert _json_error(missing.stderr)["code"] == "not-found"

    bad_flag = run("keys", "--bogus", "--json", env=env)
    assert bad_flag.returncode == EXIT_USAGE
    error = _json_error(bad_flag.stderr)
    assert error["code"] == "usage" and "--bogus" in error["message"]

    down = run("sessions", "count", "--json", env=stopped)
    assert down.returncode == EXIT_NOT_RUNNING
    assert _json_error(down.stderr)["code"] in ("not-running", "redis-unavailable")

    # Without --json, the same error stays prose.
    prose = run("sessions", "count", env=stopped)
    assert prose.returncode == EXIT_NOT_RUNNING
    assert prose.stderr.startswith("error: ")


def test_every_error_class_has_its_own_machine_code() -> None:
    from devctl import errors

    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.DevctlError)
    ]
    codes = [c.error_code for c in classes]
    assert len(set(codes)) == len(codes), codes
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)*", code) for code in codes)


# --- exit codes ----------------------------------------------------------------


def test_ctrl_c_at_a_confirmation_prompt_exits_130(stack: Stack, env: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"manners-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": stack.endpoints.kafka_brokers})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(10)
    main, secondary = pty.openpty()  # a terminal on stdin, so the command asks
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "topics", "delete", topic],
        env=env,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(secondary)
    try:
        with running(proc):
            assert proc.stdout is not None
            seen, deadline = b"", time.monotonic() + 30
            while b"[y/N]" not in seen and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    seen += os.read(proc.stdout.fileno(), 4096)
            assert b"[y/N]" in seen
            proc.send_signal(2)  # SIGINT, as Ctrl-C sends
            _, err = proc.communicate(timeout=15)
        assert proc.returncode == EXIT_INTERRUPTED, err
        assert "interrupted" in err and "Aborted" not in err
        assert topic in admin.list_topics(timeout=10).topics  # nothing was deleted
    finally:
        os.close(main)
        admin.delete_topics([topic])


def test_ctrl_c_during_a_command_says_so_and_exits_130(stopped: dict[str, str]) -> None:
    # `publish TOPIC -` waits on standard input, before any connection is made.
    proc = subprocess.Popen(
        [sys.executable, "-m", "devctl", "publish", "user-events", "-"],
        env=stopped,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with running(proc):
        time.sleep(1.5)
        proc.send_signal(2)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err
    assert "Traceback" not in err


def test_groups_reset_dry_run_refuses_an_unknown_group(env: dict[str, str]) -> None:
    typo = f"no-such-group-{uuid.uuid4().hex[:8]}"
    dry = run("groups", "reset", typo, "--topic", "user-events", "--to", "earliest", env=env)
    assert dry.returncode == EXIT_FAILED
    assert f"consumer group '{typo}' does not exist" in dry.stderr
    assert "plan" not in dry.stdout


# --- help and global options ------------------------------------------------------


def test_help_shows_no_type_after_flags(env: dict[str, str]) -> None:
    for args in (["--help"], ["keys", "--help"], ["topics", "list", "--help"]):
        result = run(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout
    # Options that take a value still show their type.
    assert "<path>" in run("keys", "--help", env=env).stdout


def test_verbose_is_accepted_after_the_command(
    env: dict[str, str], stopped: dict[str, str]
) -> None:
    for args in (["status", "-v"], ["keys", "--verbose"], ["-v", "status"]):
        result = run(*args, env=env)
        assert result.returncode == 0, (args, result.stderr)
    # And it has its effect there: the low-level cause of an error is shown.
    bad = Path(stopped["DEVCTL_DATA_DIR"]).parent / "bad.yaml"
    bad.write_text("redis: [unclosed\n")
    quiet = run("--config", str(bad), "config", "show", env=stopped)
    loud = run("--config", str(bad), "config", "show", "-v", env=stopped)
    assert quiet.returncode == loud.returncode == EXIT_USAGE, quiet.stderr
    assert "caused by" in loud.stderr and "caused by" not in quiet.stderr


# --- logs ---------------------------------------------------------------------------


def test_logs_hide_tansu_group_lookup_noise_unless_all(stack: Stack, env: dict[str, str]) -> None:
    group = f"never-{uuid.uuid4().hex[:8]}"
    described = run("groups", "describe", group, env=env)
    assert described.returncode in (0, EXIT_FAILED), described.stderr
    everything = run("logs", "kafka", "-n", "100000", "--all", env=env)
    assert everything.returncode == 0, everything.stderr
    noise = [line for line in everything.stdout.splitlines() if f'"{group}"' in line]
    assert noise and all("ERROR" in line for line in noise), everything.stdout[-2000:]

    default = run("logs", "kafka", "-n", "100000", env=env)
    assert default.returncode == 0, default.stderr
    assert f'"{group}"' not in default.stdout
    assert "listening on" in default.stdout  # the rest of the log is still there


def test_piped_usage_errors_are_one_plain_line(stopped: dict[str, str]) -> None:
    bad = run("topics", "create", "x", "--partitions", "0", env=stopped)
    assert bad.returncode == EXIT_USAGE
    assert (
        "Error: Invalid value for '--partitions' / '-p': Input should be greater than or equal to 1"
        in bad.stderr
    )
    assert "╭" not in bad.stderr  # no box folding the message at 80 columns


def test_json_errors_name_the_field_and_prose_names_the_flag(stopped: dict[str, str]) -> None:
    as_json = run("tail", "user-events", "--offset", "zero", "-o", "json", env=stopped)
    error = json.loads(as_json.stderr)["error"]
    assert (as_json.returncode, error["code"], error["field"]) == (
        EXIT_USAGE,
        "usage",
        "start_offset",
    )
    assert error["message"].startswith("--offset: ")
    prose = run("tail", "user-events", "--offset", "zero", env=stopped)
    assert prose.stderr.startswith("error: --offset: a start offset is PARTITION:OFFSET")


# --- a reader that goes away (`devctl ... | head -1`) ---------------------------------

# The smallest pipe Linux makes (a page): output beyond it waits on the reader, so a
# reader that leaves after one line cuts every command below off mid-output.
SMALL_PIPE = 4096


def run_into_closed_pipe(
    *args: str, env: dict[str, str], stderr_too: bool = False
) -> subprocess.CompletedProcess[str]:
    """devctl writing to a pipe whose reader is already gone: its first write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "devctl", *args],
            env=env,
            stdout=write_end,
            stderr=write_end if stderr_too else subprocess.PIPE,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(write_end)


def run_cut_after_first_line(*args: str, env: dict[str, str]) -> tuple[int, str, bytes]:
    """devctl into a small pipe whose reader takes one line and closes it, as `head -1`.

    Returns the exit code, stderr and the line read.
    """
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("pipe sizes are set on Linux only")
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, SMALL_PIPE)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devctl", *args],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(write_end)
    with running(proc):
        line = b""
        try:
            while not line.endswith(b"\n") and (byte := os.read(read_end, 1)):
                line += byte
        finally:
            os.close(read_end)
        _, err = proc.communicate(timeout=60)
    return proc.returncode, err, line


QUIET_COMMANDS = [
    ["keys"],
    ["config", "show"],
    ["config", "show", "--json"],
    ["config", "reference"],
    ["events", "types"],
    ["status"],
    ["topics", "list"],
    ["logs", "kafka", "-n", "200"],
    ["--help"],
    ["--version"],
]


@pytest.mark.parametrize("args", QUIET_COMMANDS, ids=" ".join)
def test_a_closed_pipe_ends_a_command_quietly_with_0(args: list[str], env: dict[str, str]) -> None:
    result = run_into_closed_pipe(*args, env=env)
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize(
    "args",
    [["config", "show"], ["config", "reference"], ["events", "types"], ["--help"]],
    ids=" ".join,
)
def test_output_cut_off_after_the_first_line_exits_0_quietly(
    args: list[str], env: dict[str, str]
) -> None:
    whole = run(*args, env=env)
    assert whole.returncode == 0, whole.stderr
    first = whole.stdout.splitlines(keepends=True)[0].encode()
    # Only then is the command really cut off: its output does not fit the pipe.
    assert len(whole.stdout.encode()) > SMALL_PIPE + len(first)

    code, err, line = run_cut_after_first_line(*args, env=env)
    assert (code, err, line) == (0, "", first)


def test_a_long_log_cut_off_after_the_first_line_exits_0_quietly(
    stack: Stack, env: dict[str, str]
) -> None:
    code, err, line = run_cut_after_first_line("logs", "kafka", "-n", "100000", "--all", env=env)
    assert (code, err) == (0, "")
    assert line.endswith(b"\n")


def test_real_errors_keep_their_exit_code_when_stdout_is_closed(
    env: dict[str, str], stopped: dict[str, str]
) -> None:
    missing = run_into_closed_pipe("topics", "describe", f"nope-{uuid.uuid4().hex[:8]}", env=env)
    assert missing.returncode == EXIT_FAILED
    assert missing.stderr.startswith("error: topic ")
    down = run_into_closed_pipe("sessions", "count", "--json", env=stopped)
    assert down.returncode == EXIT_NOT_RUNNING
    assert _json_error(down.stderr)["code"] in ("not-running", "redis-unavailable")
    bad_flag = run_into_closed_pipe("keys", "--bogus", env=env)
    assert bad_flag.returncode == EXIT_USAGE
    assert "--bogus" in bad_flag.stderr

    # `2>&1 | head -1`: the error has no reader either, and its exit code stands.
    for args, code in (
        (["sessions", "count"], EXIT_NOT_RUNNING),
        (["sessions", "count", "--json"], EXIT_NOT_RUNNING),
        (["keys", "--bogus"], EXIT_USAGE),
        (["config", "show"], 0),
    ):
        both = run_into_closed_pipe(*args, env=stopped, stderr_too=True)
        assert both.returncode == code, args


def test_a_broken_pipe_that_is_not_our_output_is_an_internal_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A write to a peer that went away (a socket, a child's stdin) while stdout is
    # fine: Typer's own handler exits 1 for it, silently; it is a bug to be told.
    import typer

    from devctl.cli import main as cli_main

    app = typer.Typer()

    @app.command()
    def feed() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    @app.command()
    def other() -> None:
        pass

    # Typer swaps sys.stdout and sys.stderr for wrappers when it meets a broken pipe.
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(cli_main, "build_command", lambda args: typer.main.get_command(app))
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["feed"])
    assert exited.value.code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "internal error: BrokenPipeError: [Errno 32] Broken pipe" in err
