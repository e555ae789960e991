"""The report's money: revenue, average check, spend, cost per lead, CAC and ROMI, in one
main currency (the most used one); other currencies are listed apart, never added up.

Every sum is a `Decimal`, exact to the kopeck: the database adds amounts up in kopecks
(integers, see `cents_sql`), and the ratios here are rounded half up to kopecks. Refunded
purchases count nowhere (`UNREFUNDED`)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal

from funnel.reports.arithmetic import leads_reached, percent
from funnel.reports.figures import Money, Segment, SourceMoney
from funnel.script.schema import Script

DEFAULT_CURRENCY = "RUB"
CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# (source, currency) → (purchases, revenue, customers), and (source, currency) → spend.
Revenue = Mapping[tuple[str, str], tuple[int, Decimal, int]]
Spend = Mapping[tuple[str, str], Decimal]
# The condition every report puts on purchases: a refund reverses the purchase everywhere.
UNREFUNDED = "p.refunded_at IS NULL"


def cents_sql(column: str) -> str:
    """SQL for an amount in whole kopecks: summed as integers, money adds up exactly on
    SQLite too (which keeps NUMERIC as a binary float, so 0.1 + 0.2 would not be 0.3)."""
    return f"CAST(round({column} * 100) AS BIGINT)"


def from_cents(value: Decimal | int | float | str | None) -> Decimal:
    """A sum in kopecks, as the database returns it, as money."""
    if value is None:
        return ZERO
    return (Decimal(int(Decimal(str(value)))) / 100).quantize(CENT)


def amount(value: Decimal | int | str | None) -> Decimal:
    """A sum of money as the report shows it: rounded half up to kopecks."""
    if value is None:
        return ZERO
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def money_ratio(part: Decimal, whole: Decimal | int) -> Decimal | None:
    """Money divided by a count or by money, half up to kopecks; None when whole is zero."""
    if not whole:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(CENT, rounding=ROUND_HALF_UP)


def return_percent(revenue: Decimal, cost: Decimal) -> float | None:
    """ROMI: (revenue − cost) / cost in percent, computed exactly and rounded half up to two
    decimals, then handed over like every other percent of the report."""
    if not cost:
        return None
    exact = (Decimal(revenue) - Decimal(cost)) * 100 / Decimal(cost)
    return float(exact.quantize(CENT, rounding=ROUND_HALF_UP))


def money_figures(
    script: Script,
    sources: Sequence[Segment],
    revenue: Revenue,
    spend: Spend,
    currency: str,
    median_to_purchase: float | None,
) -> Money:
    """The money section for the leads of `sources`, in `currency`."""
    other_revenue: dict[str, Decimal] = defaultdict(lambda: ZERO)
    other_spend: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for (_, cur), (_, total, _) in revenue.items():
        if cur != currency:
            other_revenue[cur] += total
    for (_, cur), total in spend.items():
        if cur != currency:
            other_spend[cur] += total

    per_source = []
    for segment in sources:
        src = segment.key or ""
        count, total, buyers = revenue.get((src, currency), (0, ZERO, 0))
        cost = spend.get((src, currency))
        qualified = leads_reached(segment.stages, script.roles.qualified)
        per_source.append(
            SourceMoney(
                source=src,
                leads=segment.leads,
                qualified=qualified,
                customers=buyers,
                conversion=percent(buyers, segment.leads),
                revenue=total,
                purchases=count,
                spend=cost,
                cost_per_lead=money_ratio(cost, segment.leads) if cost is not None else None,
                cac=money_ratio(cost, buyers) if cost is not None else None,
                romi=return_percent(total, cost) if cost is not None else None,
            )
        )
    # Spend on a source that brought no leads in the period still costs money.
    known = {s.source for s in per_source}
    for (src, cur), cost in sorted(spend.items()):
        if cur == currency and src not in known:
            per_source.append(
                SourceMoney(src, 0, 0, 0, None, ZERO, 0, cost, None, None,
                            return_percent(ZERO, cost))
            )  # fmt: skip

    leads = sum(s.leads for s in sources)
    count = sum(s.purchases for s in per_source)
    total = sum((s.revenue for s in per_source), ZERO)
    buyers = sum(s.customers for s in per_source)
    paid = [s for s in per_source if s.spend is not None]
    paid_spend = sum((s.spend or ZERO for s in paid), ZERO) if paid else None
    paid_leads = sum(s.leads for s in paid)
    paid_buyers = sum(s.customers for s in paid)
    paid_revenue = sum((s.revenue for s in paid), ZERO)
    return Money(
        currency=currency,
        revenue=total,
        purchases=count,
        customers=buyers,
        average_check=money_ratio(total, count),
        revenue_per_lead=money_ratio(total, leads),
        median_seconds_to_first_purchase=median_to_purchase,
        spend=paid_spend,
        cost_per_lead=money_ratio(paid_spend, paid_leads) if paid_spend is not None else None,
        cac=money_ratio(paid_spend, paid_buyers) if paid_spend is not None else None,
        romi=return_percent(paid_revenue, paid_spend) if paid_spend is not None else None,
        other_revenue=dict(sorted(other_revenue.items())),
        other_spend=dict(sorted(other_spend.items())),
        by_source=tuple(per_source),
        ltv=money_ratio(total, buyers),
    )


def main_currency(revenue: Revenue, spend: Spend) -> str:
    """The most used currency of the purchases (of the spend when nothing was bought); RUB
    when there is neither, and on a tie with RUB."""
    counts: Counter[str] = Counter()
    for (_, currency), (count, _, _) in revenue.items():
        counts[currency] += count
    if not counts:
        counts.update(currency for _, currency in spend)
    if not counts:
        return DEFAULT_CURRENCY
    best = max(counts.values())
    tied = sorted(c for c, n in counts.items() if n == best)
    return DEFAULT_CURRENCY if DEFAULT_CURRENCY in tied else tied[0]
