"""config/devctl.yaml is the generated reference: every key, and up to date with the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from devctl.config.loader import load_settings
from devctl.config.reference import KEY_LINE, render_reference
from devctl.config.schema import KEYS

REPO = Path(__file__).resolve().parents[2]


def uncommented(text: str, *, skip: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """The reference with its key lines (and their example blocks) made live."""
    out = []
    in_example = ""
    for line in text.splitlines():
        match = KEY_LINE.match(line)
        if in_example and line.startswith(in_example + "#   "):
            out.append(in_example + line[len(in_example) + 2 :])
            continue
        in_example = ""
        if match and match.group(2) not in skip:
            indent, leaf, value = match.groups()
            out.append(f"{indent}{leaf}:" + (f" {value}" if value else ""))
            in_example = indent if value is None else ""
        elif not line.lstrip().startswith("#"):
            out.append(line)
    return "\n".join(out) + "\n"


def flatten(data: dict[str, Any]) -> set[str]:
    keys = set()
    for top, value in data.items():
        if isinstance(value, dict) and top not in KEYS:
            keys |= {f"{top}.{sub}" for sub in value}
        else:
            keys.add(top)
    return keys


def test_the_reference_lists_every_key_exactly_once() -> None:
    data = yaml.safe_load(uncommented(render_reference()))
    assert flatten(data) == set(KEYS)


def test_the_file_in_the_repository_is_the_generated_one() -> None:
    assert (REPO / "config/devctl.yaml").read_text() == render_reference(), (
        "regenerate it: devctl config reference > config/devctl.yaml"
    )


def test_the_reference_changes_nothing_until_a_line_is_uncommented(tmp_path: Path) -> None:
    (tmp_path / "devctl.yaml").write_text(render_reference())
    settings = load_settings(cwd=tmp_path, environ={})
    assert set(settings.sources.values()) == {"default"}


def test_every_uncommented_value_is_valid_and_read_from_the_file(tmp_path: Path) -> None:
    secrets = {k.rpartition(".")[2] for k, f in KEYS.items() if f.secret}
    path = tmp_path / "devctl.yaml"
    path.write_text(uncommented(render_reference(), skip=secrets))
    settings = load_settings(cwd=tmp_path, environ={})
    from_file = {k for k, source in settings.sources.items() if source.startswith(str(path))}
    assert from_file == {k for k, f in KEYS.items() if not f.secret}


def test_cli_prints_the_reference() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devctl", "config", "reference"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_reference()
