"""Leads as a CSV file for Excel and Google Sheets: UTF-8 with a BOM (Cyrillic opens
correctly), quoting by the csv module, and no cell Excel would run as a formula. The header
and the worded cells come from the caller (`CsvLabels`, in the school's language): the domain
holds no words of the bot's own."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Answer, Lead, Purchase
from funnel.reports.periods import Period
from funnel.script.schema import Script

__all__ = ["CsvLabels", "export_leads_csv", "safe_cell"]

BOM = "\ufeff"
# Excel treats a cell starting with these as a formula (or DDE command); tab and CR too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class CsvLabels:
    """The header's column names and the words written in cells, in one language."""

    created: str
    stage: str
    source: str
    temperature: str
    score: str
    revenue: str
    stage_changed: str
    opted_out: str
    blocked: str
    forgotten: str
    yes: str
    # A lead's temperature ("hot", "warm", "cold") as a word; an unknown one is left blank.
    temperatures: Mapping[str, str]


def safe_cell(value: str) -> str:
    """A text cell that no spreadsheet evaluates: a leading apostrophe disarms formulas."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


async def export_leads_csv(
    session: AsyncSession,
    script: Script,
    period: Period,
    now: datetime,
    *,
    labels: CsvLabels,
    delimiter: str = ";",
) -> bytes:
    """One row per lead created in `period`, oldest first; times in UTC.

    The semicolon is what Excel expects in Russian locales; Google Sheets detects either.
    Forgotten leads stay as rows (they count in the funnel) without their answers.
    """
    query = select(Lead).where(Lead.is_test.is_(False)).order_by(Lead.id)
    if period.start is not None:
        query = query.where(Lead.created_at >= period.start)
    if period.end is not None:
        query = query.where(Lead.created_at < period.end)
    leads = list((await session.scalars(query)).all())
    ids = [lead.id for lead in leads]
    answers: dict[int, dict[str, Answer]] = defaultdict(dict)
    revenue: dict[int, float] = {}
    # Chunks keep the IN lists under SQLite's parameter limit.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = await session.scalars(
            select(Answer)
            .where(Answer.lead_id.in_(chunk), Answer.superseded.is_(False), Answer.at <= now)
            .order_by(Answer.id)
        )
        for given in rows:
            answers[given.lead_id][given.question] = given  # the latest wins
        sums = await session.execute(
            select(Purchase.lead_id, func.sum(Purchase.amount))
            .where(Purchase.lead_id.in_(chunk))
            .group_by(Purchase.lead_id)
        )
        revenue.update({lead_id: float(total or 0) for lead_id, total in sums.all()})

    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    header = ["id", labels.created, labels.stage, labels.source, labels.temperature, labels.score]
    header += [f"{n}. {q.id}" for n, q in enumerate(script.questions, 1)]
    header += [labels.revenue, labels.stage_changed, labels.opted_out, labels.blocked]
    header.append(labels.forgotten)
    writer.writerow(header)
    titles = script.titles
    for lead in leads:
        forgotten = lead.deleted_at is not None
        row = [
            str(lead.id),
            _when(lead.created_at),
            safe_cell(titles.get(lead.stage, lead.stage)),
            safe_cell(lead.source or ""),
            labels.temperatures.get(lead.temperature or "", ""),
            str(lead.score),
        ]
        for question in script.questions:
            answer = None if forgotten else answers[lead.id].get(question.id)
            row.append(safe_cell(_answer_text(script, question.id, answer)))
        row += [
            f"{revenue.get(lead.id, 0.0):.2f}",
            _when(lead.stage_changed_at),
            _when(lead.opted_out_at),
            _when(lead.blocked_at),
            labels.yes if forgotten else "",
        ]
        writer.writerow(row)
    return (BOM + out.getvalue()).encode("utf-8")


def _answer_text(script: Script, question_id: str, answer: Answer | None) -> str:
    if answer is None:
        return ""
    question = script.question(question_id)
    option = question.option(answer.option) if question and answer.option else None
    # A button answer shows the label the lead tapped; a typed one shows the text.
    return option.label if option else (answer.value or "")
