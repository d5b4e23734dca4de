"""Logging is configured in one place: level, text or JSON lines, standard error."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devctl.errors import EXIT_USAGE, UsageError
from devctl.logging_setup import LOG_FORMAT, LOG_LEVEL, configure_logging, resolve_level


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the root handlers and devctl's level as they were for the other tests."""
    root = logging.getLogger()
    devctl = logging.getLogger("devctl")
    handlers, level = list(root.handlers), devctl.level
    yield
    root.handlers[:] = handlers
    devctl.setLevel(level)


def test_level_from_argument_verbose_environment_or_default() -> None:
    assert resolve_level(environ={}) == logging.WARNING
    assert resolve_level(environ={LOG_LEVEL: "info"}) == logging.INFO
    assert resolve_level(environ={LOG_LEVEL: " Error "}) == logging.ERROR
    assert resolve_level(verbose=True, environ={LOG_LEVEL: "error"}) == logging.DEBUG
    assert resolve_level("critical", verbose=True) == logging.CRITICAL
    with pytest.raises(UsageError, match=f"{LOG_LEVEL} 'loud' is not a log level"):
        resolve_level(environ={LOG_LEVEL: "loud"})


def test_text_lines_on_stderr_at_the_chosen_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(environ={LOG_LEVEL: "info"})
    log = logging.getLogger("devctl.events.consumer")
    log.debug("not shown")
    log.info("analytics: assigned %s", "user-events[0]")
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.endswith(" INFO devctl.events.consumer: analytics: assigned user-events[0]")


def test_a_lone_surrogate_is_written_as_ascii_json() -> None:
    # Through the formatter, not a logger: pytest's own log capture (and xdist's
    # transport of it) cannot carry a lone surrogate.
    from devctl.logging_setup import JsonFormatter

    record = logging.makeLogRecord(
        {
            "name": "devctl.events.producer",
            "levelno": logging.DEBUG,
            "levelname": "DEBUG",
            "msg": "queued \udcff %d",
            "args": (3,),
        }
    )
    line = JsonFormatter().format(record)
    assert line.isascii() and json.loads(line)["message"] == "queued \udcff 3"


def test_json_lines_carry_time_level_logger_exception_and_extra(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(verbose=True, environ={LOG_FORMAT: "json"})
    log = logging.getLogger("devctl.events.producer")
    log.debug("queued \u00e9 %d", 3, extra={"topic": "user-events", "path": Path("/x")})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("delivery callback raised")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.isascii() for line in lines)
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "debug" and first["logger"] == "devctl.events.producer"
    assert first["message"] == "queued \u00e9 3"
    assert (first["topic"], first["path"], first["pid"]) == ("user-events", "/x", os.getpid())
    assert first["time"].endswith("Z") and first["time"][10] == "T"
    assert "exception" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_configuring_again_replaces_its_handler_and_keeps_others() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    first = configure_logging(environ={})
    second = configure_logging(environ={LOG_FORMAT: "json"})
    assert first not in root.handlers and second in root.handlers and other in root.handlers
    with pytest.raises(UsageError, match="is not a log format"):
        configure_logging(fmt="xml")


def test_other_libraries_keep_the_root_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(verbose=True, environ={})
    logging.getLogger("some.library").debug("chatter")
    logging.getLogger("devctl.streams").debug("ours")
    err = capsys.readouterr().err
    assert "chatter" not in err and "ours" in err


def test_the_cli_configures_it_with_verbose_after_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from devctl.cli.main import main

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("DEVCTL_", "REDIS_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DEVCTL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(LOG_FORMAT, "json")
    main(["config", "show", "--json"])
    logging.getLogger("devctl.events.consumer").debug("hidden")
    main(["config", "show", "--json", "-v"])
    logging.getLogger("devctl.events.consumer").debug("shown")
    messages = [json.loads(line)["message"] for line in capsys.readouterr().err.splitlines()]
    assert messages == ["shown"]


def test_a_bad_log_setting_is_a_usage_error(tmp_path: Path) -> None:
    env = {**os.environ, "DEVCTL_DATA_DIR": str(tmp_path / "data"), LOG_LEVEL: "loud"}
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_USAGE
    assert f"error: {LOG_LEVEL} 'loud' is not a log level" in result.stderr
