"""Contexts: named targets (an engine and its endpoints), one of them active.

Like kubectl contexts or rpk profiles. The store is one user-level YAML file,
``$DEVCTL_CONTEXTS_FILE``, else ``$XDG_CONFIG_HOME/devctl/contexts.yaml``, else
``~/.config/devctl/contexts.yaml``, written with mode 0600::

    current: prod
    contexts:
      prod:
        engine: external
        protected: true
        settings:
          redis.url: rediss://redis.prod:6380/0
          kafka.brokers: kafka-1:9093,kafka-2:9093
          kafka.security_protocol: SASL_SSL

``settings`` holds config keys (``devctl config show`` lists them) and never a
secret: secrets stay in the environment or in files the settings point at.

The active context: the one named by the front end (``--context``), else by
``DEVCTL_CONTEXT``, else the file's ``current``; none when nothing names one.
Its settings are a layer of the configuration, above the config file and below
``.env``, the environment and flags (see devctl/config/loader.py).

A protected context guards destructive operations: ``require_confirmation``
passes only when the caller gives the context's name, or when ``ask`` (the front
end's prompt, passed in: this module never prompts) answers with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devctl.errors import ConfigError, ContextProtected, UsageError

# The environment names this module reads (the CLI reads them before the schema).
CONTEXT_ENV = "DEVCTL_CONTEXT"
CONTEXTS_FILE_ENV = "DEVCTL_CONTEXTS_FILE"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_TOP_KEYS = ("current", "contexts")
_CONTEXT_KEYS = ("engine", "protected", "settings")


@dataclass(frozen=True)
class Context:
    """One named target: an engine, settings (dotted config key -> value), protection."""

    name: str
    engine: str
    protected: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, Any]:
        """The config layer of this context: its engine and its settings."""
        return {"engine": self.engine, **self.settings}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "protected": self.protected,
            "settings": dict(self.settings),
        }


@dataclass
class Store:
    """Every context and the name of the current one, as read from (or for) ``path``."""

    path: Path
    contexts: dict[str, Context] = field(default_factory=dict)
    current: str | None = None

    def get(self, name: str) -> Context:
        try:
            return self.contexts[name]
        except KeyError:
            known = ", ".join(sorted(self.contexts)) or "none yet"
            raise UsageError(
                f"no context '{name}' (known: {known})",
                hint="`devctl context list` shows them; `devctl context add` makes one",
                field="context",
                data={"value": name},
            ) from None


def contexts_path(environ: Mapping[str, str]) -> Path | None:
    """Where the store lives, from ``environ``; None when no home is known (no store)."""
    explicit = environ.get(CONTEXTS_FILE_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = environ.get("XDG_CONFIG_HOME", "").strip()
    if xdg:
        return Path(xdg) / "devctl" / "contexts.yaml"
    home = environ.get("HOME", "").strip()
    return Path(home) / ".config" / "devctl" / "contexts.yaml" if home else None


def name_problem(name: str) -> str | None:
    if not _NAME.match(name):
        return (
            f"invalid context name {name!r}: letters, digits, '.', '_', '-', "
            "at most 63, starting with a letter or digit"
        )
    return None


def check_settings(settings: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Settings of a context, validated as config values; secrets and engine refused."""
    from devctl.config.loader import check_setting
    from devctl.config.schema import KEYS

    checked: dict[str, Any] = {}
    for key, value in settings.items():
        key = str(key)
        spec = KEYS.get(key)
        if spec is None or key == "engine":
            why = "the engine is the context's own field" if key == "engine" else "unknown key"
            raise ConfigError(why, source=source, key=key, hint="`devctl config show` lists keys")
        if spec.secret:
            raise ConfigError(
                "secrets are not kept in contexts",
                source=source,
                key=key,
                hint=f"set {spec.env[0]} in the environment or in .env",
            )
        if key == "redis.url" and isinstance(value, str) and _url_password(value):
            raise ConfigError(
                "the URL holds a password: secrets are not kept in contexts",
                source=source,
                key=key,
                hint="drop it from the URL and set REDIS_PASSWORD in the environment",
            )
        checked[key] = check_setting(key, value, source=source)
    return checked


def _url_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False  # a malformed URL: the key's own check says what is wrong


def load(path: Path) -> Store:
    """The store at ``path``; an empty one when the file does not exist."""
    if not path.is_file():
        return Store(path)
    from devctl.config.loader import read_yaml

    data, lines = read_yaml(path)
    source = str(path)
    if data == {}:
        return Store(path)
    if not isinstance(data, dict) or set(data) - set(_TOP_KEYS):
        extra = sorted(set(data) - set(_TOP_KEYS)) if isinstance(data, dict) else []
        raise ConfigError(
            "a contexts file holds 'current:' and 'contexts:'"
            + (f" (unknown: {', '.join(map(str, extra))})" if extra else ""),
            source=source,
            line=1,
        )
    raw = data.get("contexts") or {}
    if not isinstance(raw, dict):
        raise ConfigError("must be a mapping of contexts", source=source, key="contexts")
    store = Store(path)
    for name, entry in raw.items():
        where = f"{source}:{lines.get(f'contexts.{name}', 0)}"
        store.contexts[str(name)] = _context(str(name), entry, where)
    current = data.get("current")
    if current is not None:
        if not isinstance(current, str) or current not in store.contexts:
            raise ConfigError(
                f"current context {current!r} is not one of the contexts",
                source=source,
                key="current",
                line=lines.get("current"),
                hint="`devctl context use NAME` sets it",
            )
        store.current = current
    return store


def _context(name: str, entry: Any, source: str) -> Context:
    from devctl.config.loader import check_setting

    problem = name_problem(name)
    if problem:
        raise ConfigError(problem, source=source)
    if not isinstance(entry, dict):
        raise ConfigError("a context is a mapping", source=source, key=name)
    unknown = sorted(set(map(str, entry)) - set(_CONTEXT_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown key: {', '.join(unknown)} (a context has {', '.join(_CONTEXT_KEYS)})",
            source=source,
            key=name,
        )
    if "engine" not in entry:
        raise ConfigError("a context names its engine", source=source, key=f"{name}.engine")
    engine = check_setting("engine", entry["engine"], source=source)
    protected = entry.get("protected", False)
    if not isinstance(protected, bool):
        raise ConfigError("expected true or false", source=source, key=f"{name}.protected")
    settings = entry.get("settings") or {}
    if not isinstance(settings, dict):
        raise ConfigError("must be a mapping of config keys", source=source, key=f"{name}.settings")
    return Context(name, engine, protected, check_settings(settings, f"{source} ({name})"))


def save(store: Store) -> None:
    """Write the store, readable by its owner only (mode 0600), atomically."""
    import yaml

    document: dict[str, Any] = {}
    if store.current is not None:
        document["current"] = store.current
    document["contexts"] = {
        c.name: {
            "engine": c.engine,
            **({"protected": True} if c.protected else {}),
            **({"settings": dict(c.settings)} if c.settings else {}),
        }
        for c in store.contexts.values()
    }
    text = "# devctl contexts: `devctl context --help`. No secrets here.\n" + yaml.safe_dump(
        document, sort_keys=False, default_flow_style=False
    )
    store.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = store.path.with_name(f".{store.path.name}.{os.getpid()}.tmp")
    # Created 0600 from the start, so the contents are never readable by others.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)
        os.replace(temporary, store.path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def editing(path: Path) -> Iterator[Store]:
    """The store at ``path`` to change, saved on a clean exit, under an exclusive lock.

    Two devctl processes changing contexts at once each read, change and write the
    whole file: without the lock the last writer won and the other's change (a new
    protected context, say) was lost while its command said it was done.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        store = load(path)
        yield store
        save(store)
    finally:
        os.close(fd)  # releases the lock


def add(store: Store, context: Context) -> None:
    problem = name_problem(context.name)
    if problem:
        raise UsageError(problem, field="context", data={"value": context.name})
    if context.name in store.contexts:
        raise UsageError(
            f"context '{context.name}' exists already",
            hint=f"`devctl context remove {context.name}` first",
        )
    checked = check_settings(context.settings, f"context {context.name}")
    store.contexts[context.name] = Context(context.name, context.engine, context.protected, checked)


def remove(store: Store, name: str) -> Context:
    """Forget a context; the current one stops being current."""
    removed = store.get(name)
    del store.contexts[name]
    if store.current == name:
        store.current = None
    return removed


def use(store: Store, name: str) -> Context:
    chosen = store.get(name)
    store.current = name
    return chosen


def select(
    store: Store, name: str | None, environ: Mapping[str, str]
) -> tuple[Context | None, str]:
    """The active context and what chose it (``flag``, ``env DEVCTL_CONTEXT``, the file).

    A name given but empty (``--context "$CTX"`` with CTX unset) is an error, never a
    silent fall back to the current context (which may be production).
    """
    if name is not None:
        problem = name_problem(name)
        if problem:
            raise UsageError(problem, field="context")
        return store.get(name), "flag"
    if CONTEXT_ENV in environ:
        from_env = environ[CONTEXT_ENV]
        problem = name_problem(from_env)
        if problem:
            raise UsageError(f"{CONTEXT_ENV}: {problem}", field="context")
        return store.get(from_env), f"env {CONTEXT_ENV}"
    if store.current:
        return store.get(store.current), str(store.path)
    return None, "none"


def active(name: str | None, environ: Mapping[str, str]) -> Context | None:
    """The active context, read from the store ``environ`` points at (None: no store)."""
    path = contexts_path(environ)
    if path is None:
        if name:
            raise UsageError(
                f"no context '{name}': no contexts file (HOME is not set)",
                hint=f"set {CONTEXTS_FILE_ENV}",
            )
        return None
    if not name and not environ.get(CONTEXT_ENV, "").strip() and not path.is_file():
        return None  # the common case costs one stat, not a YAML parse
    return select(load(path), name, environ)[0]


def require_confirmation(
    context: Context | None,
    given_name: str | None,
    ask: Callable[[str], str] | None,
) -> None:
    """Pass, or raise ContextProtected, before a destructive operation.

    On a protected context the caller must know its name: ``given_name`` (from a
    script), else the answer of ``ask(question)`` (a prompt; None when nobody can
    answer, e.g. no terminal). Unprotected or no context: always passes.
    """
    if context is None or not context.protected:
        return
    if given_name is not None:
        if given_name == context.name:
            return
        raise ContextProtected(
            f"the confirmation '{given_name}' does not match the protected context "
            f"'{context.name}': nothing was changed",
            field="confirm_context",
            data={"context": context.name},
        )
    if ask is None:
        raise ContextProtected(
            f"context '{context.name}' is protected: a destructive operation needs its "
            "name, and there is no terminal to ask: nothing was changed",
            field="confirm_context",
            data={"context": context.name},
        )
    answer = ask(f"Context '{context.name}' is protected. Type its name to continue")
    if answer.strip() != context.name:
        raise ContextProtected(
            f"'{answer.strip()}' is not '{context.name}': nothing was changed",
            data={"context": context.name},
        )
