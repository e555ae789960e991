"""The owner's funnel report, aggregated in SQL from the stage log: reach and conversion per
stage, time between stages, breakdowns, question drop-off, money and churn. The all-time
report takes the same counts from the rollups the database keeps (funnel/reports/rollup.py),
so it costs the same for a thousand leads or a million.

Definitions the numbers follow (the owner's help and the tests rely on them):
- A lead *reached* a funnel stage when the log shows it entered that stage or any later one
  (the log may skip stages). Exit stages are counted apart: leads that ever entered them.
- *Time from the previous stage*: from the lead's first entry into the previous stage to its
  first entry into this one, over leads that entered both in that order. The median comes from
  a histogram built in SQL, exact to the second under an hour, to the minute under two days
  and to ten minutes beyond (each bucket is represented by the mean of its values).
- A lead *saw* a question when it answered it (in any attempt, "start over" included) or is
  being asked it now; *waiting* are those who saw it and have not answered.
- *Customers* in money figures are leads with at least one purchase. Money is reported in one
  main currency (the most used one, RUB when nothing was bought); other currencies are listed
  apart and never added up. Spend counts when it was recorded inside the period.
- *Churn* is per the stage the lead is in now: opted out (/stop) or blocked the bot.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from funnel.core.clock import as_utc
from funnel.core.models import UTCDateTime
from funnel.core.telegram_text import cut_plain, visible_text
from funnel.reports import rollup
from funnel.reports.periods import Period, parse_period
from funnel.reports.rollup import bucket_sql, seconds_sql
from funnel.script.schema import Script

__all__ = [
    "ChurnRow",
    "ExitRow",
    "FunnelReport",
    "Money",
    "Period",
    "QuestionRow",
    "Segment",
    "SourceMoney",
    "StageRow",
    "Totals",
    "funnel_report",
    "median_from_histogram",
    "parse_period",
    "percent",
]

DEFAULT_CURRENCY = "RUB"


def percent(part: float, whole: float) -> float | None:
    """part of whole in percent (0–100, two decimals); None when whole is zero."""
    if not whole:
        return None
    return round(100.0 * part / whole, 2)


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 2) if whole else None


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


# -- SQL ----------------------------------------------------------------------------------


class _Sql:
    """Builds the report's statements for one script, period and source, per dialect."""

    def __init__(self, dialect: str, script: Script, period: Period, source: str | None) -> None:
        self.dialect = dialect
        self.stages = script.funnel_order
        self.exits = [s.id for s in script.exit_stages]
        self.params: dict[str, Any] = {}
        for n, stage in enumerate(self.stages):
            self.params[f"s{n}"] = stage
        for n, stage in enumerate(self.exits):
            self.params[f"x{n}"] = stage
        conditions = []
        if period.start is not None:
            conditions.append("l.created_at >= :start")
            self.params["start"] = period.start
        if period.end is not None:
            conditions.append("l.created_at < :end")
            self.params["end"] = period.end
        if source is not None:
            conditions.append("l.source = :source")
            self.params["source"] = source
        self.where = " AND ".join(conditions) or "1 = 1"

    def statement(self, sql: str, **extra: Any) -> tuple[TextClause, dict[str, Any]]:
        params = {**self.params, **extra}
        clause = text(sql)
        # Times are compared as the column type stores them (SQLite: a fixed text format).
        binds = [bindparam(name, type_=UTCDateTime()) for name in ("start", "end", "spend_start",
                 "spend_end") if name in params and f":{name}" in sql]  # fmt: skip
        if binds:
            clause = clause.bindparams(*binds)
        return clause, {k: v for k, v in params.items() if f":{k}" in sql}

    def seconds(self, earlier: str, later: str) -> str:
        return seconds_sql(self.dialect, earlier, later)

    def funnel(self) -> str:
        """One pass over the log, grouped per lead, then every aggregate from that."""
        furthest = " ".join(f"WHEN :s{n} THEN {n}" for n in range(len(self.stages)))
        firsts = "".join(
            f", min(e.at) FILTER (WHERE e.to_stage = :s{n}) AS t{n}"
            for n in range(len(self.stages))
        )
        exits = "".join(
            f", max(CASE WHEN e.to_stage = :x{n} THEN 1 ELSE 0 END) AS x{n}"
            for n in range(len(self.exits))
        )
        per_lead = f"""
            SELECT l.id AS lead_id, l.source AS source, l.temperature AS temperature,
                   l.script_version AS version, l.stage AS stage,
                   CASE WHEN l.opted_out_at IS NULL THEN 0 ELSE 1 END AS opted,
                   CASE WHEN l.blocked_at IS NULL THEN 0 ELSE 1 END AS blocked,
                   max(CASE e.to_stage {furthest} END) AS furthest{firsts}{exits}
            FROM leads l LEFT JOIN stage_events e ON e.lead_id = l.id
            WHERE {self.where}
            GROUP BY l.id"""
        deltas = " UNION ALL ".join(
            f"SELECT {n} AS k, {self.seconds(f't{n - 1}', f't{n}')} AS d FROM per_lead "
            f"WHERE t{n - 1} IS NOT NULL AND t{n} IS NOT NULL"
            for n in range(1, len(self.stages))
        )
        parts = [
            f"SELECT '{dim}' AS kind, {column} AS name, furthest AS k, count(*) AS n, "
            "0 AS a, 0 AS b, 0 AS c FROM per_lead GROUP BY " + f"{column}, furthest"
            for dim, column in (("source", "source"), ("temperature", "temperature"),
                                ("version", "version"))
        ]  # fmt: skip
        parts += [
            f"SELECT 'exit' AS kind, :x{n} AS name, 0 AS k, count(*) AS n, 0 AS a, 0 AS b, "
            f"0 AS c FROM per_lead WHERE x{n} = 1"
            for n in range(len(self.exits))
        ]
        parts.append(
            "SELECT 'churn' AS kind, stage AS name, 0 AS k, count(*) AS n, sum(opted) AS a, "
            "sum(blocked) AS b, sum(CASE WHEN opted + blocked > 0 THEN 1 ELSE 0 END) AS c "
            "FROM per_lead GROUP BY stage"
        )
        if deltas:
            parts.append(
                "SELECT 'time' AS kind, NULL AS name, k, count(*) AS n, sum(d) AS a, "
                f"{bucket_sql('d')} AS b, 0 AS c FROM deltas WHERE d >= 0 "
                f"GROUP BY k, {bucket_sql('d')}"
            )
        ctes = f"per_lead AS MATERIALIZED ({per_lead})"
        if deltas:
            ctes += f", deltas AS ({deltas})"
        return f"WITH {ctes} " + " UNION ALL ".join(parts)

    def answered(self, questions: int) -> str:
        names = ", ".join(f":q{n}" for n in range(questions))
        return f"""
            SELECT a.question, count(DISTINCT a.lead_id)
            FROM answers a JOIN leads l ON l.id = a.lead_id
            WHERE {self.where} AND a.question IN ({names})
            GROUP BY a.question"""

    def waiting(self) -> str:
        return f"""
            SELECT l.position, count(*) FROM leads l
            WHERE {self.where} AND l.position IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM answers a WHERE a.lead_id = l.id AND a.question = l.position)
            GROUP BY l.position"""

    def purchases(self) -> str:
        return f"""
            SELECT l.source, p.currency, count(*), sum(p.amount), count(DISTINCT p.lead_id)
            FROM purchases p JOIN leads l ON l.id = p.lead_id
            WHERE {self.where}
            GROUP BY l.source, p.currency"""

    def first_purchase(self) -> str:
        seconds = self.seconds("created_at", "first_at")
        return f"""
            SELECT {bucket_sql("d")} AS b, count(*), sum(d) FROM (
                SELECT {seconds} AS d FROM (
                    SELECT l.created_at AS created_at, min(p.at) AS first_at
                    FROM purchases p JOIN leads l ON l.id = p.lead_id
                    WHERE {self.where} AND p.currency = :currency
                    GROUP BY l.id, l.created_at) AS firsts) AS deltas
            WHERE d >= 0 GROUP BY {bucket_sql("d")}"""

    def spend(self, period: Period, source: str | None) -> str:
        conditions = ["1 = 1"]
        if period.start is not None:
            conditions.append("s.at >= :spend_start")
            self.params["spend_start"] = period.start
        if period.end is not None:
            conditions.append("s.at < :spend_end")
            self.params["spend_end"] = period.end
        if source is not None:
            conditions.append("s.source = :source")
        return f"""
            SELECT s.source, s.currency, sum(s.amount) FROM ad_spend s
            WHERE {" AND ".join(conditions)} GROUP BY s.source, s.currency"""


# -- the report ---------------------------------------------------------------------------


@dataclass
class _Tally:
    """What the report counts, before it becomes rows: read from the log or the rollups."""

    # dimension → value → furthest funnel stage index (None: never entered one) → leads
    by_dim: dict[str, dict[str | None, Counter[int | None]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Counter))
    )
    exited: Counter[str] = field(default_factory=Counter)
    # current stage → (leads, opted out, blocked, either)
    churn: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    # funnel stage index → (bucket, leads, sum of seconds) from the previous stage
    histograms: dict[int, list[tuple[float, int, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    answered: dict[str, int] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)


async def _tally_from_log(session: AsyncSession, sql: _Sql, script: Script) -> _Tally:
    tally = _Tally()
    for kind, name, k, n, a, b, c in (await session.execute(*sql.statement(sql.funnel()))).all():
        if kind in ("source", "temperature", "version"):
            tally.by_dim[kind][name][None if k is None else int(k)] += int(n)
        elif kind == "exit":
            tally.exited[name] += int(n)
        elif kind == "churn":
            tally.churn[name] = (int(n), int(a or 0), int(b or 0), int(c or 0))
        elif kind == "time":
            tally.histograms[int(k)].append((float(b), int(n), float(a)))
    ids = [q.id for q in script.questions]
    params = {f"q{n}": q for n, q in enumerate(ids)}
    answered = await session.execute(*sql.statement(sql.answered(len(ids)), **params))
    tally.answered = {question: int(count) for question, count in answered.all()}
    waiting = await session.execute(*sql.statement(sql.waiting()))
    tally.waiting = {question: int(count) for question, count in waiting.all()}
    return tally


async def _tally_from_rollups(session: AsyncSession, script: Script, source: str | None) -> _Tally:
    """The same counts as `_tally_from_log` over all leads, from the trigger-kept rollups."""
    tally = _Tally()
    order = {stage: n for n, stage in enumerate(script.funnel_order)}
    exits = [s.id for s in script.exit_stages]
    churn: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in await rollup.read_leads(session, source):
        furthest = max((order[s] for s in row.entered if s in order), default=None)
        for dim, key in (("source", row.source), ("temperature", row.temperature),
                         ("version", row.version)):  # fmt: skip
            tally.by_dim[dim][key][furthest] += row.leads
        for stage in exits:
            if stage in row.entered:
                tally.exited[stage] += row.leads
        counts = churn[row.stage]
        counts[0] += row.leads
        counts[1] += row.leads if row.opted_out else 0
        counts[2] += row.leads if row.blocked else 0
        counts[3] += row.leads if row.opted_out or row.blocked else 0
    tally.churn = {stage: (n, a, b, c) for stage, (n, a, b, c) in churn.items()}
    pairs = list(itertools.pairwise(script.funnel_order))
    index = {pair: n for n, pair in enumerate(pairs, 1)}
    for gap in await rollup.read_gaps(session, source, pairs):
        k = index[(gap.from_stage, gap.to_stage)]
        tally.histograms[k].append((float(gap.bucket), gap.leads, float(gap.seconds)))
    questions = {q.id for q in script.questions}
    answered, waiting = await rollup.read_questions(session, source)
    tally.answered = {q: n for q, n in answered.items() if q in questions and n}
    tally.waiting = {q: n for q, n in waiting.items() if n}
    return tally


async def funnel_report(
    session: AsyncSession,
    script: Script,
    *,
    now: datetime,
    period: Period,
    source: str | None = None,
    from_log: bool = False,
) -> FunnelReport:
    """The whole report for leads created in `period` (and from `source`, when given).

    The all-time report reads the rollups the database keeps (funnel/reports/rollup.py) where it
    has them; a period reads the log of the leads created in it. `from_log` always reads the
    log (the tests hold the two equal).
    """
    dialect = session.get_bind().dialect.name
    sql = _Sql(dialect, script, period, source)
    if period.is_all and not from_log and rollup.supported(dialect):
        tally = await _tally_from_rollups(session, script, source)
    else:
        tally = await _tally_from_log(session, sql, script)
    by_dim, exited, churn = tally.by_dim, tally.exited, tally.churn

    overall: Counter[int | None] = Counter()
    for counts in by_dim["source"].values():
        overall.update(counts)
    stages = _stage_rows(script, overall, tally.histograms)
    leads = sum(overall.values())
    first = stages[0].reached if stages else 0
    customers = _reached(script, stages, script.roles.customer)
    segments = {
        dim: _segments(script, by_dim[dim]) for dim in ("source", "temperature", "version")
    }
    churn_rows = _churn_rows(script, churn)
    churned = sum(row.churned for row in churn_rows)
    totals = Totals(
        leads=leads,
        reached_first=first,
        customers=customers,
        overall_conversion=percent(customers, first),
        exited=sum(exited.values()),
        churned=churned,
        churn_share=percent(churned, leads),
    )
    exit_rows = tuple(
        ExitRow(s.id, s.title, exited[s.id], percent(exited[s.id], leads))
        for s in script.exit_stages
    )
    questions = _questions(script, tally)
    money = await _money(session, sql, script, period, source, segments["source"])
    return FunnelReport(
        generated_at=as_utc(now),
        period=period,
        source=source,
        stages=stages,
        exited=exit_rows,
        totals=totals,
        by_source=segments["source"],
        by_temperature=segments["temperature"],
        by_version=segments["version"],
        questions=questions,
        money=money,
        churn=churn_rows,
    )


def _stage_rows(
    script: Script,
    furthest: Mapping[int | None, int],
    histograms: Mapping[int, Sequence[tuple[float, int, float]]] | None = None,
) -> tuple[StageRow, ...]:
    rows: list[StageRow] = []
    titles = script.titles
    first = previous = 0
    for n, stage in enumerate(script.funnel_order):
        reached = sum(count for far, count in furthest.items() if far is not None and far >= n)
        median = mean = None
        timed = 0
        if histograms is not None and n in histograms:
            median, mean, timed = median_from_histogram(histograms[n])
        if n == 0:
            first = reached
        rows.append(
            StageRow(
                id=stage,
                title=titles.get(stage, stage),
                reached=reached,
                conversion_from_previous=percent(reached, previous) if n else None,
                conversion_from_first=percent(reached, first),
                dropped=previous - reached if n else None,
                median_seconds_from_previous=median,
                mean_seconds_from_previous=mean,
                timed_leads=timed,
            )
        )
        previous = reached
    return tuple(rows)


def median_from_histogram(
    buckets: Iterable[tuple[float, int, float]],
) -> tuple[float | None, float | None, int]:
    """(median, mean, count) of values given as (bucket, count, sum of values) rows.

    A bucket stands for the mean of its values, so a bucket of equal values is exact.
    """
    ordered = sorted((b for b in buckets if b[1] > 0), key=lambda b: b[0])
    total = sum(count for _, count, _ in ordered)
    if not total:
        return None, None, 0
    mean = round(sum(s for _, _, s in ordered) / total, 1)

    def value_at(index: int) -> float:
        seen = 0
        for _, count, values in ordered:
            seen += count
            if index < seen:
                return values / count
        raise AssertionError("index beyond the histogram")  # pragma: no cover

    middle = total // 2
    median = value_at(middle) if total % 2 else (value_at(middle - 1) + value_at(middle)) / 2
    return round(median, 1), mean, total


def _reached(script: Script, stages: Sequence[StageRow], stage_id: str) -> int:
    row = next((s for s in stages if s.id == stage_id), None)
    if row is None:  # a script without that role in the funnel: the last stage buys
        row = stages[-1] if stages else None
    return row.reached if row else 0


def _segments(
    script: Script, values: Mapping[str | None, Counter[int | None]]
) -> tuple[Segment, ...]:
    result = []
    for key, counts in values.items():
        stages = _stage_rows(script, counts)
        leads = sum(counts.values())
        first = stages[0].reached if stages else 0
        conversion = percent(_reached(script, stages, script.roles.customer), first)
        result.append(Segment(key, leads, stages, conversion))
    result.sort(key=lambda s: (-s.leads, s.key is None, s.key or ""))
    return tuple(result)


def _churn_rows(
    script: Script, churn: Mapping[str, tuple[int, int, int, int]]
) -> tuple[ChurnRow, ...]:
    known = [*script.funnel_order, *(s.id for s in script.exit_stages)]
    order = [*known, *sorted(set(churn) - set(known))]
    titles = script.titles
    return tuple(
        ChurnRow(
            stage,
            titles.get(stage, stage),
            *churn[stage],
            percent(churn[stage][3], churn[stage][0]),
        )
        for stage in order
        if stage in churn
    )


def _question_title(script: Script, question_id: str) -> str:
    question = script.question(question_id)
    if question is None:
        return question_id
    # The marketer's text, without markup and placeholders, short enough for a table.
    plain = " ".join(visible_text(question.text).split())
    plain = plain.split("}.", 1)[-1].strip() if "{" in plain else plain
    return cut_plain(plain, 60)


def _questions(script: Script, tally: _Tally) -> tuple[QuestionRow, ...]:
    rows = []
    for n, question in enumerate(script.questions, 1):
        qid = question.id
        done, wait = tally.answered.get(qid, 0), tally.waiting.get(qid, 0)
        saw = done + wait
        rows.append(
            QuestionRow(qid, n, _question_title(script, qid), saw, done, wait, percent(done, saw))
        )
    return tuple(rows)


def _amount(value: Decimal | float | int | None) -> float:
    return round(float(value or 0), 2)


async def _money(
    session: AsyncSession,
    sql: _Sql,
    script: Script,
    period: Period,
    source: str | None,
    sources: Sequence[Segment],
) -> Money:
    revenue: dict[tuple[str, str], tuple[int, float, int]] = {}
    for src, currency, count, total, buyers in (
        await session.execute(*sql.statement(sql.purchases()))
    ).all():
        revenue[(src, currency)] = (int(count), _amount(total), int(buyers))
    spend_sql = sql.spend(period, source)
    spend: dict[tuple[str, str], float] = {
        (src, currency): _amount(total)
        for src, currency, total in (await session.execute(*sql.statement(spend_sql))).all()
    }
    currency = _main_currency(revenue, spend)
    histogram = [
        (float(b), int(n), float(s))
        for b, n, s in (
            await session.execute(*sql.statement(sql.first_purchase(), currency=currency))
        ).all()
    ]
    median_to_purchase, _, _ = median_from_histogram(histogram)

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
        qualified = _reached(script, segment.stages, script.roles.qualified)
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
                cost_per_lead=_ratio(cost, segment.leads) if cost is not None else None,
                cac=_ratio(cost, buyers) if cost is not None else None,
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
        average_check=_ratio(total, count),
        revenue_per_lead=_ratio(total, leads),
        median_seconds_to_first_purchase=median_to_purchase,
        spend=paid_spend,
        cost_per_lead=_ratio(paid_spend, paid_leads) if paid_spend is not None else None,
        cac=_ratio(paid_spend, paid_buyers) if paid_spend is not None else None,
        romi=percent(paid_revenue - paid_spend, paid_spend) if paid_spend is not None else None,
        other_revenue={k: round(v, 2) for k, v in sorted(other_revenue.items())},
        other_spend={k: round(v, 2) for k, v in sorted(other_spend.items())},
        by_source=tuple(per_source),
    )


def _main_currency(
    revenue: Mapping[tuple[str, str], tuple[int, float, int]],
    spend: Mapping[tuple[str, str], float],
) -> str:
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
