"""Contexts: the file store, validation, selection, confirmation, the config layer."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devctl import contexts
from devctl.config.loader import load_settings
from devctl.contexts import Context, Store, require_confirmation
from devctl.errors import ConfigError, ContextProtected, UsageError

PROD = Context(
    "prod",
    "external",
    protected=True,
    settings={"redis.url": "redis://redis.prod:6379/0", "kafka.brokers": "k1:9093,k2:9093"},
)


def _store(tmp_path: Path) -> Store:
    return contexts.load(tmp_path / "cfg" / "contexts.yaml")


def test_store_round_trip_is_private(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.contexts == {} and store.current is None
    contexts.add(store, PROD)
    contexts.add(store, Context("dev", "local"))
    contexts.use(store, "dev")
    contexts.save(store)
    mode = stat.S_IMODE(store.path.stat().st_mode)
    assert mode == 0o600
    again = contexts.load(store.path)
    assert again.current == "dev"
    assert again.contexts["prod"] == PROD
    assert again.contexts["dev"] == Context("dev", "local")
    contexts.remove(again, "dev")
    assert again.current is None and set(again.contexts) == {"prod"}


def test_path_from_the_environment(tmp_path: Path) -> None:
    assert contexts.contexts_path({"DEVCTL_CONTEXTS_FILE": "/x/c.yaml", "HOME": "/h"}) == Path(
        "/x/c.yaml"
    )
    assert contexts.contexts_path({"XDG_CONFIG_HOME": "/xdg", "HOME": "/h"}) == Path(
        "/xdg/devctl/contexts.yaml"
    )
    assert contexts.contexts_path({"HOME": "/h"}) == Path("/h/.config/devctl/contexts.yaml")
    assert contexts.contexts_path({}) is None


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"redis.password": "x"}, "secrets are not kept"),
        ({"redis.url": "redis://u:secret@h:6379/0"}, "holds a password"),
        ({"redis.prt": 1}, "unknown key"),
        ({"engine": "local"}, "the engine is the context's own field"),
        ({"redis.port": "six"}, "expected an integer"),
        ({"kafka.security_protocol": "TLS"}, "expected one of"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, settings: dict[str, object], problem: str
) -> None:
    store = _store(tmp_path)
    with pytest.raises(ConfigError, match=problem):
        contexts.add(store, Context("bad", "external", settings=settings))
    assert "bad" not in store.contexts


def test_bad_names_and_duplicates(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(UsageError, match="invalid context name"):
        contexts.add(store, Context("no spaces", "local"))
    contexts.add(store, Context("dev", "local"))
    with pytest.raises(UsageError, match="exists already"):
        contexts.add(store, Context("dev", "external"))
    with pytest.raises(UsageError, match=r"no context 'nope' \(known: dev\)"):
        contexts.use(store, "nope")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("contexts: [a]\n", "must be a mapping of contexts"),
        ("contexts:\n  a: {}\n", "names its engine"),
        ("contexts:\n  a: {engine: cloud}\n", "expected one of"),
        ("contexts:\n  a: {engine: local, protected: maybe}\n", "expected true or false"),
        ("contexts:\n  a: {engine: local, colour: red}\n", "unknown key: colour"),
        ("current: b\ncontexts:\n  a: {engine: local}\n", "current context 'b'"),
        ("currentt: a\n", "unknown: currentt"),
        ("contexts:\n  a: {engine: local, settings: {redis.password: x}}\n", "secrets"),
    ],
)
def test_a_hand_edited_file_is_validated(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "contexts.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as caught:
        contexts.load(path)
    assert str(path) in caught.value.message


def _saved(tmp_path: Path, current: str | None = None) -> dict[str, str]:
    store = _store(tmp_path)
    contexts.add(store, PROD)
    contexts.add(store, Context("dev", "local", settings={"redis.port": 7000}))
    store.current = current
    contexts.save(store)
    return {"DEVCTL_CONTEXTS_FILE": str(store.path)}


def test_selection_precedence(tmp_path: Path) -> None:
    environ = _saved(tmp_path, current="dev")
    store = contexts.load(Path(environ["DEVCTL_CONTEXTS_FILE"]))
    assert contexts.select(store, None, environ)[0] == store.contexts["dev"]
    with_env = {**environ, "DEVCTL_CONTEXT": "prod"}
    assert contexts.select(store, None, with_env) == (PROD, "env DEVCTL_CONTEXT")
    assert contexts.select(store, "dev", with_env)[1] == "flag"
    store.current = None
    assert contexts.select(store, None, environ) == (None, "none")
    assert contexts.active(None, {"HOME": str(tmp_path / "nohome")}) is None


def test_the_context_is_a_config_layer_with_provenance(tmp_path: Path) -> None:
    environ = _saved(tmp_path, current="dev")
    (tmp_path / "devctl.yaml").write_text("redis:\n  port: 6500\n  key_prefix: 'p:'\n")
    settings = load_settings(cwd=tmp_path, environ=environ)
    # context over the config file; the file's other keys still apply
    assert settings.redis.port == 7000
    assert settings.sources["redis.port"] == "context dev"
    assert settings.redis.key_prefix == "p:"
    assert settings.engine == "local" and settings.sources["engine"] == "context dev"
    # the environment over the context
    settings = load_settings(cwd=tmp_path, environ={**environ, "DEVCTL_REDIS_PORT": "7100"})
    assert settings.redis.port == 7100
    assert settings.sources["redis.port"] == "env DEVCTL_REDIS_PORT"
    # --context over DEVCTL_CONTEXT over current; flags over everything
    settings = load_settings(
        cwd=tmp_path,
        environ={**environ, "DEVCTL_CONTEXT": "dev"},
        context="prod",
        flags={"kafka.brokers": ("k9:9092", "--kafka-brokers")},
    )
    assert settings.context == PROD
    assert settings.engine == "external"
    assert settings.redis.url == "redis://redis.prod:6379/0"
    assert settings.sources["redis.url"] == "context prod"
    assert settings.kafka.brokers == "k9:9092"
    with pytest.raises(UsageError, match="no context 'qa'"):
        load_settings(cwd=tmp_path, environ=environ, context="qa")


def test_no_store_no_layer(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    assert settings.context is None
    assert "context" not in " ".join(settings.sources.values())


def test_require_confirmation() -> None:
    asked: list[str] = []

    def answer(text: str):  # type: ignore[no-untyped-def]
        def ask(question: str) -> str:
            asked.append(question)
            return text

        return ask

    unprotected = Context("dev", "local")
    require_confirmation(None, None, None)
    require_confirmation(unprotected, None, None)
    require_confirmation(PROD, "prod", None)
    require_confirmation(PROD, None, answer(" prod\n"))
    assert asked and "prod" in asked[0] and "protected" in asked[0]
    with pytest.raises(ContextProtected, match="no terminal"):
        require_confirmation(PROD, None, None)
    with pytest.raises(ContextProtected, match="'prd' does not match"):
        require_confirmation(PROD, "prd", answer("prod"))
    with pytest.raises(ContextProtected, match="is not 'prod'"):
        require_confirmation(PROD, None, answer("yes"))
    assert ContextProtected.exit_code == 2
