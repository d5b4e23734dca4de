"""The commented reference of every config key, generated from the schema.

``config/devctl.yaml`` is this module's output (``devctl config reference >
config/devctl.yaml``); a test keeps the two equal, so the file cannot fall behind
the schema. Every key is written commented out with its default, so the file
documents everything and changes nothing until a line is uncommented.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import yaml

from devctl.config.schema import KEYS, MAX_PARTITIONS, RELATIONS, SECTIONS, TOPIC_KEYS, Key

# A key line: "# leaf: value", indented by its section. Doc lines never match it.
KEY_LINE = re.compile(r"^(\s*)# ([a-z_]+):(?: (.*))?$")

_HEADER = """\
# devctl configuration: every key, its default and what it does.
# Generated from devctl/config/schema.py by `devctl config reference`; change the
# schema, then regenerate (a test fails while this file is out of date).
#
# Every key is optional and shown commented out with its default: uncomment a line
# to change it. `devctl config show` prints the effective value of each key and where
# it came from; `devctl config validate` checks it all (exit 2 with file and line).
# Precedence, highest first: command-line flags, the environment, ./.env, this
# file, packaged defaults.
#
# Secrets (redis.password, kafka.sasl_password) have no default and are refused in
# this file: set them in the environment or .env.
"""

_TOPICS = f"""\
# The topics themselves are in topics.yaml beside this file; a `topics:` list here
# replaces it. Each entry is a name, or a mapping with the keys
# {", ".join(TOPIC_KEYS)}.
# Partitions: at most {MAX_PARTITIONS:,}. Topic configs are checked against Apache
# Kafka's topic-level configs.
"""


def render_reference() -> str:
    """The text of config/devctl.yaml."""
    out = [_HEADER]
    sections: dict[str, list[str]] = {}
    for key in KEYS:
        section, _, leaf = key.rpartition(".")
        if section:
            sections.setdefault(section, []).append(key)
        else:
            out.append("\n" + _key_block(key, leaf, ""))
    for section, keys in sections.items():
        out.append(f"\n# --- {SECTIONS[section]}\n{section}:\n")
        out.append("\n".join(_key_block(key, key.rpartition(".")[2], "  ") for key in keys))
    out.append("\n" + _TOPICS)
    return "".join(out)


def _key_block(key: str, leaf: str, indent: str) -> str:
    spec = KEYS[key]
    lines = textwrap.wrap(_describe(key, spec), width=88 - len(indent) - 2)
    block = [f"{indent}# {line}" for line in lines]
    if spec.secret:
        block.append(f"{indent}# {leaf}:")
    elif spec.example is not None and "\n" in spec.example:
        block.append(f"{indent}# {leaf}:")
        block += [f"{indent}#   {line}" for line in spec.example.splitlines()]
    else:
        value = spec.example if spec.example is not None else _scalar(spec.default)
        block.append(f"{indent}# {leaf}: {value}" if value != "" else f"{indent}# {leaf}:")
    return "\n".join(block) + "\n"


def _describe(key: str, spec: Key) -> str:
    parts = [spec.help.rstrip(".") + "."]
    if spec.choices:
        parts.append("One of " + ", ".join(spec.choices) + ".")
    bounds = [
        f"at least {_number(spec.minimum)}" if spec.minimum is not None else "",
        f"at most {_number(spec.maximum)}" if spec.maximum is not None else "",
    ]
    if any(bounds):
        parts.append(" and ".join(b for b in bounds if b).capitalize() + ".")
    for smaller, relation, larger, _why in RELATIONS:
        if key in (smaller, larger):
            parts.append(f"Needs {smaller} {relation} {larger}.")
    if spec.optional and spec.default is None and not spec.secret:
        parts.append(
            "Unset by default" + ("; the value shown is an example." if spec.example else ".")
        )
    if spec.secret:
        parts.append(f"Secret: only from the environment or .env ({', '.join(spec.env)}).")
    elif spec.env:
        parts.append(f"Environment {', '.join(spec.env)}.")
    return " ".join(parts)


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").strip()
