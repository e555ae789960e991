"""The report's SQL, per dialect: one pass over the stage log grouped per lead, the
questions' answered and waiting, purchases, spend and the time to the first purchase; or the
same counts from the rollups (all time, or a period's whole days, its ends from the log);
each read into plain counts (a Tally, Revenue, a histogram) for funnel_report.py."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import TextClause

from funnel.core.models import UTCDateTime
from funnel.reports import rollup, rollup_money
from funnel.reports.money import UNREFUNDED, Revenue, Spend, cents_sql, from_cents
from funnel.reports.periods import Period
from funnel.reports.rollup_sql import DaySpan, bucket_sql, seconds_sql
from funnel.script.schema import Script

Histogram = list[tuple[float, int, float]]


class ReportSql:
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
        # Test leads (/test_funnel) are in no report.
        conditions = ["NOT l.is_test"]
        if period.start is not None:
            conditions.append("l.created_at >= :start")
            self.params["start"] = period.start
        if period.end is not None:
            conditions.append("l.created_at < :end")
            self.params["end"] = period.end
        if source is not None:
            conditions.append("l.source = :source")
            self.params["source"] = source
        self.where = " AND ".join(conditions)

    def statement(self, sql: str, **extra: Any) -> tuple[TextClause, dict[str, Any]]:
        params = {**self.params, **extra}
        clause = text(sql)
        # Times are compared as the column type stores them (SQLite: a fixed text format).
        binds = [bindparam(name, type_=UTCDateTime()) for name in ("start", "end", "spend_start",
                 "spend_end") if name in params and f":{name}" in sql]  # fmt: skip
        if binds:
            clause = clause.bindparams(*binds)
        return clause, {k: v for k, v in params.items() if f":{k}" in sql}

    @property
    def cohort(self) -> str:
        """The report's leads as a condition on l.id. Grouped per l.id, SQLite would rather
        walk every lead in id order than take the few hours of a period's end from the
        created_at index (a million leads read for a hundred); picked by the subquery, they
        are looked up by id, and still come in id order."""
        return f"l.id IN (SELECT l.id FROM leads l WHERE {self.where})"

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
            WHERE {self.cohort}
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
            WHERE {self.cohort} AND a.question IN ({names})
            GROUP BY a.question"""

    def waiting(self) -> str:
        return f"""
            SELECT l.position, count(*) FROM leads l
            WHERE {self.where} AND l.position IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM answers a WHERE a.lead_id = l.id AND a.question = l.position)
            GROUP BY l.position"""

    def purchases(self) -> str:
        return f"""
            SELECT l.source, p.currency, count(*), sum({cents_sql("p.amount")}),
                   count(DISTINCT p.lead_id)
            FROM purchases p JOIN leads l ON l.id = p.lead_id
            WHERE {self.where} AND {UNREFUNDED}
            GROUP BY l.source, p.currency"""

    def first_purchase(self) -> str:
        seconds = self.seconds("created_at", "first_at")
        return f"""
            SELECT {bucket_sql("d")} AS b, count(*), sum(d) FROM (
                SELECT {seconds} AS d FROM (
                    SELECT l.created_at AS created_at, min(p.at) AS first_at
                    FROM purchases p JOIN leads l ON l.id = p.lead_id
                    WHERE {self.where} AND p.currency = :currency AND {UNREFUNDED}
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
            SELECT s.source, s.currency, sum({cents_sql("s.amount")}) FROM ad_spend s
            WHERE {" AND ".join(conditions)} GROUP BY s.source, s.currency"""


@dataclass
class Tally:
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

    def add(self, other: Tally) -> None:
        """Counts of other leads (another part of the period) added to these."""
        for dim, values in other.by_dim.items():
            for key, counts in values.items():
                self.by_dim[dim][key].update(counts)
        self.exited.update(other.exited)
        for stage, (n, opted, blocked, either) in other.churn.items():
            was = self.churn.get(stage, (0, 0, 0, 0))
            self.churn[stage] = (was[0] + n, was[1] + opted, was[2] + blocked, was[3] + either)
        for k, histogram in other.histograms.items():
            self.histograms[k] = merge_histograms(self.histograms.get(k, []), histogram)
        for question, n in other.answered.items():
            self.answered[question] = self.answered.get(question, 0) + n
        for question, n in other.waiting.items():
            self.waiting[question] = self.waiting.get(question, 0) + n


def merge_histograms(*histograms: Histogram) -> Histogram:
    """One row per bucket, as one query over all the leads would give: a bucket stands for
    the mean of its values, so two parts' rows of a bucket must become one."""
    merged: dict[float, tuple[int, float]] = {}
    for histogram in histograms:
        for bucket, n, seconds in histogram:
            count, total = merged.get(bucket, (0, 0.0))
            merged[bucket] = (count + n, total + seconds)
    return [(bucket, n, seconds) for bucket, (n, seconds) in sorted(merged.items())]


def add_revenue(one: Revenue, other: Revenue) -> Revenue:
    """Revenue of two disjoint sets of leads (customers are leads: they add up too)."""
    total = dict(one)
    for key, (count, money, buyers) in other.items():
        was = total.get(key, (0, from_cents(0), 0))
        total[key] = (was[0] + count, was[1] + money, was[2] + buyers)
    return total


async def tally_from_log(session: AsyncSession, sql: ReportSql, script: Script) -> Tally:
    tally = Tally()
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


async def tally_from_rollups(
    session: AsyncSession, script: Script, source: str | None, span: DaySpan | None = None
) -> Tally:
    """The same counts as `tally_from_log` over all leads (or the leads created in the whole
    days of `span`), from the trigger-kept rollups."""
    tally = Tally()
    daily = span is not None and not span.all_time
    if span is not None and span.no_days:
        return tally
    order = {stage: n for n, stage in enumerate(script.funnel_order)}
    exits = [s.id for s in script.exit_stages]
    churn: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    rows = (
        await rollup.read_daily_leads(session, source, span)
        if daily and span is not None
        else await rollup.read_leads(session, source)
    )
    # What a set of entered stages means for the report, worked out once per set.
    meaning: dict[tuple[str, ...], tuple[int | None, list[str]]] = {}
    for row in rows:
        known = meaning.get(row.entered)
        if known is None:
            known = meaning[row.entered] = (
                max((order[s] for s in row.entered if s in order), default=None),
                [stage for stage in exits if stage in row.entered],
            )
        furthest, exited = known
        for dim, key in (("source", row.source), ("temperature", row.temperature),
                         ("version", row.version)):  # fmt: skip
            tally.by_dim[dim][key][furthest] += row.leads
        for stage in exited:
            tally.exited[stage] += row.leads
        counts = churn[row.stage]
        counts[0] += row.leads
        counts[1] += row.leads if row.opted_out else 0
        counts[2] += row.leads if row.blocked else 0
        counts[3] += row.leads if row.opted_out or row.blocked else 0
    tally.churn = {stage: (n, a, b, c) for stage, (n, a, b, c) in churn.items()}
    pairs = list(itertools.pairwise(script.funnel_order))
    index = {pair: n for n, pair in enumerate(pairs, 1)}
    gaps = (
        await rollup.read_daily_gaps(session, source, pairs, span)
        if daily and span is not None
        else await rollup.read_gaps(session, source, pairs)
    )
    for gap in gaps:
        k = index[(gap.from_stage, gap.to_stage)]
        tally.histograms[k].append((float(gap.bucket), gap.leads, float(gap.seconds)))
    questions = {q.id for q in script.questions}
    answered, waiting = (
        await rollup.read_daily_questions(session, source, span)
        if daily and span is not None
        else await rollup.read_questions(session, source)
    )
    tally.answered = {q: n for q, n in answered.items() if q in questions and n}
    tally.waiting = {q: n for q, n in waiting.items() if n}
    return tally


async def read_revenue(session: AsyncSession, sql: ReportSql) -> Revenue:
    revenue: dict[tuple[str, str], tuple[int, Decimal, int]] = {}
    for src, currency, count, total, buyers in (
        await session.execute(*sql.statement(sql.purchases()))
    ).all():
        revenue[(src, currency)] = (int(count), from_cents(total), int(buyers))
    return revenue


async def read_spend(
    session: AsyncSession, sql: ReportSql, period: Period, source: str | None
) -> Spend:
    spend_sql = sql.spend(period, source)
    return {
        (src, currency): from_cents(total)
        for src, currency, total in (await session.execute(*sql.statement(spend_sql))).all()
    }


async def read_first_purchases(
    session: AsyncSession, sql: ReportSql, currency: str
) -> list[tuple[float, int, float]]:
    """The histogram of the time from a lead's creation to its first purchase in `currency`."""
    return [
        (float(b), int(n), float(s))
        for b, n, s in (
            await session.execute(*sql.statement(sql.first_purchase(), currency=currency))
        ).all()
    ]


# -- the report's reads: from the log, or from the rollups and the log of a period's ends -----


@dataclass(frozen=True)
class Reads:
    """Where a report's counts come from: the rollups over `span` (None: the log only) and
    the log of the leads created in each of `parts`."""

    span: DaySpan | None
    parts: tuple[ReportSql, ...]
    source: str | None

    @classmethod
    def plan(
        cls,
        dialect: str,
        script: Script,
        period: Period,
        source: str | None,
        from_log: bool = False,
    ) -> Reads:
        if from_log or not rollup.supported(dialect):
            return cls(None, (ReportSql(dialect, script, period, source),), source)
        span = DaySpan.of(period)
        parts = tuple(ReportSql(dialect, script, part, source) for part in span.rest)
        return cls(span, parts, source)

    @property
    def rollups(self) -> DaySpan | None:
        """The span the rollups answer, None when they answer nothing."""
        return None if self.span is None or self.span.no_days else self.span

    async def tally(self, session: AsyncSession, script: Script) -> Tally:
        span = self.rollups
        tally = Tally()
        if span is not None:
            tally = await tally_from_rollups(session, script, self.source, span)
        for part in self.parts:
            tally.add(await tally_from_log(session, part, script))
        return tally

    async def revenue(self, session: AsyncSession) -> Revenue:
        span = self.rollups
        revenue: Revenue = {}
        if span is not None:
            revenue = await rollup_money.read_revenue(session, self.source, span)
        for part in self.parts:
            revenue = add_revenue(revenue, await read_revenue(session, part))
        return revenue

    async def first_purchases(self, session: AsyncSession, currency: str) -> Histogram:
        span = self.rollups
        histograms = []
        if span is not None:
            histograms.append(
                await rollup_money.read_first_purchases(session, self.source, span, currency)
            )
        for part in self.parts:
            histograms.append(await read_first_purchases(session, part, currency))
        return merge_histograms(*histograms)
