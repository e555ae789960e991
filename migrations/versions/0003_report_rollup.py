"""the report's rollups: leads.entered, the rollup tables and the triggers that keep them

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 18:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from funnel.reports import rollup

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("entered", sa.Text(), server_default=",", nullable=False))

    op.create_table(
        "rollup_leads",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("temperature", sa.String(length=8), nullable=False),
        sa.Column("script_version", sa.String(length=64), nullable=False),
        sa.Column("entered", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("opted_out", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Integer(), nullable=False),
        sa.Column("leads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "source",
            "temperature",
            "script_version",
            "entered",
            "stage",
            "opted_out",
            "blocked",
            name=op.f("pk_rollup_leads"),
        ),
    )
    op.create_table(
        "rollup_gaps",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=False),
        sa.Column("to_stage", sa.String(length=32), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("leads", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "source", "from_stage", "to_stage", "bucket", name=op.f("pk_rollup_gaps")
        ),
    )
    op.create_table(
        "rollup_questions",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("question", sa.String(length=32), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source", "question", name=op.f("pk_rollup_questions")),
    )
    # Fills the rollups from what the database already holds, then starts the triggers.
    rollup.rebuild(op.get_bind())


def downgrade() -> None:
    rollup.uninstall(op.get_bind())
    op.drop_table("rollup_questions")
    op.drop_table("rollup_gaps")
    op.drop_table("rollup_leads")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_column("entered")
