"""The owner's funnel report, aggregated in SQL from the stage log: reach and conversion per
stage, time between stages, breakdowns, question drop-off, money and churn. The report takes
the same counts from the rollups the database keeps (funnel/reports/rollup.py): all time, or
a period's whole days, so it costs about the same for a thousand leads or a million.

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

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.clock import as_utc
from funnel.core.telegram_text import cut_plain, visible_text
from funnel.reports.arithmetic import leads_reached, median_from_histogram, percent
from funnel.reports.figures import (
    ChurnRow,
    ExitRow,
    FunnelReport,
    QuestionRow,
    Segment,
    SourceSegment,
    StageRow,
    TemperatureSegment,
    Totals,
    VersionSegment,
)
from funnel.reports.money import main_currency, money_figures
from funnel.reports.periods import Period
from funnel.reports.report_sql import Reads, ReportSql, Tally, read_spend
from funnel.script.schema import Script

# The breakdowns, each by the column the tally groups on.
SEGMENTS: dict[str, type[Segment]] = {
    "source": SourceSegment,
    "temperature": TemperatureSegment,
    "version": VersionSegment,
}


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

    It reads the rollups the database keeps (funnel/reports/rollup.py) where it has them: the
    all-time ones, or the daily ones for the whole UTC days of a period, and the log of the
    leads created in the hours its ends cut out of a day. `from_log` always reads the log
    (the tests hold the two equal).
    """
    dialect = session.get_bind().dialect.name
    sql = ReportSql(dialect, script, period, source)
    reads = Reads.plan(dialect, script, period, source, from_log)
    tally = await reads.tally(session, script)
    by_dim, exited, churn = tally.by_dim, tally.exited, tally.churn

    overall: Counter[int | None] = Counter()
    for counts in by_dim["source"].values():
        overall.update(counts)
    stages = _stage_rows(script, overall, tally.histograms)
    leads = sum(overall.values())
    first = stages[0].reached if stages else 0
    customers = leads_reached(stages, script.roles.customer)
    segments = {dim: _segments(script, by_dim[dim], kind) for dim, kind in SEGMENTS.items()}
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
    revenue = await reads.revenue(session)
    spend = await read_spend(session, sql, period, source)
    currency = main_currency(revenue, spend)
    histogram = await reads.first_purchases(session, currency)
    median_to_purchase, _, _ = median_from_histogram(histogram)
    money = money_figures(script, segments["source"], revenue, spend, currency, median_to_purchase)
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


def _segments(
    script: Script, values: Mapping[str | None, Counter[int | None]], kind: type[Segment]
) -> tuple[Segment, ...]:
    result = []
    for key, counts in values.items():
        stages = _stage_rows(script, counts)
        leads = sum(counts.values())
        first = stages[0].reached if stages else 0
        conversion = percent(leads_reached(stages, script.roles.customer), first)
        result.append(kind(key=key, leads=leads, overall_conversion=conversion, stages=stages))
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


def _questions(script: Script, tally: Tally) -> tuple[QuestionRow, ...]:
    rows = []
    for n, question in enumerate(script.questions, 1):
        qid = question.id
        done, wait = tally.answered.get(qid, 0), tally.waiting.get(qid, 0)
        saw = done + wait
        rows.append(
            QuestionRow(qid, n, _question_title(script, qid), saw, done, wait, percent(done, saw))
        )
    return tuple(rows)
