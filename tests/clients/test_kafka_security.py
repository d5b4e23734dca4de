"""Kafka security settings reach the clients intact; a secured broker that refuses or
is away fails clearly within the configured timeout.

Tansu's SASL does not work with its memory storage, so no secured broker runs here:
what is tested is the clients' effective configuration (librdkafka validates it when
a client is built: a wrong name, value or unreadable file fails there) and the
behaviour against a broker that does not speak the configured protocol.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from devctl.clients.kafka_client import common_conf, consumer_conf
from devctl.config.loader import load_settings
from devctl.engines.external import ExternalEngine
from devctl.engines.processes import free_port
from devctl.errors import EXIT_NOT_RUNNING, EXIT_USAGE, ConfigError
from tests.cli.conftest import Cli
from tests.clients.pki import issue, make_ca

SECRET = "s3cret-Passw0rd"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a client certificate signed by it, made with openssl for this module."""
    root = tmp_path_factory.mktemp("tls")
    make_ca(root)
    issue(root, "client")
    return {name: root / name for name in ("ca.pem", "client.pem", "client.key")}


def _settings(tmp_path: Path, config: str, environ: dict[str, str]) -> object:
    (tmp_path / "devctl.yaml").write_text(config)
    return load_settings(
        cwd=tmp_path, environ={"DEVCTL_CONFIG": str(tmp_path / "devctl.yaml"), **environ}
    )


def test_sasl_ssl_settings_from_file_and_environment_reach_every_client(
    tmp_path: Path, certificates: dict[str, Path]
) -> None:
    settings = _settings(
        tmp_path,
        "engine: external\n"
        "kafka:\n"
        "  brokers: broker-1.internal:9093\n"
        "  security_protocol: SASL_SSL\n"
        "  sasl_mechanism: SCRAM-SHA-512\n"
        "  sasl_username: devctl\n"
        f"  ssl_ca_location: {certificates['ca.pem']}\n"
        "  client_config:\n"
        "    ssl.endpoint.identification.algorithm: https\n"
        "    client.rack: eu-west-1a\n",
        {"DEVCTL_KAFKA_SASL_PASSWORD": SECRET, "REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    endpoints = ExternalEngine(settings).endpoints(())  # type: ignore[arg-type]
    conf = common_conf(endpoints, settings)  # type: ignore[arg-type]
    assert conf["bootstrap.servers"] == "broker-1.internal:9093"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "devctl" and conf["sasl.password"] == SECRET
    assert conf["ssl.ca.location"] == str(certificates["ca.pem"])
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert conf["client.rack"] == "eu-west-1a"
    # librdkafka accepts every one of them (it refuses unknown names and bad files).
    Producer(conf).flush(0)
    AdminClient(conf)
    consumer = consumer_conf(endpoints, settings, group_id="g")  # type: ignore[arg-type]
    assert consumer["sasl.password"] == SECRET and consumer["client.rack"] == "eu-west-1a"


def test_mutual_tls_files_reach_the_client(tmp_path: Path, certificates: dict[str, Path]) -> None:
    settings = _settings(
        tmp_path,
        "kafka:\n  security_protocol: SSL\n"
        f"  ssl_ca_location: {certificates['ca.pem']}\n"
        f"  ssl_certificate_location: {certificates['client.pem']}\n"
        f"  ssl_key_location: {certificates['client.key']}\n",
        {},
    )
    from devctl.clients.endpoints import Endpoints

    conf = common_conf(Endpoints("external", "redis://x:1/0", "127.0.0.1:1"), settings)  # type: ignore[arg-type]
    assert conf["ssl.certificate.location"] == str(certificates["client.pem"])
    assert conf["ssl.key.location"] == str(certificates["client.key"])
    Producer(conf).flush(0)  # librdkafka loads and checks the key pair here


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ("kafka:\n  ssl_ca_location: /no/such/ca.pem\n", "no such file"),
        ("kafka:\n  client_config: {sasl.password: x}\n", "set by devctl"),
        ("kafka:\n  client_config: {sasl.oauthbearer.client.secret: x}\n", "holds a secret"),
        ("kafka:\n  client_config: {bootstrap.servers: a:1}\n", "set by devctl"),
        ("kafka:\n  client_config: {'Bad Name': 1}\n", "not a librdkafka setting name"),
        ("kafka:\n  client_config: [1, 2]\n", "expected a mapping"),
        ("kafka:\n  client_config: {ssl.key.pem: x}\n", "holds a secret"),
        ("kafka:\n  client_config: {sasl.oauthbearer.config: x}\n", "holds a secret"),
        ("kafka:\n  client_config: {sasl.jaas.config: x}\n", "holds a secret"),
    ],
)
def test_bad_security_settings_are_config_errors(tmp_path: Path, config: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, config, {})
    assert says in str(caught.value.message) or says in str(caught.value), caught.value


def test_config_show_redacts_the_secrets(cli: Cli, tmp_path: Path) -> None:
    shown = cli.run(
        "config",
        "show",
        "--json",
        DEVCTL_KAFKA_SASL_PASSWORD=SECRET,
        DEVCTL_KAFKA_SSL_KEY_PASSWORD=SECRET + "2",
    )
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and SECRET not in shown.stderr


def test_a_broker_that_does_not_speak_the_configured_protocol_fails_clearly_and_in_time(
    cli: Cli, stack: object, certificates: dict[str, Path]
) -> None:
    """SASL_SSL against a plaintext broker (Tansu), and against a port nobody listens on."""
    brokers = stack.endpoints.kafka_brokers  # type: ignore[attr-defined]
    for target in (brokers, f"127.0.0.1:{free_port()}"):
        started = time.monotonic()
        result = cli.run(
            "topics",
            "list",
            timeout=30,
            DEVCTL_ENGINE="external",
            REDIS_URL=stack.endpoints.redis_url,  # type: ignore[attr-defined]
            KAFKA_BROKERS=target,
            DEVCTL_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
            DEVCTL_KAFKA_SASL_MECHANISM="PLAIN",
            DEVCTL_KAFKA_SASL_USERNAME="devctl",
            DEVCTL_KAFKA_SASL_PASSWORD=SECRET,
            DEVCTL_KAFKA_SSL_CA_LOCATION=str(certificates["ca.pem"]),
            DEVCTL_KAFKA_REQUEST_TIMEOUT_MS="2000",
        )
        took = time.monotonic() - started
        assert result.returncode in (EXIT_NOT_RUNNING, 1), (target, result.stdout, result.stderr)
        assert result.returncode != EXIT_USAGE
        assert "Traceback" not in result.stderr and result.stderr.strip(), result.stderr
        assert SECRET not in result.stderr + result.stdout
        assert took < 2.0 * 3 + 3, f"{target}: {took:.1f}s"  # within the timeout, not a hang


def test_sasl_without_a_mechanism_is_a_config_error_not_an_internal_one(
    cli: Cli, stack: object
) -> None:
    result = cli.run(
        "topics",
        "list",
        DEVCTL_ENGINE="external",
        REDIS_URL=stack.endpoints.redis_url,  # type: ignore[attr-defined]
        KAFKA_BROKERS=stack.endpoints.kafka_brokers,  # type: ignore[attr-defined]
        DEVCTL_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
    )
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "needs kafka.sasl_mechanism" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "environ",
    [
        {
            "DEVCTL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "DEVCTL_KAFKA_SASL_MECHANISM": "PLAIN",
        },
        {"DEVCTL_KAFKA_SECURITY_PROTOCOL": "SSL", "DEVCTL_KAFKA_SSL_CA_LOCATION": "/etc/hostname"},
    ],
)
def test_settings_librdkafka_refuses_are_config_errors_not_internal_ones(
    cli: Cli, stack: object, environ: dict[str, str]
) -> None:
    """SASL without credentials; a CA file that is not PEM: exit 2 naming the cause."""
    result = cli.run(
        "topics",
        "list",
        DEVCTL_ENGINE="external",
        REDIS_URL=stack.endpoints.redis_url,  # type: ignore[attr-defined]
        KAFKA_BROKERS=stack.endpoints.kafka_brokers,  # type: ignore[attr-defined]
        **environ,
    )
    assert result.returncode == EXIT_USAGE, result.stdout + result.stderr
    assert "the Kafka client refused its settings" in result.stderr
    assert "internal error" not in result.stderr
