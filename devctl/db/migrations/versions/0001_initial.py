"""The initial schema: users, connection requests, messages, the outbox and its relay lease.

Revision ID: 0001
Revises:
Create Date: 2026-12-01

Written by hand to run on SQLite and PostgreSQL alike; every constraint and index
is named as devctl/db/models.py names it (the API tells violations apart by name).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool = False, default_now: bool = False) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.current_timestamp() if default_now else None,
    )


def _user_fk(name: str, table: str) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.String(24),
        sa.ForeignKey("users.id", ondelete="CASCADE", name=f"fk_{table}_{name}_users"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(24), nullable=False),
        sa.Column("first_name", sa.String(50), nullable=False),
        sa.Column("last_name", sa.String(50), nullable=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("age", sa.Integer(), nullable=True),
        sa.Column("gender", sa.String(10), nullable=True),
        sa.Column("photo_url", sa.String(2048), nullable=True),
        sa.Column("about", sa.String(1000), nullable=True),
        sa.Column("skills", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
        sa.Column("is_premium", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column(
            "membership_tier", sa.String(10), nullable=False, server_default=sa.text("'free'")
        ),
        _time("created_at", default_now=True),
        _time("updated_at", default_now=True),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint(
            "membership_tier IN ('free', 'silver', 'gold')", name="ck_users_membership_tier"
        ),
    )
    op.create_table(
        "connection_requests",
        sa.Column("id", sa.String(24), nullable=False),
        _user_fk("from_user_id", "connection_requests"),
        _user_fk("to_user_id", "connection_requests"),
        sa.Column("user_low", sa.String(24), nullable=False),
        sa.Column("user_high", sa.String(24), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        _time("created_at", default_now=True),
        _time("updated_at", default_now=True),
        sa.PrimaryKeyConstraint("id", name="pk_connection_requests"),
        sa.UniqueConstraint("user_low", "user_high", name="uq_connection_requests_pair"),
        sa.CheckConstraint("user_low < user_high", name="ck_connection_requests_pair_ordered"),
        sa.CheckConstraint(
            "(user_low = from_user_id AND user_high = to_user_id)"
            " OR (user_low = to_user_id AND user_high = from_user_id)",
            name="ck_connection_requests_pair_matches",
        ),
        sa.CheckConstraint(
            "status IN ('interested', 'ignored', 'accepted', 'rejected')",
            name="ck_connection_requests_status",
        ),
    )
    op.create_index(
        "ix_connection_requests_to_status", "connection_requests", ["to_user_id", "status"]
    )
    op.create_index(
        "ix_connection_requests_from_status", "connection_requests", ["from_user_id", "status"]
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(24), nullable=False),
        _user_fk("from_user_id", "messages"),
        _user_fk("to_user_id", "messages"),
        sa.Column("conversation_id", sa.String(130), nullable=False),
        sa.Column("text", sa.String(5000), nullable=False),
        _time("ts"),
        _time("read_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
    )
    op.create_index("ix_messages_conversation_ts_id", "messages", ["conversation_id", "ts", "id"])
    op.create_table(
        "outbox",
        # INTEGER PRIMARY KEY on SQLite: the rowid itself, assigned under the write lock.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("topic", sa.String(249), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False, server_default=sa.text("'[]'")),
        _time("created_at", default_now=True),
        _time("sent_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index("ix_outbox_sent_at_id", "outbox", ["sent_at", "id"])
    relay = op.create_table(
        "outbox_relay",
        sa.Column("name", sa.String(50), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        _time("until", nullable=True),
        sa.Column("lease_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_outbox_relay"),
    )
    op.bulk_insert(relay, [{"name": "outbox"}])


def downgrade() -> None:
    op.drop_table("outbox_relay")
    op.drop_index("ix_outbox_sent_at_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_index("ix_messages_conversation_ts_id", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_connection_requests_from_status", table_name="connection_requests")
    op.drop_index("ix_connection_requests_to_status", table_name="connection_requests")
    op.drop_table("connection_requests")
    op.drop_table("users")
