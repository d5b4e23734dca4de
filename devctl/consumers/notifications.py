"""The notifications consumer: connection and chat events become a user's notifications.

What makes a notification (docs/notifications.md has the long form):

- ``connection.requested`` with status ``interested`` -> for the target (``toUserId``);
- ``connection.accepted`` -> for the requester (``fromUserId``);
- ``message.sent`` -> for the recipient, when the recipient is offline (``Presence``);
  one notification per message (no coalescing: each notification is one event, so its
  id, its ``notification.created`` event and the dedupe stay one-to-one).

Legacy records of today's backend (CONNECTION_REQUEST, CONNECTION_REVIEW,
MESSAGE_SENT) arrive as the same typed events (the runtime upcasts them).

For each notification, in this order:

1. ``devconnect.notification.created`` is published and its delivery awaited, with an
   event id derived from the source event's id. Before the store, so it is never lost:
   a crash after it repeats it on redelivery under the same id (readers dedupe by id).
   A publish that fails stalls the consumer (nothing committed, tried again later),
   as the runtime does for its own Kafka failures: a Kafka outage is not a poison event.
2. The notification is stored with the idempotency markers in the runtime's
   transaction (``ctx.tx``): exactly once. Its id is derived from the source event's
   id too, and the store ignores an id it holds already.
3. Once that transaction has committed, it is pushed live to the user's sockets
   (``notification`` event: ``{notification, unread}``), best effort.

Consumer group: ``<kafka.group_id>.notifications`` (``devconnect-group.notifications``
by default). A new group starts at the earliest offsets (``consumer_conf``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis
import redis.client

from devctl.events.envelope import Event, encode_event, event_headers
from devctl.events.handling import HandlerContext, Stall
from devctl.events.registry import REGISTRY
from devctl.state.keys import KeySchema
from devctl.state.notifications import (
    NotificationOps,
    add_to,
    new_notification,
    notification_id,
    ops_from,
)

if TYPE_CHECKING:
    from devctl.clients.endpoints import Endpoints
    from devctl.config.loader import Settings
    from devctl.events.consumer import ConsumerRuntime, Counters
    from devctl.events.producer import DeliveryFuture, EventProducer
    from devctl.realtime.push import Pusher
    from devctl.state.presence import Presence

log = logging.getLogger("devctl.consumers.notifications")

NAME = "notifications"
SOURCE = "/devconnect/consumers/notifications"
CREATED = "devconnect.notification.created"
REQUESTED = "devconnect.connection.requested"
ACCEPTED = "devconnect.connection.accepted"
MESSAGE_SENT = "devconnect.message.sent"
HANDLED_TYPES = (REQUESTED, ACCEPTED, MESSAGE_SENT)
PUSH_EVENT = "notification"
PREVIEW_CHARS = 100  # of a message, in its notification's text
# uuid5(namespace, source event id): the id of the notification.created event it causes.
_EVENT_NAMESPACE = uuid.UUID("0e6f4f0a-7d7b-5a55-8c1f-b3f0e2a9c4d1")


def group_name(settings: Settings) -> str:
    """The consumer group: ``<kafka.group_id>.notifications``."""
    from devctl.consumers import consumer_group

    return consumer_group(settings, NAME)


def created_event_id(source_event_id: str) -> str:
    """The id of the ``notification.created`` event caused by ``source_event_id``."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, source_event_id))


def notification_for(event: Event) -> dict[str, Any] | None:
    """The notification ``event`` calls for (before the presence check), or None.

    Built from the event alone (no lookup), so handling it again builds the same one.
    """
    data = event.data
    created_at = event.time or str(data.get("ts") or "")
    common: dict[str, Any] = {"id": notification_id(event.id), "created_at": created_at}
    if event.type == REQUESTED:
        if data.get("status") != "interested":
            return None
        return new_notification(
            type="connection_request",
            user_id=data["toUserId"],
            from_user_id=data["fromUserId"],
            text="You have a new connection request",
            data={"requestId": data["requestId"]},
            **common,
        )
    if event.type == ACCEPTED:
        return new_notification(
            type="connection_accepted",
            user_id=data["fromUserId"],
            from_user_id=data["toUserId"],
            text="Your connection request was accepted",
            data={"requestId": data["requestId"]},
            **common,
        )
    if event.type == MESSAGE_SENT:
        text = " ".join(str(data["text"]).split())
        if len(text) > PREVIEW_CHARS:
            text = text[: PREVIEW_CHARS - 1] + "…"
        return new_notification(
            type="message",
            user_id=data["toUserId"],
            from_user_id=data["fromUserId"],
            text=f"New message: {text}",
            data={"messageId": data["messageId"]},
            **common,
        )
    return None


def created_data(notification: dict[str, Any]) -> dict[str, Any]:
    """The ``notification.created`` payload of a stored notification."""
    data = notification.get("data") or {}
    ref = data.get("requestId") or data.get("messageId")
    out: dict[str, Any] = {
        "notificationId": notification["id"],
        "userId": notification["userId"],
        "kind": notification["type"],
        "title": notification["text"][:200],
    }
    if notification.get("fromUserId"):
        out["actorId"] = notification["fromUserId"]
    if ref:
        out["refId"] = ref
    return out


class _CommitPipeline(redis.client.Pipeline):
    """A MULTI pipeline that hands queued commands' replies to callbacks once EXEC succeeded.

    How "push after the store" is kept: the runtime executes ``ctx.tx`` after the
    handler returns, so the handler leaves the push as a callback on it. A transaction
    that fails or is discarded (WATCH fired, the handler raised) calls nothing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_reply: list[tuple[int, Callable[[Any], None]]] = []

    def on_reply(self, callback: Callable[[Any], None]) -> None:
        """After a successful execute, call ``callback`` with the last queued command's reply."""
        self._on_reply.append((len(self.command_stack) - 1, callback))

    def reset(self) -> None:  # type: ignore[override]
        super().reset()
        self._on_reply = []

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        pending, self._on_reply = self._on_reply, []
        replies: list[Any] = super().execute(raise_on_error)
        for index, callback in pending:
            try:
                callback(replies[index])
            except Exception:  # after the commit: never undo it by raising
                log.exception("a callback after the notification store failed")
        return replies


class _CommitRedis(redis.Redis):
    """A client whose pipelines are ``_CommitPipeline``s (on another client's pool)."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> _CommitPipeline:
        return _CommitPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class NotificationsConsumer:
    """The consumer runtime with the notification handlers, and what they use.

    ``producer`` and ``pusher`` default to ones of its own (closed by ``close``);
    other keyword arguments go to ``ConsumerRuntime`` (``batch_size=``, librdkafka
    settings, ...).
    """

    def __init__(
        self,
        endpoints: Endpoints,
        settings: Settings,
        *,
        group: str | None = None,
        producer: EventProducer | None = None,
        pusher: Pusher | None = None,
        **runtime_options: Any,
    ):
        from devctl.clients.redis_client import make_redis
        from devctl.events.consumer import ANY_TYPE, ConsumerRuntime
        from devctl.events.producer import EventProducer
        from devctl.realtime.push import Pusher
        from devctl.state.presence import Presence

        self.settings = settings
        self.keys = KeySchema(settings.redis.key_prefix)
        self._own_producer = producer is None
        self.producer = producer or EventProducer(endpoints, settings, source=SOURCE)
        self.pusher = pusher or Pusher(endpoints, settings)
        self.redis = _CommitRedis(connection_pool=make_redis(endpoints, settings).connection_pool)
        self.ops: NotificationOps = ops_from(settings.state, self.keys)
        self.presence: Presence = Presence(
            self.redis, self.keys, instance_ttl=settings.state.presence_instance_ttl
        )
        self.delivery_timeout = settings.events.delivery_timeout_ms / 1000 + 5
        topics = list(dict.fromkeys(REGISTRY[t].topic for t in HANDLED_TYPES))
        self.runtime: ConsumerRuntime = ConsumerRuntime(
            endpoints,
            settings,
            group=group or group_name(settings),
            topics=topics,
            redis_client=self.redis,
            keys=self.keys,
            producer=self.producer,
            **runtime_options,
        )
        # One handler for every type of its topics (not one route per handled type):
        # the runtime then batches a mixed run of events into one unit, one publish
        # wait and one transaction, instead of one per run of a single type (2% of the
        # runtime's no-op rate on DevConnect's mix, docs/benchmarks.md). Types it does
        # not notify about are passed over by ``notification_for``.
        self.runtime.on(ANY_TYPE, self.handle, batch=True)

    def handle(self, events: list[Event], ctx: HandlerContext) -> None:
        """One batch of events (mixed types): publish, store (in ctx.tx), then push."""
        wanted = [(e, n) for e in events if (n := notification_for(e)) is not None]
        wanted = self._drop_online_recipients(wanted)
        if not wanted:
            return  # no tx: the runtime writes the markers itself
        self._publish([n for _, n in wanted], [e.id for e, _ in wanted])
        tx = ctx.tx
        for _, note in wanted:
            add_to(tx, self.ops, note)
            tx.on_reply(self._pusher_for(note))

    def _drop_online_recipients(
        self, wanted: list[tuple[Event, dict[str, Any]]]
    ) -> list[tuple[Event, dict[str, Any]]]:
        recipients = sorted({n["userId"] for _, n in wanted if n["type"] == "message"})
        if not recipients:
            return wanted
        status = self.presence.bulk_status(recipients)  # one round trip
        return [
            (e, n) for e, n in wanted if n["type"] != "message" or not status[n["userId"]].online
        ]

    def _publish(self, notes: list[dict[str, Any]], source_ids: Iterable[str]) -> None:
        futures: list[DeliveryFuture] = []
        for note, source_id in zip(notes, source_ids, strict=True):
            futures.append(self.producer.publish_encoded(created_event(note, source_id)))
        for future in futures:
            try:
                future.result(self.delivery_timeout)
            except Exception as exc:
                raise Stall(f"notification.created not delivered: {exc}", server="kafka") from exc

    def _pusher_for(self, note: dict[str, Any]) -> Callable[[Any], None]:
        def push(unread: Any) -> None:
            if int(unread) < 0:
                return  # the store found this notification there already
            self.pusher.push(
                note["userId"], PUSH_EVENT, {"notification": note, "unread": int(unread)}
            )

        return push

    def run(self, **kwargs: Any) -> Counters:
        """Consume until SIGTERM/SIGINT (or ``runtime.stop()``); the runtime's counters."""
        return self.runtime.run(**kwargs)

    def close(self) -> None:
        if self._own_producer:
            left = self.producer.close(5)
            if left:
                log.error("%d notification events were not confirmed by Kafka", left)
        self.redis.close()


def created_event(note: dict[str, Any], source_event_id: str) -> Any:
    """The encoded ``notification.created`` of ``note``, its id derived from the source's."""
    import json

    encoded = encode_event(CREATED, created_data(note), source=SOURCE)
    event_id = created_event_id(source_event_id)
    envelope = json.loads(encoded.value)
    envelope["id"] = event_id
    value = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
    return encoded._replace(value=value, id=event_id, headers=event_headers(CREATED, event_id))


def main(settings: Settings) -> int | None:
    """``python -m devctl.consumers notifications``: run until SIGTERM/SIGINT."""
    from devctl.engines import select_engine

    endpoints = select_engine(settings).endpoints()
    consumer = NotificationsConsumer(endpoints, settings)
    try:
        counters = consumer.run()
    finally:
        consumer.close()
    log.info("%s: done; %s", NAME, counters.as_dict())
    return 0


__all__ = [
    "HANDLED_TYPES",
    "NotificationsConsumer",
    "created_data",
    "created_event",
    "created_event_id",
    "group_name",
    "main",
    "notification_for",
]
