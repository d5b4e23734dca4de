"""The flag of each domain field: where the CLI names the inputs the domain speaks of.

The domain raises errors with ``field`` (its name of the input, see
``devctl.errors.DevctlError``) and words them without flags, so that another front
end (the API) can name the input its own way. Commands wrap themselves in
``names_flags``, which rewrites such an error for the command line:

- the field's value was refused (``data["value"]``): the message starts with the
  flag, and ``data["examples"]`` become the hint (``e.g. --to 2h``);
- otherwise changing the field is the remedy: the hint names the flag;
- ``data["conflicts"]``: fields that cannot go with this one, named by their flags.

A field has one flag in every command; settings are named by their config keys.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from devctl.errors import DevctlError

FLAGS: dict[str, str] = {
    # settings (config keys), also the provenance of values given on the command line
    "data_dir": "--data-dir",
    "engine": "--engine",
    "redis.port": "--redis-port",
    "kafka.port": "--kafka-port",
    "api.host": "--host",
    "api.port": "--port",
    "api.instances": "--instances",
    # devctl up
    "keep_on_failure": "--keep",
    # devctl serve
    "consumers": "--consumers",
    "no_consumers": "--no-consumers",
    "reload": "--reload",
    # devctl groups reset
    "reset_to": "--to",
    # devctl tail
    "group": "--group",
    "start_last": "--last",
    "start_since": "--since",
    "start_offset": "--offset",
    "header_filter": "--header",
    "enrich": "--enrich",
    "include_checks": "--include-checks",
}


def flag_of(field: str) -> str:
    """The flag that sets ``field`` (KeyError for a field no command takes)."""
    return FLAGS[field]


def name_flags(error: DevctlError) -> DevctlError:
    """``error`` reworded in place for the command line (unchanged if its field has no flag)."""
    flag = FLAGS.get(error.field or "")
    if flag is None:
        return error
    remedy = f"on the command line: {flag}"
    # Idempotent: an error that passes two wrappers is reworded once.
    if error.message.startswith(f"{flag}: ") or remedy in (error.hint or ""):
        return error
    if "value" in error.data:
        error.message = f"{flag}: {error.message}"
        conflicts = [FLAGS[f] for f in error.data.get("conflicts", ()) if f in FLAGS]
        if conflicts:
            error.message += f" (not with {', '.join(conflicts)})"
        examples = error.data.get("examples")
        if examples:
            error.hint = "e.g. " + ", ".join(f"{flag} {example}" for example in examples)
    else:
        error.hint = with_remedy(error.hint, error.field)
    error.args = (error.message,)
    return error


def with_remedy(hint: str | None, field: str | None) -> str | None:
    """``hint`` (a fix that changes ``field``) with the flag that changes it named."""
    flag = FLAGS.get(field or "")
    if flag is None:
        return hint
    remedy = f"on the command line: {flag}"
    return f"{hint} ({remedy})" if hint else remedy


P = ParamSpec("P")
R = TypeVar("R")


def names_flags(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so that the domain errors it lets through name flags, not fields."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except DevctlError as exc:
            name_flags(exc)
            raise

    return wrapper
