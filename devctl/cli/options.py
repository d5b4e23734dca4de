"""Options shared by several commands, defined once."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from devctl.cli.flags import flag_of

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


class EngineName(StrEnum):
    local = "local"
    external = "external"


class ServiceName(StrEnum):
    redis = "redis"
    kafka = "kafka"


EngineOption = Annotated[
    EngineName | None,
    typer.Option(
        "--engine",
        "-e",
        help="local (embedded servers) or external (existing servers).",
        show_default=False,
    ),
]


def data_dir_flag(data_dir: Path | None) -> dict[str, tuple[object, str]]:
    return {"data_dir": (str(data_dir) if data_dir else None, flag_of("data_dir"))}
