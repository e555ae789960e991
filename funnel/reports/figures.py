"""The funnel report as data: per stage reach, conversion and timing, exits, breakdowns by
source, temperature and script version, questions, money and churn (funnel_report.py
computes it, the views in handlers/views/ render it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from funnel.reports.periods import Period


@dataclass(frozen=True)
class StageRow:
    id: str
    title: str
    reached: int
    conversion_from_previous: float | None
    conversion_from_first: float | None
    # None for the first stage: nobody can drop before it.
    dropped: int | None
    median_seconds_from_previous: float | None = None
    mean_seconds_from_previous: float | None = None
    # How many leads the two timings are computed over.
    timed_leads: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "reached": self.reached,
            "conversion_from_previous": self.conversion_from_previous,
            "conversion_from_first": self.conversion_from_first,
            "dropped": self.dropped,
            "median_seconds_from_previous": self.median_seconds_from_previous,
            "mean_seconds_from_previous": self.mean_seconds_from_previous,
            "timed_leads": self.timed_leads,
        }


@dataclass(frozen=True)
class Segment:
    """One value of a breakdown (a source, a temperature, a script version)."""

    key: str | None
    leads: int
    stages: tuple[StageRow, ...]
    overall_conversion: float | None

    def to_json(self, key_name: str) -> dict[str, Any]:
        return {
            key_name: self.key,
            "leads": self.leads,
            "overall_conversion": self.overall_conversion,
            "stages": [s.to_json() for s in self.stages],
        }


@dataclass(frozen=True)
class ExitRow:
    id: str
    title: str
    leads: int
    share: float | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "leads": self.leads, "share": self.share}


@dataclass(frozen=True)
class QuestionRow:
    id: str
    number: int
    title: str
    saw: int
    answered: int
    waiting: int
    answer_rate: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": self.number,
            "title": self.title,
            "saw": self.saw,
            "answered": self.answered,
            "waiting": self.waiting,
            "answer_rate": self.answer_rate,
        }


@dataclass(frozen=True)
class SourceMoney:
    source: str
    leads: int
    qualified: int
    customers: int
    conversion: float | None
    revenue: float
    purchases: int
    spend: float | None
    cost_per_lead: float | None
    cac: float | None
    romi: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "leads": self.leads,
            "qualified": self.qualified,
            "customers": self.customers,
            "conversion": self.conversion,
            "revenue": self.revenue,
            "purchases": self.purchases,
            "spend": self.spend,
            "cost_per_lead": self.cost_per_lead,
            "cac": self.cac,
            "romi": self.romi,
        }


@dataclass(frozen=True)
class Money:
    currency: str
    revenue: float
    purchases: int
    customers: int
    average_check: float | None
    revenue_per_lead: float | None
    median_seconds_to_first_purchase: float | None
    # Totals over the sources with spend recorded (paid sources) only.
    spend: float | None
    cost_per_lead: float | None
    cac: float | None
    romi: float | None
    # Revenue and spend in other currencies: shown, never mixed into the figures above.
    other_revenue: dict[str, float] = field(default_factory=dict)
    other_spend: dict[str, float] = field(default_factory=dict)
    by_source: tuple[SourceMoney, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "currency": self.currency,
            "revenue": self.revenue,
            "purchases": self.purchases,
            "customers": self.customers,
            "average_check": self.average_check,
            "revenue_per_lead": self.revenue_per_lead,
            "median_seconds_to_first_purchase": self.median_seconds_to_first_purchase,
            "spend": self.spend,
            "cost_per_lead": self.cost_per_lead,
            "cac": self.cac,
            "romi": self.romi,
            "other_revenue": dict(self.other_revenue),
            "other_spend": dict(self.other_spend),
            "by_source": [s.to_json() for s in self.by_source],
        }


@dataclass(frozen=True)
class ChurnRow:
    stage: str
    title: str
    leads: int
    opted_out: int
    blocked: int
    churned: int
    share: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "title": self.title,
            "leads": self.leads,
            "opted_out": self.opted_out,
            "blocked": self.blocked,
            "churned": self.churned,
            "share": self.share,
        }


@dataclass(frozen=True)
class Totals:
    leads: int
    reached_first: int
    customers: int
    overall_conversion: float | None
    exited: int
    churned: int
    churn_share: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "reached_first": self.reached_first,
            "customers": self.customers,
            "overall_conversion": self.overall_conversion,
            "exited": self.exited,
            "churned": self.churned,
            "churn_share": self.churn_share,
        }


@dataclass(frozen=True)
class FunnelReport:
    generated_at: datetime
    period: Period
    source: str | None
    stages: tuple[StageRow, ...]
    exited: tuple[ExitRow, ...]
    totals: Totals
    by_source: tuple[Segment, ...]
    by_temperature: tuple[Segment, ...]
    by_version: tuple[Segment, ...]
    questions: tuple[QuestionRow, ...]
    money: Money
    churn: tuple[ChurnRow, ...]

    def to_json(self) -> dict[str, Any]:
        """The stable shape of `stats --json`: keys are only ever added, never removed."""
        return {
            "generated_at": self.generated_at.isoformat(),
            "period": self.period.to_json(),
            "source": self.source,
            "stages": [s.to_json() for s in self.stages],
            "exited": [e.to_json() for e in self.exited],
            "totals": self.totals.to_json(),
            "by_source": [s.to_json("source") for s in self.by_source],
            "by_temperature": [s.to_json("temperature") for s in self.by_temperature],
            "by_version": [s.to_json("version") for s in self.by_version],
            "questions": [q.to_json() for q in self.questions],
            "money": self.money.to_json(),
            "churn": [c.to_json() for c in self.churn],
        }
