"""The DevConnect tables as SQLAlchemy 2 declarative models, portable to SQLite and PostgreSQL.

The database enforces the rules of the data that must hold whatever the API does:
one connection request per pair of users in either direction (``user_low`` /
``user_high`` are the pair sorted, unique together, and CHECKed against the two
user ids), no request to oneself, one account per email. Constraint names are
fixed here (and in the migrations) so that the API can tell which rule a write
broke (``devctl.db.integrity.violated_constraint``).

Times are timezone-aware UTC ``datetime`` on both backends (``UTCDateTime``).
Schema changes go through a new migration in ``devctl/db/migrations/versions``;
these models are what the code reads, the migrations what the database holds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
    false,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates
from sqlalchemy.types import TypeDecorator

from devctl.db.ids import new_id

# Names of the constraints the API maps to its errors (Conflict, InvalidInput).
EMAIL_UNIQUE = "uq_users_email"
TIER_CHECK = "ck_users_membership_tier"
PAIR_UNIQUE = "uq_connection_requests_pair"
PAIR_ORDERED = "ck_connection_requests_pair_ordered"
PAIR_MATCHES = "ck_connection_requests_pair_matches"
STATUS_CHECK = "ck_connection_requests_status"
EVENT_ID_UNIQUE = "uq_outbox_event_id"

MEMBERSHIP_TIERS = ("free", "silver", "gold")
REQUEST_STATUSES = ("interested", "ignored", "accepted", "rejected")
RELAY_LEASE_NAME = "outbox"

# Names of the constraints and indexes not named by hand; explicit names win.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite has no time zones, so values are
    stored as naive UTC text (which also sorts and compares correctly as text)
    and read back with UTC attached. A naive datetime is refused rather than
    guessed: it would be local time on one machine and UTC on another.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def normalize_email(email: str) -> str:
    """The stored form of an email: trimmed and lowercased (the unique constraint is on it)."""
    return email.strip().lower()


def ordered_pair(a: str, b: str) -> tuple[str, str]:
    """Two user ids, smaller first: ``(user_low, user_high)`` of a request between them."""
    return (a, b) if a <= b else (b, a)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("email", name=EMAIL_UNIQUE),
        CheckConstraint(_in("membership_tier", MEMBERSHIP_TIERS), name=TIER_CHECK),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    first_name: Mapped[str] = mapped_column(String(50))
    last_name: Mapped[str | None] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    age: Mapped[int | None] = mapped_column(Integer)
    gender: Mapped[str | None] = mapped_column(String(10))
    photo_url: Mapped[str | None] = mapped_column(String(2048))
    about: Mapped[str | None] = mapped_column(String(1000))
    skills: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    is_premium: Mapped[bool] = mapped_column(default=False, server_default=false())
    membership_tier: Mapped[str] = mapped_column(
        String(10), default="free", server_default=text("'free'")
    )
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.current_timestamp()
    )
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.current_timestamp()
    )

    @validates("email")
    def _normalize_email(self, _key: str, value: str) -> str:
        # Uniqueness is only meaningful on one spelling of each address.
        return normalize_email(value)


class ConnectionRequest(Base):
    __tablename__ = "connection_requests"
    __table_args__ = (
        UniqueConstraint("user_low", "user_high", name=PAIR_UNIQUE),
        # Also forbids a request to oneself (low == high).
        CheckConstraint("user_low < user_high", name=PAIR_ORDERED),
        CheckConstraint(
            "(user_low = from_user_id AND user_high = to_user_id)"
            " OR (user_low = to_user_id AND user_high = from_user_id)",
            name=PAIR_MATCHES,
        ),
        CheckConstraint(_in("status", REQUEST_STATUSES), name=STATUS_CHECK),
        # "Requests to me with status" and, with the next, "my accepted connections".
        Index("ix_connection_requests_to_status", "to_user_id", "status"),
        Index("ix_connection_requests_from_status", "from_user_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    from_user_id: Mapped[str] = mapped_column(
        String(24), ForeignKey("users.id", ondelete="CASCADE")
    )
    to_user_id: Mapped[str] = mapped_column(String(24), ForeignKey("users.id", ondelete="CASCADE"))
    user_low: Mapped[str] = mapped_column(String(24))
    user_high: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.current_timestamp()
    )
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=func.current_timestamp()
    )

    @classmethod
    def between(
        cls, from_user_id: str, to_user_id: str, status: str, **fields: Any
    ) -> ConnectionRequest:
        """A new request from one user to another, with its sorted pair filled in."""
        low, high = ordered_pair(from_user_id, to_user_id)
        return cls(
            from_user_id=from_user_id,
            to_user_id=to_user_id,
            user_low=low,
            user_high=high,
            status=status,
            **fields,
        )


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # A conversation's history, in order, paged by (ts, id).
        Index("ix_messages_conversation_ts_id", "conversation_id", "ts", "id"),
    )

    id: Mapped[str] = mapped_column(String(24), primary_key=True, default=new_id)
    from_user_id: Mapped[str] = mapped_column(
        String(24), ForeignKey("users.id", ondelete="CASCADE")
    )
    to_user_id: Mapped[str] = mapped_column(String(24), ForeignKey("users.id", ondelete="CASCADE"))
    # devctl.events.schemas.conversation_id: the two user ids sorted, joined by ':'.
    conversation_id: Mapped[str] = mapped_column(String(130))
    text: Mapped[str] = mapped_column(String(5000))
    ts: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]


class OutboxRow(Base):
    """An event written in the transaction of the change it reports; the relay publishes it.

    ``id`` is the publishing order. On SQLite it is an INTEGER PRIMARY KEY, an alias
    of the rowid, so it is assigned under the write lock and commit order is id
    order; on PostgreSQL it is a sequence, and ``outbox.append`` serializes the
    writers of one key so that their ids follow their commits.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("event_id", name=EVENT_ID_UNIQUE),
        # The relay's "oldest unsent" (sent_at IS NULL ORDER BY id) and the pruning.
        Index("ix_outbox_sent_at_id", "sent_at", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(100))
    topic: Mapped[str] = mapped_column(String(249))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    # [[name, value as text or null], ...]: Kafka headers, in order, repeats allowed.
    headers: Mapped[list[list[str | None]]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )
    created_at: Mapped[datetime] = mapped_column(
        default=utcnow, server_default=func.current_timestamp()
    )
    sent_at: Mapped[datetime | None]


class RelayLease(Base):
    """The one row that says which relay publishes the outbox, and until when.

    ``lease_seconds`` is the length of the lease last granted, so that renewing it
    (``outbox.mark_sent``) needs no duration from the caller.
    """

    __tablename__ = "outbox_relay"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(200))
    until: Mapped[datetime | None]
    lease_seconds: Mapped[float | None] = mapped_column(Float)
