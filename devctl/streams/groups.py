"""Consumer groups: list, describe (members, committed offsets, lag), lag totals, offset reset.

Lag is the true end offset (from ``end_offsets``: the embedded broker under-reports
its high watermark after multi-record batches) minus the committed offset. A
partition the group never committed counts everything retained as lag; a
caught-up partition shows 0.

Tansu 0.6 reports an active group's state but no member details; a group in an
active state with no members listed is shown as such (``members_reported``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import AdminClient

from devctl.clients.endpoints import Endpoints
from devctl.clients.kafka_client import fetch_metadata, kafka_reason, make_admin
from devctl.config.loader import Settings
from devctl.errors import DevctlError, KafkaUnavailable, NotFound, OperationFailed, UsageError
from devctl.streams.offsets import Partition, PartitionOffsets, end_offsets

# Error codes meaning "the broker did not answer" (exit 3, not an operation failure).
_NO_ANSWER = {
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}

# States in which a group has (or is getting) members: offsets must not be reset then.
ACTIVE_STATES = {"STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE"}


def _state_name(state: object) -> str:
    if isinstance(state, ConsumerGroupState):
        return str(state.name)
    return str(state or "UNKNOWN").upper()


@dataclass(frozen=True)
class GroupSummary:
    group: str
    state: str
    members: int | None  # None: the broker did not report members


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    partitions: list[Partition]


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    low: int
    end: int
    member: str | None = None

    @property
    def lag(self) -> int:
        start = self.low if self.committed is None else self.committed
        return max(self.end - start, 0)


@dataclass(frozen=True)
class GroupDescription:
    group: str
    state: str
    members: list[Member]
    members_reported: bool
    coordinator: str
    partitions: list[PartitionLag]

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES or bool(self.members)

    @property
    def lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass(frozen=True)
class TopicLag:
    group: str
    topic: str
    partitions: int
    lag: int
    uncommitted: int  # partitions without a committed offset


@dataclass
class ResetRow:
    topic: str
    partition: int
    current: int | None
    target: int
    low: int
    end: int
    note: str = ""
    error: str | None = field(default=None)


class GroupAdmin:
    """Consumer-group operations against one cluster; every call has a timeout."""

    def __init__(self, endpoints: Endpoints, settings: Settings, admin: AdminClient | None = None):
        self.endpoints = endpoints
        self.settings = settings
        self.admin = admin or make_admin(endpoints, settings)
        self.timeout = settings.kafka.request_timeout_ms / 1000

    # --- reading ------------------------------------------------------------

    def summaries(self) -> list[GroupSummary]:
        try:
            listing = self.admin.list_consumer_groups(request_timeout=self.timeout).result(
                timeout=self.timeout * 2
            )
        except KafkaException as exc:
            raise self._unavailable("list consumer groups", exc) from exc
        if listing.errors:
            # An empty list with errors is no answer, not "no groups".
            error = listing.errors[0]
            raise self._unavailable(
                "list consumer groups",
                error if isinstance(error, KafkaException) else KafkaException(error),
            )
        names = sorted({g.group_id for g in listing.valid})
        if not names:
            return []
        described = self._describe_raw(names)
        out = []
        for name in names:
            info = described.get(name)
            if info is None:
                out.append(GroupSummary(name, "UNKNOWN", None))
                continue
            state = _state_name(info.state)
            members = list(info.members or [])
            reported = bool(members) or state not in ACTIVE_STATES
            out.append(GroupSummary(name, state, len(members) if reported else None))
        return out

    def _describe_raw(self, groups: list[str]) -> dict[str, Any]:
        futures = self.admin.describe_consumer_groups(groups, request_timeout=self.timeout)
        out: dict[str, Any] = {}
        for name, future in futures.items():
            try:
                out[name] = future.result(timeout=self.timeout * 2)
            except KafkaException:
                continue
        return out

    def committed(self, group: str) -> dict[Partition, int]:
        request = [ConsumerGroupTopicPartitions(group)]
        try:
            future = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout)
            result = future[group].result(timeout=self.timeout * 2)
        except KafkaException as exc:
            raise self._unavailable(f"read the committed offsets of '{group}'", exc) from exc
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions or []
            if tp.offset is not None and tp.offset >= 0 and tp.error is None
        }

    def describe(self, group: str) -> GroupDescription:
        return self.describe_many([group])[0]

    def describe_many(
        self, groups: Iterable[str], skipped: list[str] | None = None
    ) -> list[GroupDescription]:
        """Describe ``groups``; NotFound for one that is not there, unless ``skipped`` is
        given: then such groups are left out and named in it (a listing must not fail
        for every group because of one, e.g. a name the broker lists but cannot find)."""
        names = list(groups)
        raw = self._describe_raw(names)
        counts = self._partition_counts()
        per_group: dict[str, tuple[str, list[Member], bool, str, dict[Partition, int]]] = {}
        wanted: set[Partition] = set()
        for name in names:
            info = raw.get(name)
            state = _state_name(getattr(info, "state", None))
            members = [
                Member(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    host=m.host,
                    partitions=sorted(
                        (tp.topic, tp.partition)
                        for tp in (m.assignment.topic_partitions if m.assignment else [])
                    ),
                )
                for m in (getattr(info, "members", None) or [])
            ]
            committed = self.committed(name)
            # Tansu answers EMPTY for a group it never heard of: no members and no
            # committed offsets means there is nothing to describe either way.
            if state in ("DEAD", "UNKNOWN", "EMPTY") and not committed and not members:
                if skipped is not None:
                    skipped.append(name)
                    continue
                raise NotFound(
                    f"consumer group '{name}' does not exist (no members, no committed offsets)",
                    hint="see `devctl groups list`",
                )
            topics = {t for t, _ in committed} | {t for m in members for t, _ in m.partitions}
            # Offsets committed on a topic deleted since are left out: it has no end offset.
            for topic in topics:
                wanted.update((topic, p) for p in range(counts.get(topic, 0)))
            coordinator = getattr(info, "coordinator", None)
            where = f"{coordinator.host}:{coordinator.port}" if coordinator is not None else "-"
            reported = bool(members) or state not in ACTIVE_STATES
            per_group[name] = (state, members, reported, where, committed)
        ends = self._ends(wanted)
        out = []
        for name in names:
            if name not in per_group:
                continue
            state, members, reported, where, committed = per_group[name]
            owner = {p: m.member_id for m in members for p in m.partitions}
            topics = {t for t, _ in committed} | {t for t, _ in owner}
            rows = [
                PartitionLag(
                    topic=key[0],
                    partition=key[1],
                    committed=committed.get(key),
                    low=ends[key].low,
                    end=ends[key].high,
                    member=owner.get(key),
                )
                for key in sorted(ends)
                if key[0] in topics
            ]
            out.append(GroupDescription(name, state, members, reported, where, rows))
        return out

    def lag(self, group: str | None = None, skipped: list[str] | None = None) -> list[TopicLag]:
        """Lag totals per group and topic (every group when ``group`` is None; groups the
        broker lists but cannot describe are then named in ``skipped``, if given)."""
        names = [group] if group is not None else [g.group for g in self.summaries()]
        if not names:
            return []
        out = []
        for description in self.describe_many(names, skipped if group is None else None):
            per_topic: dict[str, list[PartitionLag]] = {}
            for row in description.partitions:
                per_topic.setdefault(row.topic, []).append(row)
            for topic, rows in sorted(per_topic.items()):
                out.append(
                    TopicLag(
                        group=description.group,
                        topic=topic,
                        partitions=len(rows),
                        lag=sum(r.lag for r in rows),
                        uncommitted=sum(r.committed is None for r in rows),
                    )
                )
        return out

    # --- reset --------------------------------------------------------------

    def plan_reset(self, group: str, topic: str, to: str) -> list[ResetRow]:
        """Target offsets for every partition of ``topic``: earliest, latest, TIME or OFFSET."""
        counts = self._partition_counts()
        if topic not in counts:
            raise NotFound(f"topic '{topic}' does not exist", hint="see `devctl topics list`")
        partitions = [(topic, p) for p in range(counts[topic])]
        ends = self._ends(set(partitions))
        committed = self.committed(group)
        choice = to.strip().lower()
        targets: dict[Partition, int]
        notes: dict[Partition, str] = {}
        if choice == "earliest":
            targets = {key: ends[key].low for key in partitions}
        elif choice == "latest":
            targets = {key: ends[key].high for key in partitions}
        elif choice.lstrip("-").isdigit():
            wanted = int(choice)
            if wanted < 0:
                raise UsageError(
                    f"the offset to reset to must be 0 or more, got {wanted}",
                    field="reset_to",
                    data={"value": to},
                )
            targets = {}
            for key in partitions:
                bounds = ends[key]
                targets[key] = min(max(wanted, bounds.low), bounds.high)
                if targets[key] != wanted:
                    notes[key] = f"{wanted} is outside {bounds.low}..{bounds.high}: clamped"
        else:
            from devctl.streams.positions import offsets_for_time, parse_time

            try:
                when = parse_time(to)
            except UsageError:
                examples = ("earliest", "42", "2h", "2026-11-25T18:00:00Z")
                raise UsageError(
                    f"the reset target is earliest, latest, an offset or a time, got '{to}'",
                    hint=f"e.g. {', '.join(examples)}",
                    field="reset_to",
                    data={"value": to, "examples": examples},
                ) from None
            targets = offsets_for_time(
                self.endpoints, self.settings, partitions, when, timeout=self.timeout * 2, ends=ends
            )
        return [
            ResetRow(
                topic=t,
                partition=p,
                current=committed.get((t, p)),
                target=targets[(t, p)],
                low=ends[(t, p)].low,
                end=ends[(t, p)].high,
                note=notes.get((t, p), ""),
            )
            for t, p in partitions
        ]

    def ensure_inactive(self, group: str) -> None:
        info = self._describe_raw([group]).get(group)
        state = _state_name(getattr(info, "state", None))
        members = list(getattr(info, "members", None) or [])
        if members or state in ACTIVE_STATES:
            count = f"{len(members)} members" if members else "members"
            raise OperationFailed(
                f"consumer group '{group}' has {count} (state {state}); "
                "offsets can only be reset while it is empty",
                hint="stop the group's consumers first, then run the reset again",
            )

    def ensure_exists(self, group: str) -> None:
        """NotFound for a group with no members and no committed offsets (a typo, most likely).

        Committing offsets for an unknown id would silently create that group.
        """
        info = self._describe_raw([group]).get(group)
        state = _state_name(getattr(info, "state", None))
        members = list(getattr(info, "members", None) or [])
        if members or state in ACTIVE_STATES or self.committed(group):
            return
        raise NotFound(
            f"consumer group '{group}' does not exist (no members, no committed offsets); "
            "resetting it would create it",
            hint="check the name with `devctl groups list`",
        )

    def reset(self, group: str, rows: list[ResetRow]) -> list[ResetRow]:
        """Commit the planned offsets; refuses unknown groups and groups with members."""
        self.ensure_exists(group)
        self.ensure_inactive(group)
        request = ConsumerGroupTopicPartitions(
            group, [KafkaTopicPartition(r.topic, r.partition, r.target) for r in rows]
        )
        try:
            future = self.admin.alter_consumer_group_offsets(
                [request], request_timeout=self.timeout
            )[group]
            result = future.result(timeout=self.timeout * 2)
        except KafkaException as exc:
            raise OperationFailed(
                f"cannot reset the offsets of '{group}': {kafka_reason(exc)}"
            ) from exc
        errors = {
            (tp.topic, tp.partition): tp.error.str()
            for tp in result.topic_partitions or []
            if tp.error is not None
        }
        for row in rows:
            row.error = errors.get((row.topic, row.partition))
        return rows

    def delete(self, group: str) -> None:
        try:
            self.admin.delete_consumer_groups([group], request_timeout=self.timeout)[group].result(
                timeout=self.timeout * 2
            )
        except KafkaException as exc:
            raise OperationFailed(f"cannot delete group '{group}': {kafka_reason(exc)}") from exc

    # --- helpers ------------------------------------------------------------

    def _partition_counts(self) -> dict[str, int]:
        metadata, _ = fetch_metadata(self.admin, self.endpoints, self.timeout)
        return {name: len(t.partitions) for name, t in metadata.topics.items()}

    def _ends(self, partitions: set[Partition]) -> dict[Partition, PartitionOffsets]:
        if not partitions:
            return {}
        return end_offsets(
            self.endpoints, self.settings, sorted(partitions), timeout=self.timeout * 2
        )

    def _unavailable(self, what: str, exc: KafkaException) -> DevctlError:
        """KafkaUnavailable (exit 3) when the broker did not answer, else OperationFailed."""
        error = exc.args[0] if exc.args else None
        code = error.code() if isinstance(error, KafkaError) else None
        if code in _NO_ANSWER:
            return KafkaUnavailable(
                f"Kafka at {self.endpoints.kafka_brokers} did not answer (cannot {what}): "
                f"{kafka_reason(exc)}",
                hint=self.endpoints.unreachable_hint,
            )
        return OperationFailed(f"cannot {what}: {kafka_reason(exc)}")
