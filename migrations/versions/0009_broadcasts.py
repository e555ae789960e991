"""broadcasts: an admin's message to a segment, and its recipients

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-01 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = funnel.core.models.UTCDateTime(timezone=True)
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("admin_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("segment", sa.Text(), nullable=True),
        sa.Column("text_a", sa.Text(), nullable=True),
        sa.Column("text_b", sa.Text(), nullable=True),
        sa.Column("buttons", sa.JSON(), nullable=False),
        sa.Column("send_at", when, nullable=True),
        sa.Column("expected", sa.Integer(), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("launched_at", when, nullable=True),
        sa.Column("materialised_at", when, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    op.create_index(
        "ix_broadcasts_status_send_at", "broadcasts", ["status", "send_at"], unique=False
    )
    op.create_index(
        "ix_broadcasts_admin_id_status", "broadcasts", ["admin_id", "status"], unique=False
    )
    op.create_table(
        "broadcast_recipients",
        sa.Column("broadcast_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("lead_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("arm", sa.String(length=1), nullable=False),
        sa.Column("replied_at", when, nullable=True),
        sa.ForeignKeyConstraint(
            ["broadcast_id"],
            ["broadcasts.id"],
            name=op.f("fk_broadcast_recipients_broadcast_id_broadcasts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_broadcast_recipients_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("broadcast_id", "lead_id", name=op.f("pk_broadcast_recipients")),
    )
    op.create_index(
        "ix_broadcast_recipients_lead_id", "broadcast_recipients", ["lead_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_broadcast_recipients_lead_id", table_name="broadcast_recipients")
    op.drop_table("broadcast_recipients")
    op.drop_index("ix_broadcasts_admin_id_status", table_name="broadcasts")
    op.drop_index("ix_broadcasts_status_send_at", table_name="broadcasts")
    op.drop_table("broadcasts")
