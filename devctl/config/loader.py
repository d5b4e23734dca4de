"""Load the effective configuration, layer by layer, with provenance per value.

Precedence, highest first: command-line flags, the environment, a ``.env`` file
in the working directory, the active context (``--context``, ``$DEVCTL_CONTEXT``
or the contexts file's current one: devctl/contexts.py), the config file
(``--config``, ``$DEVCTL_CONFIG``, ``./devctl.yaml`` or ``./config/devctl.yaml``),
packaged defaults.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from devctl.config import envvars
from devctl.config.schema import (
    DEFAULT_TOPICS,
    KEYS,
    MAX_PARTITIONS,
    RELATIONS,
    SECTIONS,
    TOPIC_KEYS,
    ApiSettings,
    Config,
    EventsSettings,
    KafkaSettings,
    Key,
    LocalSettings,
    RedisSettings,
    StateSettings,
    TopicDefaults,
    TopicSpec,
    build_config,
    flatten_config,
    topic_name_problem,
)
from devctl.config.topic_configs import topic_config_problem
from devctl.errors import ConfigError

if TYPE_CHECKING:
    import yaml

    from devctl.contexts import Context

CONFIG_CANDIDATES = ("devctl.yaml", "config/devctl.yaml")
TOPICS_FILE = "topics.yaml"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """The effective configuration: typed values, built once, and where each came from.

    Read a setting through its section (``settings.redis.port``); ``sources`` maps
    each dotted key (``redis.port``) to its provenance (``config/devctl.yaml:12``,
    ``env REDIS_URL``, ``flag <the flag the front end names>``, ``default``).
    """

    config: Config
    sources: dict[str, str]
    topics: tuple[TopicSpec, ...]
    topics_source: str
    config_file: Path | None
    cwd: Path
    context: Context | None = None  # the active context, whose settings are a layer

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def engine_is_explicit(self) -> bool:
        return self.sources["engine"] != "default"

    @cached_property
    def data_dir(self) -> Path:
        path = Path(os.path.expanduser(self.config.data_dir))
        return path if path.is_absolute() else (self.cwd / path)

    @property
    def redis(self) -> RedisSettings:
        return self.config.redis

    @property
    def kafka(self) -> KafkaSettings:
        return self.config.kafka

    @property
    def local(self) -> LocalSettings:
        return self.config.local

    @property
    def topic_defaults(self) -> TopicDefaults:
        return self.config.topic_defaults

    @property
    def state(self) -> StateSettings:
        return self.config.state

    @property
    def events(self) -> EventsSettings:
        return self.config.events

    @property
    def api(self) -> ApiSettings:
        return self.config.api

    @cached_property
    def values(self) -> Mapping[str, Any]:
        """Every value by dotted key, read-only: for code that walks all keys (show, tests)."""
        return MappingProxyType(flatten_config(self.config))

    def redacted(self) -> dict[str, dict[str, Any]]:
        """Every key with its value (secrets masked) and its source."""
        out: dict[str, dict[str, Any]] = {}
        for key, spec in KEYS.items():
            value = self.values[key]
            if spec.secret and value is not None:
                value = "********"
            elif isinstance(value, str):
                value = redact_url(value)
            out[key] = {"value": value, "source": self.sources[key]}
        return out


def redact_url(text: str) -> str:
    """Mask the password of a URL such as redis://user:secret@host:6379/0.

    The user info ends at the last '@', so passwords holding '@', '/' or spaces
    are masked whole; masking too much is harmless, too little is a leak.
    """
    scheme, separator, rest = text.partition("://")
    at = rest.rfind("@")
    if not separator or at < 0:
        return text
    user, colon, _password = rest[:at].partition(":")
    if not colon:
        return text
    return f"{scheme}://{user}:********@{rest[at + 1 :]}"


def load_settings(
    *,
    config_path: str | os.PathLike[str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    context: str | None = None,
) -> Settings:
    """Build the effective settings. ``flags`` maps a dotted key to (value, flag name);
    ``context`` names the active context (else ``environ`` or the contexts file does)."""
    cwd = (cwd or Path.cwd()).resolve()
    environ = os.environ if environ is None else environ
    # Layers are merged by dotted key, then the typed Config is built once.
    values: dict[str, Any] = {k: spec.default for k, spec in KEYS.items()}
    sources: dict[str, str] = dict.fromkeys(KEYS, "default")

    # 1. config file
    config_file = _find_config_file(config_path, environ, cwd)
    raw_topics: Any = None
    topics_source = "default"
    topics_lines: dict[str, int] = {}
    if config_file is not None:
        data, lines = _read_yaml(config_file)
        file_values, raw_topics = _flatten_file(data, lines, str(config_file))
        for key, value in file_values.items():
            values[key] = value
            sources[key] = (
                f"{config_file}:{lines.get(key, 0)}" if lines.get(key) else str(config_file)
            )
        if raw_topics is not None:
            topics_source = str(config_file)
            topics_lines = {k: v for k, v in lines.items() if k.startswith("topics")}
        else:
            topics_file = config_file.parent / TOPICS_FILE
            if topics_file.is_file():
                tdata, tlines = _read_yaml(topics_file)
                if not isinstance(tdata, dict) or set(tdata) != {"topics"}:
                    raise ConfigError(
                        "a topics file must hold a single 'topics:' list",
                        source=str(topics_file),
                        line=1,
                    )
                raw_topics, topics_source, topics_lines = tdata["topics"], str(topics_file), tlines

    # 2. the active context: above the project's file (it says which cluster this
    # user targets now), below .env, the environment and flags (one-off overrides).
    from devctl.contexts import active

    chosen = active(context, environ)
    if chosen is not None:
        for key, value in chosen.values().items():
            values[key] = value  # validated when the store was read
            sources[key] = f"context {chosen.name}"

    # 3. .env file, 4. environment
    dotenv_path = cwd / ".env"
    if dotenv_path.is_file():
        dotenv = _read_dotenv(dotenv_path)
        _apply_env(
            values,
            sources,
            {k: v for k, (v, _) in dotenv.items()},
            lambda n: f".env:{dotenv[n][1]} ({n})",
        )
    _apply_env(values, sources, environ, lambda n: f"env {n}")

    # 5. flags
    for key, (value, flag) in (flags or {}).items():
        if value is None:
            continue
        values[key] = _check_value(key, KEYS[key], value, source=f"flag {flag}", line=None)
        sources[key] = f"flag {flag}"

    _check_relations(values, sources)
    config = build_config(values)
    topics = _build_topics(
        raw_topics,
        config.topic_defaults,
        topics_source,
        topics_lines,
        suffix_source=sources["topic_defaults.dead_letter_suffix"],
    )
    return Settings(
        config=config,
        sources=sources,
        topics=topics,
        topics_source=topics_source,
        config_file=config_file,
        cwd=cwd,
        context=chosen,
    )


def _find_config_file(
    explicit: str | os.PathLike[str] | None, environ: Mapping[str, str], cwd: Path
) -> Path | None:
    if explicit is None and environ.get(envvars.CONFIG_FILE):
        explicit = environ[envvars.CONFIG_FILE]
    if explicit is not None:
        path = Path(explicit)
        path = path if path.is_absolute() else cwd / path
        if not path.is_file():
            raise ConfigError("config file not found", source=str(path))
        return path
    for candidate in CONFIG_CANDIDATES:
        path = cwd / candidate
        if path.is_file():
            return path
    return None


def check_setting(key: str, value: Any, *, source: str) -> Any:
    """A value for ``key`` validated as a config file's would be (ConfigError if not)."""
    spec = KEYS.get(key)
    if spec is None:
        raise ConfigError("unknown key" + _suggest(key, list(KEYS)), source=source, key=key)
    return _check_value(key, spec, value, source=source, line=None)


def parse_setting(key: str, text: str, *, source: str) -> Any:
    """A value for ``key`` from text (as the environment gives it), validated."""
    spec = KEYS.get(key)
    if spec is None:
        raise ConfigError("unknown key" + _suggest(key, list(KEYS)), source=source, key=key)
    return _coerce_text(key, spec, text, source)


def read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """A YAML file's data and the line of every key (ConfigError naming the file)."""
    return _read_yaml(path)


def _read_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    import yaml  # here, not at the top: only a config file needs it (~12 ms)

    text = _read_text(path)
    # libyaml when installed: parsing in pure Python took ~7 ms of every command
    # that reads the file, libyaml ~0.1 ms.
    fast = getattr(yaml, "CSafeLoader", None)
    try:
        return _parse_yaml(fast or yaml.SafeLoader, text, str(path))
    except yaml.YAMLError as exc:
        error: yaml.YAMLError = exc
        if fast is not None:
            # libyaml words errors more vaguely ("found character that cannot start
            # any token", not which): the pure-Python parser says it better.
            try:
                _parse_yaml(yaml.SafeLoader, text, str(path))
            except yaml.YAMLError as worded:
                error = worded
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            f"invalid YAML: {problem}",
            source=str(path),
            line=mark.line + 1 if mark is not None else None,
        ) from error


def _parse_yaml(loader_class: Any, text: str, source: str) -> tuple[Any, dict[str, int]]:
    """Values and the line of every key, from one parse (nodes, then values)."""
    loader = loader_class(text)
    lines: dict[str, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, lines
        _collect_lines(node, "", lines, source)  # before constructing, which keeps duplicates
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    return ({} if data is None else data), lines


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not UTF-8 text (byte {exc.start}): save the file as UTF-8", source=str(path)
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source=str(path)) from exc


def _collect_lines(node: yaml.Node, prefix: str, lines: dict[str, int], source: str = "") -> None:
    """Line of every key; a key given twice is an error (YAML would keep the last silently)."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            path = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            line = key_node.start_mark.line + 1
            if path in seen:
                raise ConfigError(
                    f"duplicate key (first on line {lines[path]})",
                    source=source,
                    key=path,
                    line=line,
                )
            seen.add(path)
            lines[path] = line
            _collect_lines(value_node, path, lines, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = f"{prefix}[{index}]"
            lines[path] = item.start_mark.line + 1
            _collect_lines(item, path, lines, source)


def _flatten_file(data: Any, lines: dict[str, int], source: str) -> tuple[dict[str, Any], Any]:
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of keys", source=source, line=1)
    values: dict[str, Any] = {}
    topics: Any = None
    known_top = [k for k in KEYS if "." not in k] + list(SECTIONS) + ["topics"]
    for top, value in data.items():
        top = str(top)
        if top == "topics":
            topics = value
        elif top in KEYS:
            values[top] = _check_value(top, KEYS[top], value, source=source, line=lines.get(top))
        elif top in SECTIONS:
            if value is None:  # a section whose keys are all commented out
                continue
            if not isinstance(value, dict):
                raise ConfigError(
                    f"must be a mapping, got {_type_name(value)}",
                    source=source,
                    key=top,
                    line=lines.get(top),
                )
            for sub, subvalue in value.items():
                key = f"{top}.{sub}"
                spec = KEYS.get(key)
                if spec is None:
                    raise ConfigError(
                        "unknown key" + _suggest(key, list(KEYS)),
                        source=source,
                        key=key,
                        line=lines.get(key),
                    )
                if spec.secret:
                    raise ConfigError(
                        "secrets are not read from config files (they end up in repositories)",
                        source=source,
                        key=key,
                        line=lines.get(key),
                        hint=f"set {spec.env[0]} in the environment or in .env",
                    )
                values[key] = _check_value(
                    key, spec, subvalue, source=source, line=lines.get(key), lines=lines
                )
        else:
            raise ConfigError(
                "unknown key" + _suggest(top, known_top),
                source=source,
                key=top,
                line=lines.get(top),
            )
    return values, topics


def _suggest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _check_value(
    key: str,
    spec: Key,
    value: Any,
    *,
    source: str,
    line: int | None,
    lines: Mapping[str, int] | None = None,
) -> Any:
    """Validate a typed value (YAML, environment or flag) against its schema entry.

    Raise ConfigError naming the source, key and line; ``lines`` (the line of every
    nested key of a YAML file) lets a problem inside a mapping point at its own line.
    """

    def bad(expected: str) -> ConfigError:
        return ConfigError(
            f"expected {expected}, got {_type_name(value)} {value!r}",
            source=source,
            key=key,
            line=line,
        )

    if value is None:
        if spec.optional:
            return None
        raise bad(spec.kind)
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
    elif spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        value = float(value)
        if not math.isfinite(value):  # YAML's .inf / .nan; nan would pass every range
            raise bad("a finite number")
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
    elif spec.kind == "str":
        if not isinstance(value, str):
            raise bad("a string")
    elif spec.kind == "choice":
        if not isinstance(value, str) or value not in spec.choices:
            raise bad("one of " + ", ".join(spec.choices))
    elif spec.kind == "mapping" and not isinstance(value, dict):
        raise bad("a mapping")
    if spec.minimum is not None and isinstance(value, int | float) and value < spec.minimum:
        raise ConfigError(
            f"must be at least {_number(spec.minimum)}, got {value!r}",
            source=source,
            key=key,
            line=line,
        )
    if spec.maximum is not None and isinstance(value, int | float) and value > spec.maximum:
        raise ConfigError(
            f"must be at most {_number(spec.maximum)}, got {value!r}",
            source=source,
            key=key,
            line=line,
        )
    if spec.check is not None:
        try:
            problem = spec.check(value)
        except ConfigError as exc:
            # Raised by a nested check (rate-limit policies) naming a key inside this
            # mapping: point at that key's own line, or the nearest enclosing one.
            inner = exc.key or key
            found = _nearest_line(inner, lines or {}) or line
            message = exc.message.removeprefix(f"key '{exc.key}': ") if exc.key else exc.message
            raise ConfigError(message, source=source, key=inner, line=found, hint=exc.hint) from exc
        if problem:
            raise ConfigError(problem, source=source, key=key, line=line)
    return value


def _number(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else f"{limit:g}"


def _nearest_line(key: str, lines: Mapping[str, int]) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def _check_relations(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Values that are each valid but not together (e.g. a heartbeat above the session)."""
    for smaller, relation, larger, why in RELATIONS:
        low, high = values[smaller], values[larger]
        if low is None or high is None or (low < high if relation == "<" else low <= high):
            continue
        # Blame the key the user set (a default is never the mistake); both are named.
        key = smaller if sources[smaller] != "default" else larger
        other = larger if key == smaller else smaller
        raise ConfigError(
            f"{smaller} ({low}) must be {'below' if relation == '<' else 'at most'} "
            f"{larger} ({high}, from {sources[other]}): {why}",
            source=sources[key],
            key=key,
        )


def _coerce_text(key: str, spec: Key, text: str, source: str) -> Any:
    """Turn an environment string into a typed value, then validate it."""
    stripped = text.strip()
    value: Any = stripped
    try:
        if stripped == "" and spec.optional:
            value = None
        elif spec.kind == "int":
            value = int(stripped)
        elif spec.kind == "float":
            value = float(stripped)
        elif spec.kind == "bool":
            if stripped.lower() in _TRUE:
                value = True
            elif stripped.lower() in _FALSE:
                value = False
        elif spec.kind == "mapping":
            import yaml

            # Left as text if it does not parse: _check_value reports the wrong type.
            with contextlib.suppress(yaml.YAMLError):
                value = yaml.safe_load(stripped)
    except ValueError:
        pass  # left as text: _check_value reports the wrong type
    return _check_value(key, spec, value, source=source, line=None)


def _apply_env(
    values: dict[str, Any], sources: dict[str, str], env: Mapping[str, str], describe: Any
) -> None:
    for key, spec in KEYS.items():
        for name in spec.env:
            if name in env:
                if not env[name].strip() and not spec.optional:
                    continue  # NAME= with nothing after it means "not set"
                source = describe(name)
                values[key] = _coerce_text(key, spec, env[name], source)
                sources[key] = source
                break


def _read_dotenv(path: Path) -> dict[str, tuple[str, int]]:
    """Parse KEY=VALUE lines; '#' comments, 'export ' prefixes and quotes allowed."""
    out: dict[str, tuple[str, int]] = {}
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        if "=" not in line:
            raise ConfigError("expected KEY=VALUE", source=str(path), line=number)
        name, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[name.strip()] = (value, number)
    return out


def _build_topics(
    raw: Any, defaults: TopicDefaults, source: str, lines: dict[str, int], *, suffix_source: str
) -> tuple[TopicSpec, ...]:
    partitions_default = defaults.partitions
    replication_default = defaults.replication_factor
    dead_letter_default = defaults.dead_letter
    suffix = defaults.dead_letter_suffix
    if raw is None:
        raw = list(DEFAULT_TOPICS)
    if not isinstance(raw, list):
        raise ConfigError(
            "must be a list of topics", source=source, key="topics", line=lines.get("topics")
        )
    specs: list[TopicSpec] = []
    seen: set[str] = set()
    dead_letters: set[str] = set()
    if not suffix or topic_name_problem("x" + suffix):
        raise ConfigError(
            f"dead-letter suffix {suffix!r} must be non-empty and valid in a topic name",
            key="topic_defaults.dead_letter_suffix",
            source=suffix_source,
        )
    for index, item in enumerate(raw):
        where = f"topics[{index}]"
        line = lines.get(where)
        entry: dict[str, Any] = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict):
            raise ConfigError("a topic is a name or a mapping", source=source, key=where, line=line)
        for key in entry:
            if key not in TOPIC_KEYS:
                raise ConfigError(
                    "unknown key" + _suggest(str(key), list(TOPIC_KEYS)),
                    source=source,
                    key=f"{where}.{key}",
                    line=lines.get(f"{where}.{key}", line),
                )
        name = entry.get("name")
        problem = topic_name_problem(name) if isinstance(name, str) else "expected a string"
        if problem:
            raise ConfigError(
                problem, source=source, key=f"{where}.name", line=lines.get(f"{where}.name", line)
            )
        assert isinstance(name, str)
        partitions = _topic_int(
            entry, "partitions", partitions_default, source, where, lines, MAX_PARTITIONS
        )
        replication = _topic_int(
            entry,
            "replication_factor",
            replication_default,
            source,
            where,
            lines,
            int(KEYS["topic_defaults.replication_factor"].maximum or 1),
        )
        config = entry.get("config") or {}
        if not isinstance(config, dict):
            raise ConfigError(
                "must be a mapping of topic configs",
                source=source,
                key=f"{where}.config",
                line=lines.get(f"{where}.config", line),
            )
        config = {str(k): _config_text(v) for k, v in config.items()}
        for config_name, config_value in config.items():
            problem = topic_config_problem(config_name, config_value)
            if problem:
                config_key = f"{where}.config.{config_name}"
                raise ConfigError(
                    problem,
                    source=source,
                    key=config_key,
                    line=lines.get(config_key, lines.get(f"{where}.config", line)),
                )
        key_doc = str(entry.get("key", "user id"))
        dead_letter = entry.get("dead_letter", dead_letter_default)
        if not isinstance(dead_letter, bool):
            raise ConfigError(
                "expected true or false",
                source=source,
                key=f"{where}.dead_letter",
                line=lines.get(f"{where}.dead_letter", line),
            )
        names = [name] + ([name + suffix] if dead_letter else [])
        for final in names:
            # Dead-letter names are checked too: the suffix could make them invalid or collide.
            problem = topic_name_problem(final)
            if problem or final in seen:
                reason = problem or (
                    f"topic '{final}' is listed twice"
                    + (
                        " (as a dead-letter topic too)"
                        if final != name or final in dead_letters
                        else ""
                    )
                )
                raise ConfigError(reason, source=source, key=where, line=line)
            seen.add(final)
        specs.append(TopicSpec(name, partitions, replication, config, key_doc))
        if dead_letter:
            dead_letters.add(name + suffix)
            specs.append(
                TopicSpec(name + suffix, partitions, replication, {}, key_doc, dead_letter_of=name)
            )
    return tuple(specs)


def _config_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _topic_int(
    entry: dict[str, Any],
    key: str,
    default: int,
    source: str,
    where: str,
    lines: dict[str, int],
    maximum: int,
) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problem = f"expected a positive integer, got {value!r}"
    elif value > maximum:
        problem = f"must be at most {maximum:,}, got {value:,}"
    else:
        return value
    raise ConfigError(
        problem,
        source=source,
        key=f"{where}.{key}",
        line=lines.get(f"{where}.{key}", lines.get(where)),
    )
