"""The typed schema is the single source: each key is one field, everything else derived."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from devctl.config.loader import _check_value, load_settings
from devctl.config.schema import KEYS, SECTIONS, Config, _collect, setting
from devctl.errors import ConfigError


def test_every_default_passes_its_own_validation() -> None:
    for key, spec in KEYS.items():
        assert _check_value(key, spec, spec.default, source="default", line=None) == spec.default


def test_environment_names_are_unique_and_every_secret_has_one() -> None:
    names = [name for spec in KEYS.values() for name in spec.env]
    assert len(names) == len(set(names))
    assert all(spec.env and spec.default is None for spec in KEYS.values() if spec.secret)


def test_kinds_come_from_the_annotations() -> None:
    assert KEYS["redis.port"].kind == "int" and not KEYS["redis.port"].optional
    assert KEYS["redis.url"].kind == "str" and KEYS["redis.url"].optional
    assert KEYS["engine"].kind == "choice"
    assert KEYS["state.rate_limits"].kind == "mapping"
    assert KEYS["topic_defaults.dead_letter"].kind == "bool"
    assert list(SECTIONS) == [
        "redis",
        "kafka",
        "local",
        "docker",
        "topic_defaults",
        "state",
        "events",
        "api",
    ]


def test_sections_are_built_once_and_typed(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={"DEVCTL_REDIS_PORT": "7001"})
    assert settings.redis is settings.redis is settings.config.redis
    assert settings.redis.port == 7001
    assert settings.topic_defaults.dead_letter_suffix == ".dlq"
    assert settings.values["redis.port"] == 7001
    with pytest.raises(TypeError):
        settings.values["redis.port"] = 1  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis.port = 1  # type: ignore[misc]
    assert Config() == load_settings(cwd=tmp_path, environ={}).config


@pytest.mark.parametrize(
    ("annotation", "default", "options", "problem"),
    [
        (int, None, {}, "optional (`| None`) exactly when its default is None"),
        (int | None, 5, {}, "optional (`| None`) exactly when its default is None"),
        (str, "x", {"secret": True}, "a secret has no default"),
        (str | None, None, {"secret": True, "example": "x"}, None),
        (list[str], None, {}, "unsupported type"),
        (int, 1, {"choices": ("a",)}, "choices need a str field"),
    ],
)
def test_a_misdeclared_key_fails_at_import(
    annotation: Any, default: Any, options: dict[str, Any], problem: str | None
) -> None:
    section = dataclasses.make_dataclass(
        "Section", [("leaf", annotation, setting(default, "help", **options))], frozen=True
    )
    if problem is None:
        _collect(section, "s.", {}, {})
        return
    with pytest.raises(TypeError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        _collect(section, "s.", {}, {})


def test_a_tab_in_the_file_is_named(tmp_path: Path) -> None:
    # libyaml parses; its vaguer error wording is replaced by the pure-Python parser's.
    (tmp_path / "devctl.yaml").write_text("redis:\n\tport: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    assert info.value.line == 2
    assert "found character '\\t' that cannot start any token" in info.value.message
