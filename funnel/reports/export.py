"""The owner's numbers as files: an .xlsx workbook (a sheet per part of the report: leads,
funnel stages, sources, campaigns, purchases) with typed cells, and the leads as CSV for
Google Sheets and Excel.

Cells are typed: counts and sums are numbers (money with its currency's sign in the number
format), times are real dates in the school's zone, shares are percentages. What people typed
never becomes a formula: in the workbook it is stored as a string, in the CSV it gets a
leading apostrophe. A lead who asked to be forgotten stays a row (they count in the funnel)
without name, username, link or answers. Every word (headers, sheet names, temperatures)
comes from the caller (`ExportLabels`, in the school's language): the domain holds none."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Answer, Lead, Purchase
from funnel.core.telegram_text import plain_name
from funnel.reports.campaign_effect import CampaignReport, campaign_report
from funnel.reports.figures import FunnelReport
from funnel.reports.funnel_report import funnel_report
from funnel.reports.money import DEFAULT_CURRENCY
from funnel.reports.periods import Period
from funnel.script.schema import Script

__all__ = [
    "FORMATS",
    "Column",
    "ExportLabels",
    "Sheet",
    "build_sheets",
    "export_file",
    "render",
    "safe_cell",
    "to_csv",
    "to_xlsx",
]

BOM = "\ufeff"
# A spreadsheet treats a cell starting with these as a formula (or a DDE command).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMATS = ("xlsx", "csv")
Format = str  # one of FORMATS
# Chunks keep the IN lists under SQLite's parameter limit.
CHUNK = 500
# Column widths in characters: wide enough for the header and most values, never a screen.
MIN_WIDTH, MAX_WIDTH = 6, 48
# How the workbook writes a sum of money in each currency (the app shows it its own way:
# a Russian Excel groups digits with spaces).
SIGNS = {"RUB": "₽", "USD": "$", "EUR": "€", "KZT": "₸", "UAH": "₴", "BYN": "Br", "XTR": "⭐"}

Kind = Literal["int", "text", "user_text", "money", "percent", "datetime", "hours", "link"]


@dataclass(frozen=True)
class ExportLabels:
    """The words of the files, in one language: column titles and sheet names by key, the
    temperatures, and how the CSV is written for that language's spreadsheets."""

    columns: Mapping[str, str]
    sheets: Mapping[str, str]
    temperatures: Mapping[str, str]
    yes: str
    forgotten: str  # what stands for the name of a lead who asked to be forgotten
    # Russian Excel reads "13800,5" with a semicolon between cells; English "13800.5" and ","
    delimiter: str = ";"
    decimal_mark: str = ","


@dataclass(frozen=True)
class Column:
    key: str
    kind: Kind
    # The title when it is not a label (a question's title from the script).
    title: str | None = None
    currency: str = DEFAULT_CURRENCY


@dataclass
class Sheet:
    key: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    # Columns kept in view while scrolling right (the lead's number).
    frozen_columns: int = 0


def safe_cell(value: str) -> str:
    """A text cell that no spreadsheet evaluates: a leading apostrophe disarms formulas."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _local(moment: datetime | None, zone: ZoneInfo) -> datetime | None:
    """A stored UTC time as the school's wall-clock time (spreadsheets have no zones)."""
    return moment.astimezone(zone).replace(tzinfo=None) if moment is not None else None


def _money(value: Any) -> Decimal:
    """A sum as Decimal, whatever the column hands back (Decimal, float, int or None)."""
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _share(value: float | None) -> Decimal | None:
    """A report's percent (0–100) as the fraction a percent-formatted cell holds."""
    return None if value is None else Decimal(str(value)) / 100


def _hours(seconds: float | None) -> Decimal | None:
    return None if seconds is None else (Decimal(str(seconds)) / 3600).quantize(Decimal("0.01"))


def _name(lead: Lead) -> str:
    """First and last name as people see them: no invisible or control characters."""
    return plain_name(" ".join(p for p in (lead.first_name, lead.last_name) if p), 260)


def _link(lead: Lead) -> str:
    """A link that opens the chat with the lead: t.me for a public username, else the app's
    own link by user id."""
    if lead.username:
        return f"https://t.me/{lead.username}"
    return f"tg://user?id={lead.user_id}" if lead.user_id is not None else ""


def _answer_text(script: Script, question_id: str, answer: Answer | None) -> str:
    if answer is None:
        return ""
    question = script.question(question_id)
    option = question.option(answer.option) if question and answer.option else None
    # A button answer shows the label the lead tapped; a typed one shows the text.
    return option.label if option else (answer.value or "")


def _main_currency(purchases: Sequence[Purchase]) -> str:
    """The most used currency of the purchases; RUB when there are none, and on a tie."""
    counts = Counter(p.currency for p in purchases)
    if not counts:
        return DEFAULT_CURRENCY
    best = max(counts.values())
    tied = sorted(c for c, n in counts.items() if n == best)
    return DEFAULT_CURRENCY if DEFAULT_CURRENCY in tied else tied[0]


async def _leads(session: AsyncSession, period: Period) -> list[Lead]:
    # Test runs (/test_funnel) are in no report and no export.
    query = select(Lead).where(Lead.is_test.is_(False)).order_by(Lead.id)
    if period.start is not None:
        query = query.where(Lead.created_at >= period.start)
    if period.end is not None:
        query = query.where(Lead.created_at < period.end)
    return list((await session.scalars(query)).all())


async def _answers(session: AsyncSession, ids: Sequence[int]) -> dict[int, dict[str, Answer]]:
    """Each lead's current answer per question. Every stored answer counts, whatever its
    time: a clock that ran ahead of this one (a demo, a scaled trial) loses nothing."""
    found: dict[int, dict[str, Answer]] = defaultdict(dict)
    for start in range(0, len(ids), CHUNK):
        rows = await session.scalars(
            select(Answer)
            .where(Answer.lead_id.in_(ids[start : start + CHUNK]), Answer.superseded.is_(False))
            .order_by(Answer.id)
        )
        for given in rows:
            found[given.lead_id][given.question] = given  # the latest wins
    return found


async def _purchases(session: AsyncSession, ids: Sequence[int]) -> dict[int, list[Purchase]]:
    found: dict[int, list[Purchase]] = defaultdict(list)
    for start in range(0, len(ids), CHUNK):
        rows = await session.scalars(
            select(Purchase)
            .where(Purchase.lead_id.in_(ids[start : start + CHUNK]))
            # A refunded purchase is no longer the lead's money (the purchases sheet keeps it).
            .where(Purchase.refunded_at.is_(None))
            .order_by(Purchase.at, Purchase.id)
        )
        for purchase in rows:
            found[purchase.lead_id].append(purchase)
    return found


def _lead_sheet(
    script: Script,
    leads: Sequence[Lead],
    answers: Mapping[int, Mapping[str, Answer]],
    purchases: Mapping[int, Sequence[Purchase]],
    question_titles: Mapping[str, str],
    labels: ExportLabels,
    zone: ZoneInfo,
) -> Sheet:
    currency = _main_currency([p for bought in purchases.values() for p in bought])
    columns = [
        Column("lead", "int"),
        Column("name", "user_text"),
        Column("username", "user_text"),
        Column("link", "link"),
        Column("source", "user_text"),
        Column("stage", "text"),
        Column("temperature", "text"),
        Column("score", "int"),
        *(
            Column(f"answer:{q.id}", "user_text", title=question_titles.get(q.id, q.id))
            for q in script.questions
        ),
        Column("purchases", "int"),
        Column("revenue", "money", currency=currency),
        Column("other_revenue", "text"),
        Column("created", "datetime"),
        Column("stage_changed", "datetime"),
        Column("last_inbound", "datetime"),
        Column("opted_out", "datetime"),
        Column("blocked", "datetime"),
        Column("forgotten", "text"),
    ]
    sheet = Sheet("leads", columns, frozen_columns=1)
    titles = script.titles
    for lead in leads:
        forgotten = lead.deleted_at is not None
        bought = purchases.get(lead.id, [])
        main = sum((_money(p.amount) for p in bought if p.currency == currency), Decimal(0))
        others: dict[str, Decimal] = defaultdict(Decimal)
        for p in bought:
            if p.currency != currency:
                others[p.currency] += _money(p.amount)
        name = _name(lead)
        row: list[Any] = [
            lead.id,
            labels.forgotten if forgotten else name,
            "" if forgotten or not lead.username else "@" + lead.username,
            "" if forgotten else _link(lead),
            lead.source or "",
            titles.get(lead.stage, lead.stage),
            labels.temperatures.get(lead.temperature or "", ""),
            lead.score,
        ]
        for question in script.questions:
            given = None if forgotten else answers.get(lead.id, {}).get(question.id)
            row.append(_answer_text(script, question.id, given))
        row += [
            len(bought),
            main,
            ", ".join(f"{amount} {cur}" for cur, amount in sorted(others.items())),
            _local(lead.created_at, zone),
            _local(lead.stage_changed_at, zone),
            _local(lead.last_inbound_at, zone),
            _local(lead.opted_out_at, zone),
            _local(lead.blocked_at, zone),
            labels.yes if forgotten else "",
        ]
        sheet.rows.append(row)
    # Purchases in another currency than the main one are rare: their column only when any.
    other = next(i for i, c in enumerate(columns) if c.key == "other_revenue")
    if not any(row[other] for row in sheet.rows):
        _drop_column(sheet, "other_revenue")
    return sheet


def _drop_column(sheet: Sheet, key: str) -> None:
    index = next(i for i, c in enumerate(sheet.columns) if c.key == key)
    del sheet.columns[index]
    for row in sheet.rows:
        del row[index]


def _stage_sheet(report: FunnelReport) -> Sheet:
    sheet = Sheet(
        "stages",
        [
            Column("stage", "text"),
            Column("reached", "int"),
            Column("from_previous", "percent"),
            Column("from_first", "percent"),
            Column("dropped", "int"),
            Column("median_hours", "hours"),
            Column("mean_hours", "hours"),
        ],
    )
    for s in report.stages:
        sheet.rows.append(
            [
                s.title,
                s.reached,
                _share(s.conversion_from_previous) if s.dropped is not None else None,
                _share(s.conversion_from_first),
                s.dropped,
                _hours(s.median_seconds_from_previous),
                _hours(s.mean_seconds_from_previous),
            ]
        )
    for e in report.exited:
        sheet.rows.append([e.title, e.leads, None, _share(e.share), None, None, None])
    return sheet


def _source_sheet(report: FunnelReport) -> Sheet:
    currency = report.money.currency
    sheet = Sheet(
        "sources",
        [
            Column("source", "user_text"),
            Column("leads", "int"),
            Column("qualified", "int"),
            Column("customers", "int"),
            Column("conversion", "percent"),
            Column("purchases", "int"),
            Column("revenue", "money", currency=currency),
            Column("spend", "money", currency=currency),
            Column("cost_per_lead", "money", currency=currency),
            Column("cac", "money", currency=currency),
            Column("romi", "percent"),
        ],
    )
    for s in report.money.by_source:
        sheet.rows.append(
            [
                s.source,
                s.leads,
                s.qualified,
                s.customers,
                _share(s.conversion),
                s.purchases,
                _money(s.revenue),
                None if s.spend is None else _money(s.spend),
                None if s.cost_per_lead is None else _money(s.cost_per_lead),
                None if s.cac is None else _money(s.cac),
                _share(s.romi),
            ]
        )
    return sheet


def _campaign_sheet(report: CampaignReport) -> Sheet:
    sheet = Sheet(
        "campaigns",
        [
            Column("campaign", "text"),
            Column("kind", "text"),
            Column("step", "int"),
            Column("after_hours", "hours"),
            Column("total", "int"),
            Column("waiting", "int"),
            Column("sent", "int"),
            Column("postponed", "int"),
            Column("cancelled", "int"),
            Column("failed", "int"),
            Column("unknown", "int"),
            Column("replied", "int"),
            Column("replied_share", "percent"),
            Column("advanced", "int"),
            Column("advanced_share", "percent"),
        ],
    )
    for campaign in report.campaigns:
        for step in campaign.steps:
            sent = Decimal(step.sent)
            sheet.rows.append(
                [
                    campaign.title,
                    campaign.kind,
                    step.step,
                    _hours(step.after / timedelta(seconds=1)),
                    step.total,
                    step.planned + step.sending,
                    step.sent,
                    step.postponed,
                    step.cancelled_total,
                    step.failed,
                    step.unknown,
                    step.replied,
                    Decimal(step.replied) / sent if sent else None,
                    step.advanced,
                    Decimal(step.advanced) / sent if sent else None,
                ]
            )
    return sheet


async def _purchase_sheet(
    session: AsyncSession, period: Period, labels: ExportLabels, zone: ZoneInfo
) -> Sheet:
    """Every purchase made in the period, whoever the lead: the sheet to reconcile with the
    bank, so a refunded one stays, with the time of its refund."""
    query = (
        select(Purchase, Lead)
        .join(Lead, Lead.id == Purchase.lead_id)
        .where(Lead.is_test.is_(False))
    )
    if period.start is not None:
        query = query.where(Purchase.at >= period.start)
    if period.end is not None:
        query = query.where(Purchase.at < period.end)
    rows = (await session.execute(query.order_by(Purchase.at, Purchase.id))).all()
    currency = _main_currency([p for p, _ in rows])
    sheet = Sheet(
        "purchases",
        [
            Column("purchase", "int"),
            Column("paid_at", "datetime"),
            Column("lead", "int"),
            Column("name", "user_text"),
            Column("source", "user_text"),
            Column("amount", "money", currency=currency),
            Column("currency", "text"),
            Column("refunded_at", "datetime"),
        ],
    )
    for purchase, lead in rows:
        forgotten = lead.deleted_at is not None
        name = _name(lead)
        sheet.rows.append(
            [
                purchase.id,
                _local(purchase.at, zone),
                lead.id,
                labels.forgotten if forgotten else name,
                lead.source or "",
                _money(purchase.amount),
                purchase.currency,
                _local(purchase.refunded_at, zone) if purchase.refunded_at else None,
            ]
        )
    return sheet


async def build_sheets(
    session: AsyncSession,
    script: Script,
    period: Period,
    now: datetime,
    *,
    zone: ZoneInfo,
    labels: ExportLabels,
) -> list[Sheet]:
    """Every part of the export: the leads created in `period`, the funnel report's stages
    and sources for it, the campaigns' effect as of `now` (the funnel's clock) and the
    purchases made in `period`."""
    report = await funnel_report(session, script, now=now, period=period)
    leads = await _leads(session, period)
    ids = [lead.id for lead in leads]
    question_titles = {q.id: q.title for q in report.questions}
    sheets = [
        _lead_sheet(
            script,
            leads,
            await _answers(session, ids),
            await _purchases(session, ids),
            question_titles,
            labels,
            zone,
        ),
        _stage_sheet(report),
        _source_sheet(report),
        _campaign_sheet(await campaign_report(session, script, now)),
        await _purchase_sheet(session, period, labels, zone),
    ]
    return sheets


def _title(column: Column, labels: ExportLabels) -> str:
    return column.title if column.title is not None else labels.columns.get(column.key, column.key)


def _sheet_name(key: str, labels: ExportLabels, taken: set[str]) -> str:
    """A name Excel accepts: at most 31 characters, none of []:*?/\\, unique."""
    name = "".join(c for c in labels.sheets.get(key, key) if c not in "[]:*?/\\")[:31] or key
    while name in taken:
        name = name[:28] + f"_{len(taken)}"
    taken.add(name)
    return name


def _money_format(currency: str, cents: bool) -> str:
    sign = SIGNS.get(currency, currency).replace('"', "")
    return ("#,##0.00" if cents else "#,##0") + f' "{sign}"'


def to_xlsx(sheets: Sequence[Sheet], labels: ExportLabels) -> bytes:
    """The workbook: a sheet per part, bold frozen header with filters, typed cells, widths
    fitted to the content."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    book = Workbook()
    book.remove(book.active)
    taken: set[str] = set()
    bold = Font(bold=True)
    for sheet in sheets:
        ws = book.create_sheet(_sheet_name(sheet.key, labels, taken))
        widths = [len(_title(c, labels)) for c in sheet.columns]
        ws.append([_title(c, labels) for c in sheet.columns])
        for cell in ws[1]:
            cell.font = bold
            # A marketer's question may start with "-" or "=": a header is text too.
            cell.data_type = "s"
        for r, row in enumerate(sheet.rows, start=2):
            for c, (column, value) in enumerate(zip(sheet.columns, row, strict=True), start=1):
                cell = ws.cell(row=r, column=c)
                if value is None or value == "":
                    continue
                _fill(cell, column, value)
                widths[c - 1] = max(widths[c - 1], _shown_width(column, value))
        for c, width in enumerate(widths, start=1):
            ws.column_dimensions[get_column_letter(c)].width = min(
                max(width + 2, MIN_WIDTH), MAX_WIDTH
            )
        ws.freeze_panes = ws.cell(row=2, column=sheet.frozen_columns + 1)
        if sheet.columns:
            ws.auto_filter.ref = f"A1:{get_column_letter(len(sheet.columns))}{len(sheet.rows) + 1}"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _fill(cell: Any, column: Column, value: Any) -> None:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if column.kind in ("text", "user_text"):
        # Control characters (a name with a bell in it) are not allowed in the file format.
        cell.value = ILLEGAL_CHARACTERS_RE.sub("", str(value))
        # Stored as a string whatever it starts with: "=HYPERLINK(...)" typed by a lead
        # stays the text it is.
        cell.data_type = "s"
    elif column.kind == "link":
        cell.value = str(value)
        cell.data_type = "s"
        cell.hyperlink = str(value)
        cell.style = "Hyperlink"
    elif column.kind == "int":
        cell.value = int(value)
    elif column.kind == "money":
        amount = _money(value)
        cell.value = amount
        cell.number_format = _money_format(column.currency, amount != amount.to_integral_value())
    elif column.kind == "percent":
        cell.value = value
        cell.number_format = "0.0%"
    elif column.kind == "hours":
        cell.value = value
        cell.number_format = "0.0"
    elif column.kind == "datetime":
        cell.value = value
        cell.number_format = "yyyy-mm-dd hh:mm"


def _shown_width(column: Column, value: Any) -> int:
    if column.kind == "datetime":
        return 16
    if column.kind == "money":
        return len(f"{_money(value):,.0f}") + 3
    if column.kind == "percent":
        return 6
    return max((len(line) for line in str(value).splitlines()), default=0)


def _csv_value(column: Column, value: Any, labels: ExportLabels) -> str:
    if value is None or value == "":
        return ""
    if column.key == "username":
        # "@name" would start with a formula character: a CSV writes the bare username
        # (Telegram allows only letters, digits and "_" in it), the workbook "@name".
        return safe_cell(str(value).removeprefix("@"))
    if column.kind in ("text", "user_text", "link"):
        return safe_cell(str(value))
    if column.kind == "datetime":
        return value.strftime("%Y-%m-%d %H:%M")
    if column.kind == "int":
        return str(int(value))
    number = _money(value)
    if column.kind == "percent":
        number = number * 100
    if column.kind in ("money", "percent", "hours"):
        # Whole sums as they are; cents with the language's decimal mark, no grouping: a
        # spreadsheet of that language reads it as a number.
        text = f"{number:.0f}" if number == number.to_integral_value() else f"{number:.2f}"
        return text.replace(".", labels.decimal_mark)
    return str(value)


def to_csv(sheet: Sheet, labels: ExportLabels) -> bytes:
    """One sheet as CSV: UTF-8 with a BOM (Excel then reads Cyrillic right; Google Sheets
    ignores it), the language's delimiter and decimal mark, times in the school's zone."""
    out = io.StringIO()
    writer = csv.writer(
        out, delimiter=labels.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n"
    )
    writer.writerow([safe_cell(_title(c, labels)) for c in sheet.columns])
    for row in sheet.rows:
        writer.writerow(
            [_csv_value(c, v, labels) for c, v in zip(sheet.columns, row, strict=True)]
        )
    return (BOM + out.getvalue()).encode("utf-8")


async def export_file(
    session: AsyncSession,
    script: Script,
    period: Period,
    now: datetime,
    *,
    zone: ZoneInfo,
    labels: ExportLabels,
    fmt: Format = "xlsx",
) -> bytes:
    """The export as one file: the workbook with every part, or the leads as CSV."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    sheets = await build_sheets(session, script, period, now, zone=zone, labels=labels)
    return render(sheets, labels, fmt)


def render(sheets: Sequence[Sheet], labels: ExportLabels, fmt: Format) -> bytes:
    """The file of `sheets`: the workbook with every part, or the leads (the first) as CSV.
    Pure computation on plain data: a bot runs it in a thread."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    return to_xlsx(sheets, labels) if fmt == "xlsx" else to_csv(sheets[0], labels)
