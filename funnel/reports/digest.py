"""The owner's morning digest, as data: yesterday's new leads and how far they got,
yesterday's payments, and the stage that lost the most leads (over the last 30 days)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Lead, Purchase
from funnel.reports.funnel_report import funnel_report
from funnel.reports.money import cents_sql, from_cents
from funnel.reports.periods import parse_period
from funnel.script.schema import Script


@dataclass(frozen=True)
class Digest:
    day: str
    leads: int
    stages: list[tuple[str, int, float | None]]  # title, reached, % of yesterday's leads
    revenue: dict[str, Decimal]  # currency -> payments made yesterday (refunds excluded)
    purchases: int
    leakiest: tuple[str, int, float | None] | None  # title, dropped, % kept (last 30 days)


async def daily_digest(
    session: AsyncSession, script: Script, now: datetime, zone: ZoneInfo
) -> Digest:
    yesterday = (now.astimezone(zone) - timedelta(days=1)).date().isoformat()
    period = parse_period(yesterday, now, tz=zone)
    cohort = await funnel_report(session, script, now=now, period=period)
    month = await funnel_report(session, script, now=now, period=parse_period("30d", now, tz=zone))
    rows = await session.execute(
        select(
            Purchase.currency,
            func.count(),
            func.sum(literal_column(cents_sql("amount"), BigInteger)),
        )
        .join(Lead, Lead.id == Purchase.lead_id)
        .where(
            Lead.is_test.is_(False),
            Purchase.at >= period.start,
            Purchase.at < period.end,
            Purchase.refunded_at.is_(None),
        )
        .group_by(Purchase.currency)
    )
    revenue: dict[str, Decimal] = {}
    purchases = 0
    for currency, count, total in rows.all():
        revenue[currency] = from_cents(total)
        purchases += int(count)
    later = [s for s in month.stages[1:] if s.dropped]
    worst = max(later, key=lambda s: s.dropped or 0, default=None)
    return Digest(
        day=yesterday,
        leads=cohort.totals.leads,
        stages=[(s.title, s.reached, s.conversion_from_first) for s in cohort.stages],
        revenue=revenue,
        purchases=purchases,
        leakiest=(worst.title, worst.dropped or 0, worst.conversion_from_previous)
        if worst is not None
        else None,
    )
