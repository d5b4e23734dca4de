"""The external engine: servers devctl does not manage (Redis Cluster, Kafka clusters).

``up`` verifies the configured endpoints and records them in the data dir, so
later commands find them without the variables; ``down`` stops nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from devctl.clients.endpoints import Endpoints
from devctl.engines import probe
from devctl.engines.base import SERVICES, DoctorCheck, DownResult, Engine, Progress, UpResult
from devctl.errors import ConfigError, DevctlError


class ExternalEngine(Engine):
    name = "external"

    def endpoints(self, services: Collection[str] = SERVICES) -> Endpoints:
        """Configured endpoints first (flags, env, .env, config); else those `up` recorded."""
        redis_url = self.settings.redis.url
        brokers = self.settings.kafka.brokers
        recorded = self.read_stack_file() or {}
        if recorded.get("engine") == self.name:
            redis_url = redis_url or recorded.get("redis_url")
            brokers = brokers or recorded.get("kafka_brokers")
        given = {"redis": redis_url, "kafka": brokers}
        names = {"redis": "REDIS_URL", "kafka": "KAFKA_BROKERS"}
        # A command that needs one service works with only that one configured.
        missing = [names[s] for s in SERVICES if s in services and not given[s]]
        if missing:
            raise ConfigError(
                f"the external engine needs {' and '.join(missing)}",
                hint="set them in the environment, .env, or redis.url / kafka.brokers in devctl.yaml",
            )
        unknown = tuple(s for s in SERVICES if not given[s])
        return Endpoints(self.name, str(redis_url or ""), str(brokers or ""), unknown, self.caps)

    def up(self, *, keep: bool = False, progress: Progress | None = None) -> UpResult:
        say = progress or (lambda _msg: None)
        endpoints = self.endpoints()
        for service in SERVICES:
            say(f"checking {service}")
            probe.probe(service, self._address(endpoints, service), self.settings, caps=self.caps)
        self.write_stack_file(endpoints)
        return UpResult(endpoints=endpoints, already_running=list(SERVICES))

    def down(self, *, purge: bool = False) -> DownResult:
        self.stack_file.unlink(missing_ok=True)
        return DownResult(
            [
                "external engine: devctl did not start these servers and leaves them running; "
                "it only forgot the recorded endpoints (the next `devctl up` uses the configured "
                "engine)"
            ]
        )

    @staticmethod
    def _address(endpoints: Endpoints, service: str) -> str:
        return endpoints.redis_url if service == "redis" else endpoints.kafka_brokers

    def service_info(self, service: str) -> dict[str, Any]:
        try:
            endpoints = self.endpoints((service,))  # the other one may be unconfigured
        except DevctlError as exc:
            return {"running": False, "address": "-", "detail": exc.message}
        # Nothing to ask a process for: "running" means configured; status probes health.
        return {"running": True, "address": self._address(endpoints, service)}

    def doctor(self) -> list[DoctorCheck]:
        try:
            endpoints = self.endpoints()
        except ConfigError as exc:
            return [DoctorCheck("external endpoints", False, exc.message, exc.hint)]
        checks = [DoctorCheck("external endpoints", True, "REDIS_URL and KAFKA_BROKERS are known")]
        for service in SERVICES:
            address = self._address(endpoints, service)
            try:
                result = probe.probe(service, address, self.settings, caps=self.caps)
                checks.append(
                    DoctorCheck(f"{service} reachable", True, f"{result.latency_ms:.1f} ms")
                )
            except DevctlError as exc:
                checks.append(DoctorCheck(f"{service} reachable", False, exc.message, exc.hint))
        return checks
