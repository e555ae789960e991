"""Money in and out: purchases that make a lead a customer (or loyal when they buy again),
and ad spend per source for cost per lead and return on spend."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.errors import InputError

# The amount's parser moved to funnel.core.inputs with the others; it is still importable here.
from funnel.core.inputs import MAX_AMOUNT as MAX_AMOUNT
from funnel.core.inputs import parse_amount as parse_amount
from funnel.core.inputs import quote
from funnel.core.models import AdSpend, Lead, Purchase
from funnel.core.stages import can_move
from funnel.script.schema import Script

CURRENCY = re.compile(r"[A-Za-z]{3}")


def parse_currency(text: str | None, default: str = "RUB") -> str:
    if text is None:
        return default
    if not CURRENCY.fullmatch(text):
        raise InputError("currency.not_a_code", value=quote(text, 10))
    return text.upper()


async def record_purchase(
    session: AsyncSession, script: Script, lead: Lead, amount: Decimal, currency: str,
    recorded_by: int | None, at: datetime, *, telegram_charge_id: str | None = None,
    provider_charge_id: str | None = None, offer: str | None = None,
) -> str:  # fmt: skip
    """Records the payment and moves the lead on; returns the stage the lead is in after.
    A payment in the bot also carries Telegram's charge ids and the offer paid."""
    earlier = await session.scalar(
        select(func.count())
        .select_from(Purchase)
        .where(Purchase.lead_id == lead.id, Purchase.refunded_at.is_(None))
    )
    session.add(
        Purchase(
            lead_id=lead.id, amount=amount, currency=currency, at=at, recorded_by=recorded_by,
            telegram_payment_charge_id=telegram_charge_id,
            provider_payment_charge_id=provider_charge_id, offer=offer,
        )
    )  # fmt: skip
    target = script.roles.loyal if earlier else script.roles.customer
    if can_move(script, lead.stage, target):
        store.log_stage(session, lead, target, "paid", at)
    elif can_move(script, lead.stage, script.roles.customer):
        store.log_stage(session, lead, script.roles.customer, "paid", at)
    return lead.stage


async def record_spend(
    session: AsyncSession, source: str, amount: Decimal, currency: str,
    recorded_by: int | None, at: datetime,
) -> None:  # fmt: skip
    session.add(
        AdSpend(source=source, amount=amount, currency=currency, at=at, recorded_by=recorded_by)
    )
