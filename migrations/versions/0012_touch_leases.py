"""touch leases: touches.leased_until and leased_by, so instances on one PostgreSQL queue
disjoint touches

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 02:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "touches",
        sa.Column("leased_until", funnel.core.models.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column("touches", sa.Column("leased_by", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("touches", schema=None) as batch_op:
        batch_op.drop_column("leased_by")
        batch_op.drop_column("leased_until")
