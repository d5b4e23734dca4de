"""Logging, configured in one place: level, format (text or JSON lines), stderr.

devctl's modules only log (``logging.getLogger("devctl....")``); this module decides
where that goes. The CLI calls :func:`configure_logging` once at start; a program
that embeds devctl and has no logging set-up of its own can call it too.

- Level: ``level`` if given, else DEBUG with ``verbose``, else ``DEVCTL_LOG_LEVEL``
  (``debug``, ``info``, ``warning``, ``error``, ``critical``), else WARNING. It is
  the level of the ``devctl`` loggers only: other libraries keep the root logger's.
- Format: ``text`` (one readable line) or ``json`` (one JSON object per line, for
  long-running processes whose output a log shipper reads), from ``fmt`` or
  ``DEVCTL_LOG_FORMAT``.
- Stream: standard error, looked up at each record, so a redirected or captured
  ``sys.stderr`` is honoured; standard output stays for the command's result.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from devctl.errors import UsageError

# Not config keys: logging is set up before (and without) loading the config.
LOG_LEVEL = "DEVCTL_LOG_LEVEL"
LOG_FORMAT = "DEVCTL_LOG_FORMAT"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("text", "json")
DEFAULT_LEVEL = logging.WARNING
LOGGER = "devctl"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record arrives (as logging.lastResort)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class TextFormatter(logging.Formatter):
    """``2025-01-31 12:00:00.123 WARNING devctl.events.producer: message``"""

    default_msec_format = "%s.%03d"

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, RFC 3339), level, logger, message, pid,
    the exception if any, and the fields passed with ``extra=``.

    ASCII only, so that every line encodes whatever the stream's encoding and
    whatever the message holds (lone surrogates from undecodable input).
    """

    def format(self, record: logging.LogRecord) -> str:
        created = time.gmtime(record.created)
        millis = int(record.msecs)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", created) + f".{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        return json.dumps(entry, ensure_ascii=True, default=str)


def resolve_level(
    level: str | int | None = None,
    *,
    verbose: bool = False,
    environ: Mapping[str, str] | None = None,
) -> int:
    """The level configure_logging would set; UsageError for an unknown name."""
    if level is None and verbose:
        return logging.DEBUG
    if level is None:
        raw = (os.environ if environ is None else environ).get(LOG_LEVEL, "").strip()
        if not raw:
            return DEFAULT_LEVEL
        level, source = raw, LOG_LEVEL
    else:
        source = "the log level"
    if isinstance(level, int):
        return level
    name = level.strip().lower()
    if name not in LEVELS:
        raise UsageError(
            f"{source} {level!r} is not a log level",
            hint=f"use one of {', '.join(LEVELS)}",
        )
    return LEVELS[name]


def resolve_format(fmt: str | None = None, *, environ: Mapping[str, str] | None = None) -> str:
    """'text' or 'json'; UsageError for anything else."""
    source = "the log format"
    if fmt is None:
        fmt = (os.environ if environ is None else environ).get(LOG_FORMAT, "").strip() or "text"
        source = LOG_FORMAT
    name = fmt.strip().lower()
    if name not in FORMATS:
        raise UsageError(f"{source} {fmt!r} is not a log format", hint="use text or json")
    return name


def configure_logging(
    *,
    verbose: bool = False,
    level: str | int | None = None,
    fmt: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send log records to stderr in the chosen format; return the handler.

    Safe to call again (the CLI does when ``-v`` comes after the command): the
    handler it installed before is replaced, never doubled, and handlers others
    installed are left alone. Raises UsageError for an unknown level or format.
    """
    resolved_level = resolve_level(level, verbose=verbose, environ=environ)
    formatter: logging.Formatter = (
        JsonFormatter() if resolve_format(fmt, environ=environ) == "json" else TextFormatter()
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    # On the root logger so that records of other libraries (at the root's level)
    # come out in the same format; devctl's records reach it by propagation.
    root.addHandler(handler)
    logging.getLogger(LOGGER).setLevel(resolved_level)
    return handler
