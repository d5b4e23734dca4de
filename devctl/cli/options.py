"""Options shared by several commands, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from devctl.cli.flags import flag_of
from devctl.engines import DEFAULT_ENGINE, ENGINES

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="State directory (default .devctl; env DEVCTL_DATA_DIR).",
        show_default=False,
    ),
]


def _known_engine(value: str | None) -> str | None:
    # Checked here rather than by an Enum so the choices come from the one registry.
    if value is not None and value not in ENGINES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(map(repr, ENGINES))}.")
    return value


EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        "-e",
        metavar="[" + "|".join(ENGINES) + "]",
        help=f"Which engine runs the stack: {', '.join(ENGINES)} (default {DEFAULT_ENGINE}).",
        callback=_known_engine,
        show_default=False,
    ),
]


def data_dir_flag(data_dir: Path | None) -> dict[str, tuple[object, str]]:
    return {"data_dir": (str(data_dir) if data_dir else None, flag_of("data_dir"))}
