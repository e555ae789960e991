"""The managers' report: per manager, the leads they took in a period and what came of them:
how fast they took them (median from the card to the take), how many booked, how many paid,
the revenue and the conversion from taken to paid.

Computed from the take log (manager_takes) with the stage log and the purchases, never from
the leads' current state: a lead released, re-taken by a colleague or forgotten (/forget)
still counts, as a number. A booking, a payment or a purchase is credited to one take: the
latest one made at or before it (or the lead's first take, for what happened between the
card and the take), so two managers never share one sale."""

from __future__ import annotations

import bisect
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import ManagerTake, Purchase, StageEvent
from funnel.core.records import JsonRecord
from funnel.reports.periods import Period
from funnel.script.schema import Script

__all__ = ["ManagerRow", "ManagersReport", "managers_report"]

DEFAULT_CURRENCY = "RUB"


@dataclass(frozen=True)
class ManagerRow(JsonRecord):
    """One manager's figures (manager_id None: every manager together)."""

    manager_id: int | None
    name: str
    taken: int
    median_take_seconds: float | None
    booked: int
    paid: int
    revenue: Decimal
    # Revenue in other currencies than the report's, listed apart, never added up.
    other_revenue: tuple[tuple[str, Decimal], ...]
    conversion: Decimal | None  # percent of taken leads who paid, two decimals

    def to_json(self) -> dict[str, object]:
        data = super().to_json()
        data["revenue"] = str(self.revenue)
        data["other_revenue"] = [[cur, str(amount)] for cur, amount in self.other_revenue]
        data["conversion"] = None if self.conversion is None else str(self.conversion)
        return data


@dataclass(frozen=True)
class ManagersReport(JsonRecord):
    period: Period
    currency: str
    rows: tuple[ManagerRow, ...]
    total: ManagerRow


@dataclass
class _Tally:
    name: str = ""
    named_at: datetime | None = None
    leads: set[int] = field(default_factory=set)
    seconds: list[float] = field(default_factory=list)
    booked: set[int] = field(default_factory=set)
    paid: set[int] = field(default_factory=set)
    revenue: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))


def _money(value: object) -> Decimal:
    """An amount as stored (Decimal, or a float from an older mapping) as exact Decimal."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value or 0)).quantize(Decimal("0.01"))


def _credited(takes: Sequence[ManagerTake], at: datetime) -> ManagerTake | None:
    """The take an event at `at` is credited to: the latest made at or before it, else the
    first one when the event came after its card called the managers; None before that."""
    times = [take.taken_at for take in takes]
    index = bisect.bisect_right(times, at) - 1
    if index >= 0:
        return takes[index]
    first = takes[0]
    return first if at >= first.called_at else None


def _conversion(paid: int, taken: int) -> Decimal | None:
    if not taken:
        return None
    return (Decimal(100 * paid) / Decimal(taken)).quantize(Decimal("0.01"))


def _row(manager_id: int | None, tally: _Tally, currency: str) -> ManagerRow:
    others = tuple(
        sorted((cur, amount) for cur, amount in tally.revenue.items() if cur != currency)
    )
    median = statistics.median(tally.seconds) if tally.seconds else None
    return ManagerRow(
        manager_id=manager_id,
        name=tally.name,
        taken=len(tally.leads),
        median_take_seconds=None if median is None else float(median),
        booked=len(tally.booked),
        paid=len(tally.paid),
        revenue=tally.revenue.get(currency, Decimal("0.00")),
        other_revenue=others,
        conversion=_conversion(len(tally.paid), len(tally.leads)),
    )


async def managers_report(session: AsyncSession, script: Script, period: Period) -> ManagersReport:
    """The leads taken in `period` (by the moment of the take), per manager, with what came
    of them up to now."""
    query = select(ManagerTake.lead_id)
    if period.start is not None:
        query = query.where(ManagerTake.taken_at >= period.start)
    if period.end is not None:
        query = query.where(ManagerTake.taken_at < period.end)
    lead_ids = sorted(set((await session.scalars(query)).all()))
    takes: dict[int, list[ManagerTake]] = defaultdict(list)
    booked_at: dict[int, list[datetime]] = defaultdict(list)
    paid_at: dict[int, list[datetime]] = defaultdict(list)
    purchases: list[tuple[int, datetime, str, Decimal]] = []
    roles = script.roles
    # Small batches: an IN list stays well inside every database's parameter limit.
    for start in range(0, len(lead_ids), 500):
        batch = lead_ids[start : start + 500]
        for take in (
            await session.scalars(
                select(ManagerTake)
                .where(ManagerTake.lead_id.in_(batch))
                .order_by(ManagerTake.taken_at, ManagerTake.id)
            )
        ).all():
            takes[take.lead_id].append(take)
        events = await session.execute(
            select(StageEvent.lead_id, StageEvent.to_stage, StageEvent.at).where(
                StageEvent.lead_id.in_(batch),
                StageEvent.to_stage.in_((roles.booked, roles.customer)),
            )
        )
        for lead_id, stage, at in events.all():
            (booked_at if stage == roles.booked else paid_at)[lead_id].append(at)
        bought = await session.execute(
            select(Purchase.lead_id, Purchase.at, Purchase.currency, Purchase.amount).where(
                Purchase.lead_id.in_(batch),
                Purchase.refunded_at.is_(None),  # a refund takes the sale back
            )
        )
        purchases.extend(
            (lead_id, at, currency, _money(amount)) for lead_id, at, currency, amount in bought
        )

    currencies = Counter(currency for *_, currency, _ in purchases)
    currency = currencies.most_common(1)[0][0] if currencies else DEFAULT_CURRENCY
    tallies: dict[int, _Tally] = defaultdict(_Tally)
    total = _Tally()
    in_period: set[int] = set()
    for lead_id, lead_takes in takes.items():
        for take in lead_takes:
            if not period.contains(take.taken_at):
                continue
            in_period.add(take.id)
            tally = tallies[take.manager_id]
            if tally.named_at is None or take.taken_at >= tally.named_at:
                # The name at the manager's latest take: Telegram names change.
                tally.name, tally.named_at = take.manager_name, take.taken_at
            tally.leads.add(lead_id)
            total.leads.add(lead_id)
            if take.card_id is not None:
                seconds = max((take.taken_at - take.called_at).total_seconds(), 0.0)
                tally.seconds.append(seconds)
                total.seconds.append(seconds)

    def credit(lead_id: int, at: datetime) -> _Tally | None:
        take = _credited(takes[lead_id], at) if takes.get(lead_id) else None
        if take is None or take.id not in in_period:
            return None
        return tallies[take.manager_id]

    for lead_id, moments in booked_at.items():
        for at in moments:
            if (owner := credit(lead_id, at)) is not None:
                owner.booked.add(lead_id)
                total.booked.add(lead_id)
    for lead_id, moments in paid_at.items():
        for at in moments:
            if (owner := credit(lead_id, at)) is not None:
                owner.paid.add(lead_id)
                total.paid.add(lead_id)
    for lead_id, at, cur, amount in purchases:
        if (owner := credit(lead_id, at)) is not None:
            owner.revenue[cur] += amount
            total.revenue[cur] += amount

    rows = [_row(manager_id, tally, currency) for manager_id, tally in tallies.items()]
    rows.sort(key=lambda r: (-r.paid, -r.revenue, -r.taken, r.name, r.manager_id or 0))
    return ManagersReport(period, currency, tuple(rows), _row(None, total, currency))
