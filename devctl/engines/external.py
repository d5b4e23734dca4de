"""The external engine: servers devctl does not manage (Redis Cluster, Kafka clusters).

``up`` verifies the configured endpoints and records them; ``down`` stops nothing.
"""

from __future__ import annotations

from typing import Any

from devctl.clients.endpoints import Endpoints
from devctl.engines import probe
from devctl.engines.base import SERVICES, DoctorCheck, Engine, Progress, UpResult
from devctl.errors import ConfigError, DevctlError


class ExternalEngine(Engine):
    name = "external"

    def endpoints(self) -> Endpoints:
        redis_url = self.settings.redis.url
        brokers = self.settings.kafka.brokers
        missing = [
            name
            for name, value in (("REDIS_URL", redis_url), ("KAFKA_BROKERS", brokers))
            if not value
        ]
        if missing:
            raise ConfigError(
                f"the external engine needs {' and '.join(missing)}",
                hint="set them in the environment, .env, or redis.url / kafka.brokers in devctl.yaml",
            )
        assert redis_url is not None and brokers is not None
        return Endpoints(self.name, redis_url, brokers)

    def up(self, *, keep: bool = False, progress: Progress | None = None) -> UpResult:
        say = progress or (lambda _msg: None)
        endpoints = self.endpoints()
        for service in SERVICES:
            say(f"checking {service}")
            probe.probe(service, self._address(endpoints, service), self.settings)
        self.write_stack_file(endpoints)
        return UpResult(endpoints=endpoints, already_running=list(SERVICES))

    def down(self, *, purge: bool = False) -> list[str]:
        self.stack_file.unlink(missing_ok=True)
        return [
            "external engine: devctl did not start these servers and leaves them running; "
            "it only forgot the recorded endpoints (the next `devctl up` uses the configured engine)"
        ]

    @staticmethod
    def _address(endpoints: Endpoints, service: str) -> str:
        return endpoints.redis_url if service == "redis" else endpoints.kafka_brokers

    def service_info(self, service: str) -> dict[str, Any]:
        try:
            endpoints = self.endpoints()
        except DevctlError:
            return {"running": False, "address": "-"}
        # Nothing to ask a process for: running means "configured"; status probes health.
        return {"running": True, "address": self._address(endpoints, service)}

    def doctor(self) -> list[DoctorCheck]:
        try:
            self.endpoints()
            return [DoctorCheck("external endpoints", True, "REDIS_URL and KAFKA_BROKERS are set")]
        except ConfigError as exc:
            return [DoctorCheck("external endpoints", False, exc.message, exc.hint)]
