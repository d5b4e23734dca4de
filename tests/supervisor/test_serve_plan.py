"""The plan of `devctl serve` from the settings: children, ports, environment, choices."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devctl.config.loader import Settings, load_settings
from devctl.errors import PortInUse, UsageError
from devctl.processes import free_port
from devctl.processes.ports import cannot_listen_reason
from devctl.supervisor.plan import check_ports
from devctl.supervisor.serve import build_plan, serve_options, source_root
from devctl.supervisor.spec import ChildSpec

REGISTRY = {"notifications": "x:run", "analytics": "y:run"}


def _settings(tmp_path: Path, **flags: Any) -> Settings:
    given = {"data_dir": (str(tmp_path / "data"), "--data-dir")}
    given.update({key: (value, key) for key, value in flags.items()})
    return load_settings(flags=given, cwd=tmp_path, environ={})


def test_instances_take_consecutive_ports_and_stop_before_the_consumers(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **{"api.port": 4100, "api.instances": 2})
    options = serve_options(settings, registry=REGISTRY)
    assert options.consumers == ("notifications", "analytics")
    plan = build_plan(settings, options)
    api1, api2, notifications, analytics = plan.children
    assert api1.argv == (
        sys.executable,
        "-m",
        "devctl.api",
        "--host",
        "127.0.0.1",
        "--port",
        "4100",
        "--name",
        "api-1",
    )
    assert (api2.name, api2.port, api2.health_url, api2.ready_url) == (
        "api-2",
        4101,
        "http://127.0.0.1:4101/healthz",
        "http://127.0.0.1:4101/readyz",
    )
    assert api1.stop_timeout == settings.config.api.drain_timeout + 5
    assert api1.essential and api1.stop_phase < notifications.stop_phase
    assert notifications.argv == (sys.executable, "-m", "devctl.consumers", "notifications")
    assert not notifications.essential and notifications.port is None
    assert analytics.role == "consumer" and api1.role == "api"
    assert plan.watch == () and plan.data_dir == tmp_path / "data"
    # Each phase waits for its slowest child, plus a margin.
    assert plan.shutdown_timeout == 2 * (settings.config.api.drain_timeout + 5) + 5


def test_children_see_the_same_settings_and_stack(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.yaml").write_text("api:\n  drain_timeout: 3\n")
    settings = load_settings(
        config_path="elsewhere.yaml",
        flags={"data_dir": ("rel/data", "--data-dir")},
        cwd=tmp_path,
        environ={},
    )
    (api,) = build_plan(settings, serve_options(settings, registry={})).children
    assert api.cwd == tmp_path
    assert api.env["DEVCTL_DATA_DIR"] == str(tmp_path / "rel" / "data")
    assert api.env["DEVCTL_CONFIG"] == str(tmp_path / "elsewhere.yaml")
    assert api.env["DEVCTL_API_PORT"] == "3000" and api.env["PYTHONUNBUFFERED"] == "1"
    assert api.stop_timeout == 3 + 5
    assert not any("SECRET" in name or "PASSWORD" in name for name in api.env)


def test_a_wildcard_host_is_probed_on_loopback(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **{"api.host": "0.0.0.0"})
    (api,) = build_plan(settings, serve_options(settings, registry={})).children
    assert api.argv[api.argv.index("--host") + 1] == "0.0.0.0"
    assert api.health_url == "http://127.0.0.1:3000/healthz"


def test_consumer_choices(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    chosen = serve_options(settings, consumers=["analytics"], registry=REGISTRY)
    assert chosen.consumers == ("analytics",)
    assert serve_options(settings, no_consumers=True, registry=REGISTRY).consumers == ()
    with pytest.raises(UsageError) as unknown:
        serve_options(settings, consumers=["analytics", "nope"], registry=REGISTRY)
    assert unknown.value.message == "unknown consumer 'nope'"
    assert unknown.value.hint == "registered consumers: notifications, analytics"
    assert unknown.value.field == "consumers"
    with pytest.raises(UsageError) as both:
        serve_options(settings, consumers=["analytics"], no_consumers=True, registry=REGISTRY)
    assert both.value.data["conflicts"] == ["no_consumers"]


def test_reload_runs_one_instance_and_watches_the_sources(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        serve_options(_settings(tmp_path, **{"api.instances": 3}), reload=True, registry={})
    assert refused.value.field == "reload"
    settings = _settings(tmp_path)
    plan = build_plan(settings, serve_options(settings, reload=True, registry={}))
    assert plan.watch == (source_root(),) and all(c.reload for c in plan.children)
    assert (source_root() / "supervisor" / "serve.py").is_file()


def test_instances_must_fit_below_the_last_port(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        serve_options(_settings(tmp_path, **{"api.port": 65535, "api.instances": 2}), registry={})
    assert "would need port 65536" in refused.value.message
    assert refused.value.field == "api.port"


def _ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def _api(host: str, port: int) -> ChildSpec:
    return ChildSpec("api-1", ("true",), role="api", host=host, port=port)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("bogus.invalid", None),  # the resolver's words: "name or service not known" on glibc
        ("192.0.2.1", "not an address of this machine"),
        ("2001:db8::1", "not an address of this machine"),
    ],
)
def test_a_host_nothing_can_listen_on_names_the_host(host: str, reason: str | None) -> None:
    with pytest.raises(UsageError) as refused:
        check_ports([_api(host, free_port())])
    error = refused.value
    assert error.field == "api.host" and error.data["value"] == host
    assert error.message.startswith(f"cannot listen on {host}: ")
    if reason is not None:
        assert error.message == f"cannot listen on {host}: {reason}"
    assert isinstance(error.__cause__, OSError)


def test_a_missing_address_family_is_said_in_words() -> None:
    lacking = OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    assert cannot_listen_reason(lacking).startswith("this machine does not support its address")
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert cannot_listen_reason(unknown) == "name or service not known"


@pytest.mark.skipif(not _ipv6(), reason="no IPv6 on this machine")
def test_an_ipv6_host_is_checked_on_ipv6() -> None:
    port = free_port()
    check_ports([_api("::1", port)])  # free: no error (it used to be a gaierror)
    with socket.socket(socket.AF_INET6) as holder:
        holder.bind(("::1", port))
        holder.listen()
        with pytest.raises(PortInUse):
            check_ports([_api("::1", port)])
        # Another family's port of the same number is another port.
        check_ports([_api("127.0.0.1", port)])


def test_a_plan_survives_its_json(tmp_path: Path) -> None:
    from devctl.supervisor.plan import ServePlan

    settings = _settings(tmp_path)
    plan = build_plan(settings, serve_options(settings, reload=True, registry=REGISTRY))
    assert ServePlan.read(plan.write()) == plan


def test_an_unknown_consumer_process_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devctl.consumers", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "error: unknown consumer 'nope'" in result.stderr
