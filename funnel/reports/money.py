"""The report's money: revenue, average check, spend, cost per lead, CAC and ROMI, in one
main currency (the most used one); other currencies are listed apart, never added up."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from decimal import Decimal

from funnel.reports.arithmetic import leads_reached, percent, ratio
from funnel.reports.figures import Money, Segment, SourceMoney
from funnel.script.schema import Script

DEFAULT_CURRENCY = "RUB"
# (source, currency) → (purchases, revenue, customers), and (source, currency) → spend.
Revenue = Mapping[tuple[str, str], tuple[int, float, int]]
Spend = Mapping[tuple[str, str], float]


def amount(value: Decimal | float | int | None) -> float:
    """A sum of money as the report shows it: a float rounded to kopecks."""
    return round(float(value or 0), 2)


def money_figures(
    script: Script,
    sources: Sequence[Segment],
    revenue: Revenue,
    spend: Spend,
    currency: str,
    median_to_purchase: float | None,
) -> Money:
    """The money section for the leads of `sources`, in `currency`."""
    other_revenue: dict[str, float] = defaultdict(float)
    other_spend: dict[str, float] = defaultdict(float)
    for (_, cur), (_, total, _) in revenue.items():
        if cur != currency:
            other_revenue[cur] += total
    for (_, cur), total in spend.items():
        if cur != currency:
            other_spend[cur] += total

    per_source = []
    for segment in sources:
        src = segment.key or ""
        count, total, buyers = revenue.get((src, currency), (0, 0.0, 0))
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
                cost_per_lead=ratio(cost, segment.leads) if cost is not None else None,
                cac=ratio(cost, buyers) if cost is not None else None,
                romi=percent(total - cost, cost) if cost is not None else None,
            )
        )
    # Spend on a source that brought no leads in the period still costs money.
    known = {s.source for s in per_source}
    for (src, cur), cost in sorted(spend.items()):
        if cur == currency and src not in known:
            per_source.append(
                SourceMoney(src, 0, 0, 0, None, 0.0, 0, cost, None, None, percent(-cost, cost))
            )

    leads = sum(s.leads for s in sources)
    count = sum(s.purchases for s in per_source)
    total = round(sum(s.revenue for s in per_source), 2)
    buyers = sum(s.customers for s in per_source)
    paid = [s for s in per_source if s.spend is not None]
    paid_spend = round(sum(s.spend or 0.0 for s in paid), 2) if paid else None
    paid_leads = sum(s.leads for s in paid)
    paid_buyers = sum(s.customers for s in paid)
    paid_revenue = sum(s.revenue for s in paid)
    return Money(
        currency=currency,
        revenue=total,
        purchases=count,
        customers=buyers,
        average_check=ratio(total, count),
        revenue_per_lead=ratio(total, leads),
        median_seconds_to_first_purchase=median_to_purchase,
        spend=paid_spend,
        cost_per_lead=ratio(paid_spend, paid_leads) if paid_spend is not None else None,
        cac=ratio(paid_spend, paid_buyers) if paid_spend is not None else None,
        romi=percent(paid_revenue - paid_spend, paid_spend) if paid_spend is not None else None,
        other_revenue={k: round(v, 2) for k, v in sorted(other_revenue.items())},
        other_spend={k: round(v, 2) for k, v in sorted(other_spend.items())},
        by_source=tuple(per_source),
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
