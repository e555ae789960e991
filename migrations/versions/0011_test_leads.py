"""test leads: leads.is_test and leads.time_scale for /test_funnel, and the rollup triggers
again, now leaving test leads out

Revision ID: 0011
Revises: 0005
Create Date: 2026-12-01 22:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from funnel.reports import rollup

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: a batch copy of leads would trip its triggers.
    op.add_column(
        "leads", sa.Column("is_test", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("leads", sa.Column("time_scale", sa.Float(), nullable=True))
    op.create_index("ix_leads_time_scale", "leads", ["time_scale"], unique=False)
    # The triggers read is_test from now on (they test for the column when installed).
    rollup.install(op.get_bind())


def downgrade() -> None:
    rollup.uninstall(op.get_bind())
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index("ix_leads_time_scale")
        batch_op.drop_column("time_scale")
        batch_op.drop_column("is_test")
    rollup.install(op.get_bind())
