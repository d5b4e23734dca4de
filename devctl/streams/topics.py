"""Topic administration: list, describe, create, delete, and reconcile with config."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import fetch_metadata, kafka_code, kafka_reason, make_admin
from devctl.config.loader import Settings
from devctl.config.schema import MAX_PARTITIONS, TopicSpec
from devctl.config.topic_configs import topic_config_problem
from devctl.errors import NotFound, OperationFailed, UnsupportedOperation, UsageError
from devctl.streams.offsets import PartitionOffsets, end_offsets_within, offsets_consumer

# Partitions of the small topics `summaries` counts in one pass (one ListOffsets
# request each way, as end_offsets_within sends at most this many at once).
_BATCH_PARTITIONS = 1000
_NO_GROW_MESSAGE = (
    "the broker does not support adding partitions (CreatePartitions); "
    "to change the count, delete the topic and apply again (its events are lost)"
)


class TooManyPartitions(UsageError):
    """More partitions than MAX_PARTITIONS asked for without saying it is meant."""

    def __init__(self, name: str, partitions: int, limit: int = MAX_PARTITIONS):
        super().__init__(
            f"{partitions:,} partitions for '{name}' is over the limit of {limit:,}: "
            "each partition costs the broker files and every listing a lookup"
        )
        self.partitions = partitions
        self.limit = limit


@dataclass(frozen=True)
class TopicSummary:
    name: str
    partitions: int
    messages: int | None  # None: not counted in time (see ``note``), never a guess
    configured: bool
    note: str = ""


@dataclass(frozen=True)
class TopicDescription:
    name: str
    # None when the offsets could not be read in time: the partitions are listed
    # (from metadata) without them.
    partitions: list[PartitionOffsets] | None
    leaders: dict[int, int]
    replicas: dict[int, list[int]]
    configs: dict[str, str]
    note: str = ""


@dataclass
class PlanRow:
    topic: str
    action: str  # create | unchanged | differs | unsupported
    detail: str = ""
    result: str = ""  # filled in by apply: created | updated | failed: ... | skipped
    spec: TopicSpec | None = field(default=None, repr=False)


class TopicAdmin:
    """Topic operations against one cluster; every call has a timeout."""

    def __init__(self, endpoints: Endpoints, settings: Settings, admin: AdminClient | None = None):
        self.endpoints = endpoints
        self.settings = settings
        self.admin = admin or make_admin(endpoints, settings)
        self.timeout = settings.kafka.request_timeout_ms / 1000
        # Time to count one topic's messages (or read its offsets for describe).
        self.count_timeout = self.timeout

    def partition_counts(self) -> dict[str, int]:
        return self._cluster()[0]

    def broker_count(self) -> int:
        return self._cluster()[1]

    def _cluster(self) -> tuple[dict[str, int], int]:
        """Partitions per topic and the number of brokers, from one metadata request."""
        metadata, _ = fetch_metadata(self.admin, self.endpoints, self.timeout)
        counts = {
            name: len(topic.partitions)
            for name, topic in metadata.topics.items()
            if not name.startswith("__")
        }
        return counts, len(metadata.brokers)

    def exists(self, name: str) -> bool:
        return name in self.partition_counts()

    def summaries(self) -> list[TopicSummary]:
        """Every topic with its message count, in bounded time whatever one topic holds.

        The small topics (together at most _BATCH_PARTITIONS partitions) are counted
        first in one go: one ListOffsets request for their low offsets, one for their
        ends, one fetch to confirm the true ends, instead of those round trips per
        topic. Any topic that pass does not count exactly is then counted on its own
        with its own time limit, smallest first, so a topic with huge numbers of
        partitions cannot starve the others (it once made the end of every other
        topic go unconfirmed, and their counts wrong). A topic not counted in time
        shows None and a note, never a partial sum.
        """
        counts = self.partition_counts()
        configured = {spec.name for spec in self.settings.topics}
        per_topic = self.count_timeout
        # The whole listing stops after a few per-topic limits even if every topic is slow.
        overall = time.monotonic() + per_topic * 3
        order = sorted(counts, key=lambda n: (counts[n], n))
        consumer = offsets_consumer(self.endpoints, self.settings)
        totals: dict[str, int | None] = {}
        notes: dict[str, str] = {}
        try:
            totals.update(self._count_together(order, counts, per_topic, consumer))
            for name in order:
                if name in totals:
                    continue
                remaining = min(per_topic, overall - time.monotonic())
                if remaining <= 0:
                    totals[name], notes[name] = None, "not counted: the listing ran out of time"
                    continue
                offsets = end_offsets_within(
                    self.endpoints,
                    self.settings,
                    [(name, p) for p in range(counts[name])],
                    timeout=remaining,
                    consumer=consumer,
                )
                if offsets is None or not all(o.exact for o in offsets.values()):
                    totals[name] = None
                    notes[name] = (
                        f"not counted within {remaining:.1f}s ({counts[name]:,} partitions)"
                    )
                else:
                    totals[name] = sum(o.messages for o in offsets.values())
        finally:
            consumer.close()
        return [
            TopicSummary(name, counts[name], totals[name], name in configured, notes.get(name, ""))
            for name in sorted(counts)
        ]

    def _count_together(
        self, order: list[str], counts: dict[str, int], timeout: float, consumer: Consumer
    ) -> dict[str, int]:
        """Exact message counts of the smallest topics, read in one pass; a topic
        missing from the result was not counted exactly (or not tried)."""
        batch: list[str] = []
        size = 0
        for name in order:
            if size + counts[name] > _BATCH_PARTITIONS:
                break
            batch.append(name)
            size += counts[name]
        if len(batch) < 2:  # nothing to share: the per-topic pass does the same
            return {}
        offsets = end_offsets_within(
            self.endpoints,
            self.settings,
            [(name, p) for name in batch for p in range(counts[name])],
            timeout=timeout,
            consumer=consumer,
        )
        if offsets is None:
            return {}
        totals = {}
        for name in batch:
            mine = [offsets[(name, p)] for p in range(counts[name])]
            if all(o.exact for o in mine):
                totals[name] = sum(o.messages for o in mine)
        return totals

    def describe(self, name: str) -> TopicDescription:
        metadata, _ = fetch_metadata(self.admin, self.endpoints, self.timeout)
        topic = metadata.topics.get(name)
        if topic is None or (topic.error is not None and topic.error.code() != KafkaError.NO_ERROR):
            raise NotFound(f"topic '{name}' does not exist", hint="see `devctl topics list`")
        partitions = sorted(topic.partitions)
        timeout = self.count_timeout * 2
        offsets = end_offsets_within(
            self.endpoints, self.settings, [(name, p) for p in partitions], timeout=timeout
        )
        note = ""
        if offsets is None:
            note = f"offsets not read within {timeout:g}s ({len(partitions):,} partitions)"
        elif not all(o.exact for o in offsets.values()):
            note = "some end offsets not confirmed in time: those rows show the broker's report"
        return TopicDescription(
            name=name,
            partitions=None if offsets is None else [offsets[(name, p)] for p in partitions],
            leaders={p: topic.partitions[p].leader for p in partitions},
            replicas={p: list(topic.partitions[p].replicas) for p in partitions},
            configs=self.configs(name),
            note=note,
        )

    def configs(self, name: str) -> dict[str, str]:
        """The topic's overridden configs (all of them, if the broker does not say which)."""
        resource = ConfigResource("topic", name)
        try:
            future = self.admin.describe_configs([resource], request_timeout=self.timeout)[resource]
            entries = future.result(timeout=self.timeout)
        except KafkaException as exc:
            raise OperationFailed(f"cannot read configs of '{name}': {kafka_reason(exc)}") from exc
        values = {e.name: str(e.value) for e in entries.values() if e.value is not None}
        overrides = {e.name for e in entries.values() if not e.is_default}
        # Tansu marks its topic configs as defaults; it also returns only what was set.
        return {k: v for k, v in values.items() if k in overrides} if overrides else values

    def check_new(self, spec: TopicSpec, *, allow_many_partitions: bool = False) -> None:
        """Refuse what Apache Kafka would refuse, before any broker (Tansu accepts it all).

        Too many partitions (unless allowed), a replication factor above the
        number of brokers, an unknown topic config or a value of the wrong type.
        """
        if spec.partitions > MAX_PARTITIONS and not allow_many_partitions:
            raise TooManyPartitions(spec.name, spec.partitions)
        for key, value in spec.config.items():
            problem = topic_config_problem(key, value)
            if problem:
                raise UsageError(problem)
        brokers = self.broker_count()
        if spec.replication_factor > brokers:
            raise UsageError(_replication_problem(spec, brokers))

    def create(self, spec: TopicSpec, *, allow_many_partitions: bool = False) -> None:
        self.check_new(spec, allow_many_partitions=allow_many_partitions)
        topic = NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=spec.replication_factor,
            config=dict(spec.config),
        )
        future = self.admin.create_topics([topic], request_timeout=self.timeout)[spec.name]
        try:
            future.result(timeout=self.timeout * 2)
        except KafkaException as exc:
            if kafka_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                raise OperationFailed(
                    f"topic '{spec.name}' already exists",
                    hint="`devctl topics describe` shows it; `devctl topics apply` reconciles it",
                ) from exc
            if kafka_code(exc) in (KafkaError.INVALID_CONFIG, KafkaError.INVALID_REQUEST):
                raise UsageError(
                    f"broker refused topic '{spec.name}': {kafka_reason(exc)}"
                ) from exc
            raise OperationFailed(f"cannot create '{spec.name}': {kafka_reason(exc)}") from exc

    def delete(self, name: str) -> None:
        future = self.admin.delete_topics([name], request_timeout=self.timeout)[name]
        try:
            future.result(timeout=self.timeout * 2)
        except KafkaException as exc:
            if kafka_code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise NotFound(f"topic '{name}' does not exist") from exc
            raise OperationFailed(f"cannot delete '{name}': {kafka_reason(exc)}") from exc

    def grow(self, name: str, partitions: int) -> None:
        if not self.endpoints.caps.can_grow_partitions:
            raise UnsupportedOperation(f"cannot grow '{name}': {_NO_GROW_MESSAGE}")
        future = self.admin.create_partitions(
            [NewPartitions(name, partitions)], request_timeout=self.timeout
        )[name]
        try:
            future.result(timeout=self.timeout * 2)
        except KafkaException as exc:
            if kafka_code(exc) == KafkaError._UNSUPPORTED_FEATURE:
                raise UnsupportedOperation(f"cannot grow '{name}': {_NO_GROW_MESSAGE}") from exc
            raise OperationFailed(f"cannot grow '{name}': {kafka_reason(exc)}") from exc

    def alter_configs(self, name: str, config: dict[str, str]) -> None:
        entries = [
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
            for key, value in config.items()
        ]
        resource = ConfigResource("topic", name, incremental_configs=entries)
        future = self.admin.incremental_alter_configs([resource], request_timeout=self.timeout)[
            resource
        ]
        try:
            future.result(timeout=self.timeout * 2)
        except KafkaException as exc:
            raise OperationFailed(
                f"cannot change configs of '{name}': {kafka_reason(exc)}"
            ) from exc

    # --- reconcile -----------------------------------------------------------

    def plan(self, specs: Iterable[TopicSpec]) -> list[PlanRow]:
        counts, brokers = self._cluster()
        rows = []
        for spec in specs:
            if spec.name not in counts:
                if spec.replication_factor > brokers:
                    rows.append(
                        PlanRow(
                            spec.name, "unsupported", _replication_problem(spec, brokers), spec=spec
                        )
                    )
                    continue
                rows.append(
                    PlanRow(spec.name, "create", f"{spec.partitions} partitions", spec=spec)
                )
                continue
            have = counts[spec.name]
            differences = []
            if spec.config:
                current = self.configs(spec.name)
                changed = {k: v for k, v in spec.config.items() if current.get(k) != v}
                differences += [
                    f"{k}: {current.get(k, 'default')} -> {v}" for k, v in changed.items()
                ]
            if have > spec.partitions:
                rows.append(
                    PlanRow(
                        spec.name,
                        "unsupported",
                        f"has {have} partitions, config wants {spec.partitions}: "
                        "Kafka cannot remove partitions",
                        spec=spec,
                    )
                )
            elif have < spec.partitions and not self.endpoints.caps.can_grow_partitions:
                rows.append(
                    PlanRow(
                        spec.name,
                        "unsupported",
                        f"partitions {have} -> {spec.partitions}: {_NO_GROW_MESSAGE}",
                        spec=spec,
                    )
                )
            elif have < spec.partitions or differences:
                detail = (
                    [f"partitions {have} -> {spec.partitions}"] if have < spec.partitions else []
                )
                rows.append(
                    PlanRow(spec.name, "differs", "; ".join(detail + differences), spec=spec)
                )
            else:
                rows.append(PlanRow(spec.name, "unchanged", f"{have} partitions", spec=spec))
        return rows

    def apply(self, rows: list[PlanRow]) -> list[PlanRow]:
        """Carry out a plan; creations are sent in one request."""
        to_create = [row for row in rows if row.action == "create" and row.spec is not None]
        if to_create:
            futures = self.admin.create_topics(
                [
                    NewTopic(
                        r.spec.name,
                        num_partitions=r.spec.partitions,
                        replication_factor=r.spec.replication_factor,
                        config=dict(r.spec.config),
                    )
                    for r in to_create
                    if r.spec is not None
                ],
                request_timeout=self.timeout,
            )
            for row in to_create:
                try:
                    futures[row.topic].result(timeout=self.timeout * 2)
                    row.result = "created"
                except KafkaException as exc:
                    if kafka_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                        row.result = "created (by someone else meanwhile)"
                    else:
                        row.result = f"failed: {kafka_reason(exc)}"
        for row in rows:
            if row.action == "unchanged":
                row.result = "ok"
            elif row.action == "unsupported":
                row.result = "skipped"
            elif row.action == "differs" and row.spec is not None:
                try:
                    have = self.partition_counts().get(row.topic, 0)
                    if have < row.spec.partitions:
                        self.grow(row.topic, row.spec.partitions)
                    if row.spec.config:
                        self.alter_configs(row.topic, dict(row.spec.config))
                    row.result = "updated"
                except (OperationFailed, UnsupportedOperation) as exc:
                    row.result = f"failed: {exc.message}"
        return rows


def _replication_problem(spec: TopicSpec, brokers: int) -> str:
    return (
        f"replication factor {spec.replication_factor} for '{spec.name}' needs at least "
        f"{spec.replication_factor} brokers; the cluster has {brokers}"
    )
