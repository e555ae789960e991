"""inbox rows per bot and contents: a surrogate id, bot_id and digest, so that updates a
restarted Bot API server (or another bot token) numbers like old ones are new; and the reply
committed with each update (chat_id, replies, reply_status, reply_next, reply_at)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 01:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

RowId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _inbox(name: str) -> None:
    op.create_table(
        name,
        sa.Column("id", RowId, autoincrement=True, nullable=False),
        sa.Column("bot_id", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("update_id", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=16), nullable=False, server_default=""),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", funnel.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", funnel.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("chat_id", sa.BigInteger(), nullable=True),
        sa.Column("replies", sa.Text(), nullable=True),
        sa.Column("reply_status", sa.String(length=10), nullable=True),
        sa.Column("reply_next", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("reply_at", funnel.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        sa.UniqueConstraint("bot_id", "update_id", "digest", name="uq_inbox_update"),
    )


def upgrade() -> None:
    _inbox("inbox_v2")
    # Kept as they were, bot 0 and no digest: the bot adopts them at its start and
    # recognises a delivery of them again by the id alone (bot/inbox.py).
    op.execute(
        "INSERT INTO inbox_v2 (bot_id, update_id, digest, payload, received_at, handled_at) "
        "SELECT 0, update_id, '', payload, received_at, handled_at FROM inbox ORDER BY update_id"
    )
    op.drop_table("inbox")
    op.rename_table("inbox_v2", "inbox")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE inbox RENAME CONSTRAINT pk_inbox_v2 TO pk_inbox")
        op.execute("ALTER SEQUENCE inbox_v2_id_seq RENAME TO inbox_id_seq")
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])
    op.create_index("ix_inbox_reply_status", "inbox", ["reply_status"])
    op.create_index("ix_inbox_chat_id", "inbox", ["chat_id"])


def downgrade() -> None:
    op.create_table(
        "inbox_v1",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", funnel.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", funnel.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("update_id", name="pk_inbox_v1"),
    )
    # One row per id, the newest numbering's.
    op.execute(
        "INSERT INTO inbox_v1 (update_id, payload, received_at, handled_at) "
        "SELECT update_id, payload, received_at, handled_at FROM inbox "
        "WHERE id IN (SELECT MAX(id) FROM inbox GROUP BY update_id)"
    )
    op.drop_table("inbox")
    op.rename_table("inbox_v1", "inbox")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE inbox RENAME CONSTRAINT pk_inbox_v1 TO pk_inbox")
    op.create_index("ix_inbox_handled_at", "inbox", ["handled_at"])
