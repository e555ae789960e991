"""PostgreSQL keeps the report's rollups exact too: PL/pgSQL triggers, filled from the log

Revision ID: 0010
Revises: 0005
Create Date: 2026-12-01 22:30:00.000000

Until this revision PostgreSQL had the rollup tables (0003) but nothing kept them, and its
all-time report read the whole stage log. SQLite is untouched: its triggers are from 0003.
"""

from __future__ import annotations

from alembic import op

from funnel.reports import rollup

revision = "0010"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Recomputes leads.entered and every rollup from the log, then installs the triggers.
        rollup.rebuild(bind)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        rollup.uninstall(bind)
