"""Redis over TLS (rediss://) with a CA, and with client certificates, on a real server.

The embedded valkey-server has no TLS; Debian's redis-server has (`.ci/run` installs
it). The certificates are made by openssl for this module.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devctl.engines.processes import free_port
from devctl.errors import EXIT_NOT_RUNNING
from tests.cli.conftest import Cli
from tests.clients.pki import issue, make_ca

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="Debian's redis-server (with TLS) is not installed"
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA with a server and a client certificate, and an unrelated CA in other/."""
    root = tmp_path_factory.mktemp("redis-tls")
    make_ca(root)
    issue(root, "server")
    issue(root, "client")
    (root / "other").mkdir()
    make_ca(root / "other")
    return root


def _tls_server(pki: Path, *, clients: str) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-cert-file",
            str(pki / "server.pem"),
            "--tls-key-file",
            str(pki / "server.key"),
            "--tls-ca-cert-file",
            str(pki / "ca.pem"),
            "--tls-auth-clients",
            clients,
            "--dir",
            str(pki),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(
                    host="127.0.0.1",
                    port=port,
                    ssl=True,
                    ssl_ca_certs=str(pki / "ca.pem"),
                    ssl_certfile=str(pki / "client.pem"),
                    ssl_keyfile=str(pki / "client.key"),
                    socket_timeout=1,
                ).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def tls_port(pki: Path) -> Iterator[int]:
    yield from _tls_server(pki, clients="no")


@pytest.fixture(scope="module")
def mutual_port(pki: Path) -> Iterator[int]:
    yield from _tls_server(pki, clients="yes")


def _env(stack: object, port: int, **extra: str) -> dict[str, str]:
    return {
        "DEVCTL_ENGINE": "external",
        "REDIS_URL": f"rediss://127.0.0.1:{port}/0",
        "KAFKA_BROKERS": stack.endpoints.kafka_brokers,  # type: ignore[attr-defined]
        "DEVCTL_REDIS_CONNECT_TIMEOUT": "2",
        **extra,
    }


def test_the_redis_domain_and_its_checks_work_over_tls(
    cli: Cli, stack: object, pki: Path, tls_port: int
) -> None:
    env = _env(stack, tls_port, DEVCTL_REDIS_TLS_CA_FILE=str(pki / "ca.pem"))
    up = cli.run("up", "--engine", "external", **env)
    assert up.returncode == 0, up.stderr
    try:
        checks = cli.run("test", "--group", "redis", "--group", "state", timeout=120, **env)
        assert checks.returncode == 0, checks.stdout + checks.stderr
        seeded = cli.run("sessions", "seed", "--users", "3", "--json", **env)
        assert seeded.returncode == 0, seeded.stderr
        plain = redis.Redis(
            host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(pki / "ca.pem")
        )
        assert list(plain.scan_iter(match="devconnect:{u:*}:sessions"))
    finally:
        cli.run("down", **env)


def test_an_untrusted_certificate_fails_clearly_in_time(
    cli: Cli, stack: object, pki: Path, tls_port: int
) -> None:
    started = time.monotonic()
    result = cli.run(
        "status", **_env(stack, tls_port, DEVCTL_REDIS_TLS_CA_FILE=str(pki / "other" / "ca.pem"))
    )
    assert time.monotonic() - started < 10
    assert result.returncode in (EXIT_NOT_RUNNING, 1), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "certificate" in (result.stdout + result.stderr).lower()


def test_mutual_tls_needs_the_client_certificate(
    cli: Cli, stack: object, pki: Path, mutual_port: int
) -> None:
    without = cli.run(
        "sessions", "list", **_env(stack, mutual_port, DEVCTL_REDIS_TLS_CA_FILE=str(pki / "ca.pem"))
    )
    assert without.returncode == EXIT_NOT_RUNNING, without.stdout + without.stderr
    assert "Traceback" not in without.stderr
    with_cert = cli.run(
        "sessions",
        "list",
        **_env(
            stack,
            mutual_port,
            DEVCTL_REDIS_TLS_CA_FILE=str(pki / "ca.pem"),
            DEVCTL_REDIS_TLS_CERT_FILE=str(pki / "client.pem"),
            DEVCTL_REDIS_TLS_KEY_FILE=str(pki / "client.key"),
        ),
    )
    assert with_cert.returncode == 0, with_cert.stdout + with_cert.stderr


def test_a_key_without_its_certificate_and_a_broken_url_are_config_errors(
    cli: Cli, stack: object, pki: Path, tls_port: int
) -> None:
    keyless = cli.run(
        "sessions",
        "list",
        **_env(stack, tls_port, DEVCTL_REDIS_TLS_KEY_FILE=str(pki / "client.key")),
    )
    assert keyless.returncode == 2 and "needs redis.tls_cert_file" in keyless.stderr
    broken = cli.run(
        "sessions", "list", **{**_env(stack, tls_port), "REDIS_URL": "redis://u:hunter2@h:[bad/0"}
    )
    assert broken.returncode == 2 and "internal error" not in broken.stderr
    assert "hunter2" not in broken.stderr
