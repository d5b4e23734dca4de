"""The config loader: precedence, provenance, validation messages with file, key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from devctl.config.loader import load_settings, redact_url
from devctl.errors import EXIT_USAGE, ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(cwd=tmp_path, environ={})
    assert settings.config_file is None
    assert settings.engine == "local"
    assert settings.data_dir == tmp_path / ".devctl"
    assert settings.kafka.client_id == "devconnect-app"
    assert settings.kafka.group_id == "devconnect-group"
    assert settings.redis.password is None
    names = [t.name for t in settings.topics]
    assert names[:2] == ["user-events", "user-events.dlq"]
    assert len(names) == 10
    assert all(t.partitions == 3 for t in settings.topics)
    assert settings.sources["redis.port"] == "default"


def test_precedence_flag_env_dotenv_file_default(tmp_path: Path) -> None:
    write(
        tmp_path / "config/devctl.yaml",
        "redis:\n  port: 7001\nkafka:\n  port: 9301\n  client_id: from-file\n",
    )
    write(
        tmp_path / ".env",
        "DEVCTL_REDIS_PORT=7002\nKAFKA_CLIENT_ID=from-dotenv\nexport KAFKA_GROUP_ID='g-dotenv'\n",
    )
    env = {"DEVCTL_REDIS_PORT": "7003"}
    settings = load_settings(cwd=tmp_path, environ=env)
    assert settings.redis.port == 7003
    assert settings.sources["redis.port"] == "env DEVCTL_REDIS_PORT"
    assert settings.kafka.client_id == "from-dotenv"
    assert settings.sources["kafka.client_id"] == ".env:2 (KAFKA_CLIENT_ID)"
    assert settings.kafka.group_id == "g-dotenv"
    assert settings.kafka.port == 9301
    assert settings.sources["kafka.port"].endswith("config/devctl.yaml:4")

    flagged = load_settings(cwd=tmp_path, environ=env, flags={"redis.port": (7004, "--redis-port")})
    assert flagged.redis.port == 7004
    assert flagged.sources["redis.port"] == "flag --redis-port"


def test_devctl_name_beats_devconnect_name(tmp_path: Path) -> None:
    settings = load_settings(
        cwd=tmp_path, environ={"KAFKA_BROKERS": "a:9092", "DEVCTL_KAFKA_BROKERS": "b:9092"}
    )
    assert settings.kafka.brokers == "b:9092"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis:\n  port: [1, 2\n", "invalid YAML"),
        ("redis:\n  prot: 7000\n", "key 'redis.prot': unknown key (did you mean 'redis.port'?)"),
        (
            "kafka:\n  client_id: x\n  port: nine\n",
            "key 'kafka.port': expected an integer, got a string 'nine'",
        ),
        ("engine: podman\n", "key 'engine': expected one of local, external"),
        ("bogus: 1\n", "key 'bogus': unknown key"),
        ("redis: 5\n", "key 'redis': must be a mapping"),
        ("topics:\n  - name: ok\n  - name: 'bad name!'\n", "key 'topics[1].name'"),
        (
            "topics:\n  - name: t\n    partitions: 0\n",
            "key 'topics[0].partitions': expected a positive integer",
        ),
    ],
)
def test_bad_config_names_file_key_and_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "devctl.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    message = info.value.message
    assert message.startswith(str(path) + ":"), message
    assert expected in message
    assert info.value.exit_code == EXIT_USAGE


def test_line_numbers_point_at_the_key(tmp_path: Path) -> None:
    write(
        tmp_path / "devctl.yaml", "# comment\nengine: local\nredis:\n  key_prefix: p\n  port: -1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    assert info.value.line == 5
    assert info.value.key == "redis.port"


def test_bad_environment_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"env DEVCTL_KAFKA_PORT, key 'kafka\.port'"):
        load_settings(cwd=tmp_path, environ={"DEVCTL_KAFKA_PORT": "abc"})


def test_explicit_config_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_path="nope.yaml", cwd=tmp_path, environ={})


def test_topics_file_beside_config_and_dead_letters(tmp_path: Path) -> None:
    write(tmp_path / "config/devctl.yaml", "topic_defaults:\n  dead_letter_suffix: -dlq\n")
    write(
        tmp_path / "config/topics.yaml",
        "topics:\n  - name: a\n    partitions: 6\n    config: {retention.ms: 1000}\n  - name: b\n    dead_letter: false\n",
    )
    settings = load_settings(cwd=tmp_path, environ={})
    assert [(t.name, t.partitions) for t in settings.topics] == [("a", 6), ("a-dlq", 6), ("b", 3)]
    assert settings.topics[0].config == {"retention.ms": "1000"}
    assert settings.topics[1].dead_letter_of == "a"
    assert settings.topics_source.endswith("topics.yaml")


def test_secrets_have_no_default_and_are_redacted(tmp_path: Path) -> None:
    env = {"DEVCTL_REDIS_PASSWORD": "hunter2", "REDIS_URL": "redis://user:s3cret@h:6379/0"}
    settings = load_settings(cwd=tmp_path, environ=env)
    shown = settings.redacted()
    assert shown["redis.password"]["value"] == "********"
    assert shown["redis.url"]["value"] == "redis://user:********@h:6379/0"
    assert "hunter2" not in repr(shown) and "s3cret" not in repr(shown)
    from devctl.config.schema import KEYS

    assert all(f.default is None for f in KEYS.values() if f.secret)


def test_redact_url_leaves_plain_urls_alone() -> None:
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:pw@h:1") == "redis://:********@h:1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("topics: [zz1, zz1.dlq]\n", "key 'topics[1]': topic 'zz1.dlq' is listed twice"),
        ("topics: [a, a]\n", "topic 'a' is listed twice"),
        ("topics: [__consumer_offsets]\n", "reserved for Kafka's internal topics"),
        ("topics: ['..']\n", "not valid topic names"),
        ("topic_defaults:\n  dead_letter_suffix: /x\n", "key 'topic_defaults.dead_letter_suffix'"),
        ("topic_defaults:\n  dead_letter_suffix: ''\n", "must be non-empty"),
        ("redis:\n  port: 70000\n", "must be at most 65535"),
        ("redis:\n  port: 1\nredis:\n  port: 2\n", "key 'redis': duplicate key (first on line 1)"),
        ("redis:\n  password: hunter2\n", "secrets are not read from config files"),
    ],
)
def test_more_bad_configs(tmp_path: Path, text: str, expected: str) -> None:
    write(tmp_path / "devctl.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(cwd=tmp_path, environ={})
    assert expected in info.value.message
    assert "hunter2" not in info.value.message


def test_commented_out_section_and_empty_env_values_mean_unset(tmp_path: Path) -> None:
    write(tmp_path / "devctl.yaml", "kafka:\n  # port: 1\n")
    write(tmp_path / ".env", "DEVCTL_REDIS_PORT=\n")
    settings = load_settings(cwd=tmp_path, environ={})
    assert settings.kafka.port == 9092 and settings.redis.port == 6379


def test_non_utf8_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "devctl.yaml").write_bytes(b"redis:\n  port: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(cwd=tmp_path, environ={})
    (tmp_path / "devctl.yaml").unlink()
    (tmp_path / ".env").write_bytes(b"KAFKA_CLIENT_ID=\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(cwd=tmp_path, environ={})


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://u:pa/ss@h:1/0", "redis://u:********@h:1/0"),
        ("redis://u:pa ss@h:1", "redis://u:********@h:1"),
        ("redis://u:p@ss@h:1/0", "redis://u:********@h:1/0"),
        ("rediss://:secret@h:6380", "rediss://:********@h:6380"),
        ("redis://user@h:1", "redis://user@h:1"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_masks_awkward_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
