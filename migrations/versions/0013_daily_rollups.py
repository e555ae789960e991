"""daily and money rollups: the report's counts per UTC day of the leads' creation, revenue
and the time to the first purchase, kept by triggers on SQLite and PostgreSQL

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 02:00:00.000000

A period's report (30 days, a month) sums these per day instead of reading the stage log of
every lead created in it, and no report joins the purchases to the leads any more. Filled
from what the database holds by `rollup.rebuild`, which also installs the triggers again
(they now keep the new tables too).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from funnel.reports import rollup

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def _day() -> sa.Column[int]:
    return sa.Column("day", sa.Integer(), autoincrement=False, nullable=False)


def upgrade() -> None:
    op.create_table(
        "rollup_daily_leads",
        _day(),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("temperature", sa.String(length=8), nullable=False),
        sa.Column("script_version", sa.String(length=64), nullable=False),
        sa.Column("entered", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("opted_out", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Integer(), nullable=False),
        sa.Column("leads", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "source",
            "temperature",
            "script_version",
            "entered",
            "stage",
            "opted_out",
            "blocked",
            name=op.f("pk_rollup_daily_leads"),
        ),
    )
    op.create_table(
        "rollup_daily_gaps",
        _day(),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("from_stage", sa.String(length=32), nullable=False),
        sa.Column("to_stage", sa.String(length=32), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("leads", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "source",
            "from_stage",
            "to_stage",
            "bucket",
            name=op.f("pk_rollup_daily_gaps"),
        ),
    )
    op.create_table(
        "rollup_daily_questions",
        _day(),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("question", sa.String(length=32), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "source", "question", name=op.f("pk_rollup_daily_questions")
        ),
    )
    op.create_table(
        "rollup_money",
        _day(),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("cents", sa.BigInteger(), nullable=False),
        sa.Column("buyers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "source", "currency", name=op.f("pk_rollup_money")),
    )
    op.create_table(
        "rollup_first_purchases",
        _day(),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("leads", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day", "source", "currency", "bucket", name=op.f("pk_rollup_first_purchases")
        ),
    )
    # Fills the new tables (and the old ones, from the same pass) and installs the triggers.
    rollup.rebuild(op.get_bind())


def downgrade() -> None:
    rollup.uninstall(op.get_bind())
    for table in (
        "rollup_first_purchases",
        "rollup_money",
        "rollup_daily_questions",
        "rollup_daily_gaps",
        "rollup_daily_leads",
    ):
        op.drop_table(table)
    # The triggers of 0011, without the tables above.
    rollup.install(op.get_bind())
