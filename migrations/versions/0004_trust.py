"""trust: where each managers' card landed (chat, message), and the update inbox

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chat_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("message_id", sa.BigInteger(), nullable=True))

    op.create_table(
        "inbox",
        sa.Column("update_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", funnel.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("handled_at", funnel.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("update_id", name=op.f("pk_inbox")),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_handled_at", ["handled_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_handled_at")
    op.drop_table("inbox")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_column("message_id")
        batch_op.drop_column("chat_id")
