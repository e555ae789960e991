"""The funnel report as data: per stage reach, conversion and timing, exits, breakdowns by
source, temperature and script version, questions, money and churn (funnel_report.py
computes it, the views in handlers/views/ render it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from funnel.core.records import JsonRecord
from funnel.reports.periods import Period


@dataclass(frozen=True)
class StageRow(JsonRecord):
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


@dataclass(frozen=True)
class Segment(JsonRecord):
    """One value of a breakdown; its kind names the key in JSON."""

    key: str | None
    leads: int
    overall_conversion: float | None
    stages: tuple[StageRow, ...]


@dataclass(frozen=True)
class SourceSegment(Segment):
    json_names = {"key": "source"}


@dataclass(frozen=True)
class TemperatureSegment(Segment):
    json_names = {"key": "temperature"}


@dataclass(frozen=True)
class VersionSegment(Segment):
    json_names = {"key": "version"}


@dataclass(frozen=True)
class ExitRow(JsonRecord):
    id: str
    title: str
    leads: int
    share: float | None


@dataclass(frozen=True)
class QuestionRow(JsonRecord):
    id: str
    number: int
    title: str
    saw: int
    answered: int
    waiting: int
    answer_rate: float | None


@dataclass(frozen=True)
class SourceMoney(JsonRecord):
    source: str
    leads: int
    qualified: int
    customers: int
    conversion: float | None
    revenue: Decimal
    purchases: int
    spend: Decimal | None
    cost_per_lead: Decimal | None
    cac: Decimal | None
    romi: float | None


@dataclass(frozen=True)
class Money(JsonRecord):
    currency: str
    # Money is Decimal, exact to the kopeck; refunded purchases are not counted.
    revenue: Decimal
    purchases: int
    customers: int
    average_check: Decimal | None
    revenue_per_lead: Decimal | None
    median_seconds_to_first_purchase: float | None
    # Totals over the sources with spend recorded (paid sources) only.
    spend: Decimal | None
    cost_per_lead: Decimal | None
    cac: Decimal | None
    romi: float | None
    # Revenue and spend in other currencies: shown, never mixed into the figures above.
    other_revenue: dict[str, Decimal] = field(default_factory=dict)
    other_spend: dict[str, Decimal] = field(default_factory=dict)
    by_source: tuple[SourceMoney, ...] = ()
    # LTV: what one paying customer brought over all their (unrefunded) purchases.
    ltv: Decimal | None = None


@dataclass(frozen=True)
class ChurnRow(JsonRecord):
    stage: str
    title: str
    leads: int
    opted_out: int
    blocked: int
    churned: int
    share: float | None


@dataclass(frozen=True)
class Totals(JsonRecord):
    leads: int
    reached_first: int
    customers: int
    overall_conversion: float | None
    exited: int
    churned: int
    churn_share: float | None


@dataclass(frozen=True)
class FunnelReport(JsonRecord):
    """The whole report. `to_json()` is the stable shape of `stats --json`: keys are only ever
    added, never removed."""

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
