"""payments in the bot: Telegram's charge ids, the offer paid, and refunds on purchases

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 22:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import funnel.core.models

revision = "0006"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.add_column(sa.Column("telegram_payment_charge_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("provider_payment_charge_id", sa.String(128), nullable=True))
        batch.add_column(sa.Column("offer", sa.String(32), nullable=True))
        batch.add_column(
            sa.Column("refunded_at", funnel.core.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("refunded_by", sa.BigInteger(), nullable=True))
        batch.create_unique_constraint(
            op.f("uq_purchases_telegram_payment_charge_id"), ["telegram_payment_charge_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.drop_constraint(op.f("uq_purchases_telegram_payment_charge_id"), type_="unique")
        batch.drop_column("refunded_by")
        batch.drop_column("refunded_at")
        batch.drop_column("offer")
        batch.drop_column("provider_payment_charge_id")
        batch.drop_column("telegram_payment_charge_id")
