"""experiments: which variant of an A/B test each lead was shown first, and when

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-01 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exposures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("experiment", sa.String(length=32), nullable=False),
        sa.Column("variant", sa.String(length=24), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("at", funnel.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["lead_id"],
            ["leads.id"],
            name=op.f("fk_exposures_lead_id_leads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exposures")),
        sa.UniqueConstraint("lead_id", "experiment", name=op.f("uq_exposures_lead_id_experiment")),
    )
    op.create_index(
        "ix_exposures_experiment_variant", "exposures", ["experiment", "variant"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_exposures_experiment_variant", table_name="exposures")
    op.drop_table("exposures")
