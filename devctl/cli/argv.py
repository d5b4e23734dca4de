"""What the raw command line says before Typer parses it.

The entry point needs two answers before Typer runs: which top-level command is
asked for (only its module is imported and built), and whether errors should be
JSON (``--json``): a usage error stops Typer before it parses the command's options.
"""

from __future__ import annotations

from collections.abc import Sequence

# Root options that take a value; the token after them is not the command.
_ROOT_WITH_VALUE = ("--config", "-c", "--context")


def command_index(args: Sequence[str]) -> int | None:
    """Position of the top-level command in ``args``, or None (root options only)."""
    skip = False
    for index, token in enumerate(args):
        if skip:
            skip = False
        elif token == "--":
            return index + 1 if index + 1 < len(args) else None
        elif token in _ROOT_WITH_VALUE:
            skip = True
        elif not token.startswith("-"):
            return index
    return None


def command_name(args: Sequence[str]) -> str | None:
    index = command_index(args)
    return None if index is None else args[index]


def _options(args: Sequence[str]) -> Sequence[str]:
    """The tokens that may be options: everything before a bare ``--``."""
    return args[: args.index("--")] if "--" in args else args


def wants_json(args: Sequence[str]) -> bool:
    """True when the command was asked for JSON output (``--json``, or tail's ``--output json``)."""
    options = list(_options(args))
    if "--json" in options or "--output=json" in options:
        return True
    return any(
        token in ("--output", "-o") and options[i + 1 : i + 2] == ["json"]
        for i, token in enumerate(options)
    )
