"""managers' loop: the log of managers taking leads, and the index the service level reads

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0007"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = funnel.core.models.UTCDateTime(timezone=True)
    op.create_table(
        "manager_takes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("manager_id", sa.BigInteger(), nullable=False),
        sa.Column("manager_name", sa.String(length=128), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=True),
        sa.Column("called_at", when, nullable=False),
        sa.Column("taken_at", when, nullable=False),
        sa.Column("active_at", when, nullable=False),
        sa.Column("released_at", when, nullable=True),
        sa.Column("release_cause", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_manager_takes_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manager_takes")),
    )
    op.create_index("ix_manager_takes_lead_id_taken_at", "manager_takes", ["lead_id", "taken_at"])
    op.create_index("ix_manager_takes_taken_at", "manager_takes", ["taken_at"])
    op.create_index(
        "ix_manager_takes_released_at_active_at", "manager_takes", ["released_at", "active_at"]
    )
    op.create_index("ix_notifications_kind_created_at", "notifications", ["kind", "created_at"])
    # A lead a manager holds today (taken before this version) gets its open take, so the
    # pause and the report start from what the managers already did.
    op.execute(
        "INSERT INTO manager_takes (lead_id, manager_id, manager_name, card_id, called_at, "
        "taken_at, active_at) SELECT id, manager_id, COALESCE(manager_name, ''), NULL, "
        "taken_at, taken_at, taken_at FROM leads "
        "WHERE manager_id IS NOT NULL AND taken_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_kind_created_at", table_name="notifications")
    op.drop_table("manager_takes")
