"""The export: an .xlsx workbook read back with openpyxl (typed numbers, money with its sign in
the number format, real dates in the school's zone, a frozen header, a sheet per part) and the
leads as CSV for Google Sheets and Excel; nothing is lost to the clock, forgotten leads are
anonymous, and no cell typed by a lead becomes a formula."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.models import Answer, Lead
from funnel.reports.export import (
    build_sheets,
    export_file,
    safe_cell,
    to_csv,
)
from funnel.reports.periods import parse_period
from funnel.script.schema import Script
from handlers.views.export import export_labels
from tests.engines import ENGINE
from tests.test_analytics import NOW, Builder, make_script

MOSCOW = ZoneInfo("Europe/Moscow")


def test_safe_cell() -> None:
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    for start in "+-@\t\r":
        assert safe_cell(start + "x").startswith("'")
    assert safe_cell("обычный текст") == "обычный текст"
    assert safe_cell("") == ""


async def export(
    sessions: async_sessionmaker[AsyncSession],
    script: Script,
    fmt: str,
    *,
    period: str = "all",
    lang: str = "ru",
    now: datetime = NOW,
) -> bytes:
    async with sessions() as session:
        return await export_file(
            session, script, parse_period(period, now, tz=MOSCOW), now, zone=MOSCOW,
            labels=export_labels(lang, MOSCOW.key), fmt=fmt,
        )  # fmt: skip


def workbook(data: bytes) -> Any:
    return load_workbook(io.BytesIO(data))


def records(sheet: Any) -> list[dict[str, Any]]:
    """The sheet's rows as {header: cell}, cells themselves (to check their types)."""
    rows = list(sheet.iter_rows())
    header = [c.value for c in rows[0]]
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


async def school(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """Anna (hot, a purchase with kopecks, a source that is a formula), a forgotten lead, a
    lead without a username whose answer is a formula, and one created long ago."""
    b = Builder()
    anna = b.lead(
        [("new", 0), ("engaged", 10), ("qualified", 600), ("customer", 86400)],
        source="=cmd|' /C calc'!A0", temperature="hot",
    )  # fmt: skip
    b.answer(anna, "need", "career", "career", score=30)
    b.answer(anna, "timing", None, 'Через "месяц"; может, раньше\nили позже')
    b.answer(anna, "budget", "ok", "ok", score=30)
    b.purchase(anna, Decimal("6900.50"))  # type: ignore[arg-type]
    b.purchase(anna, Decimal("13800"))  # type: ignore[arg-type]
    gone = b.lead([("new", 0), ("engaged", 5)], deleted=True, source="blog")
    b.answer(gone, "need", None, "секрет")
    b.purchase(gone, Decimal("41400"))  # type: ignore[arg-type]
    ivan = b.lead([("new", 0)], source="ads", opted_out=True)
    b.answer(ivan, "need", "fun", "fun")  # the option label "=Просто так" is a formula too
    b.ad_spend("ads", Decimal("5000"))  # type: ignore[arg-type]
    b.lead([("new", 0)], created=NOW - timedelta(days=60))
    await b.save(sessions)
    async with sessions() as session, session.begin():
        await session.execute(
            update(Lead).where(Lead.id == anna).values(last_name="Петрова", username="anna_p")
        )
        # The demo's clock ran a month ahead of this one: these answers are "in the future",
        # and the old export lost every one of them.
        await session.execute(
            update(Answer).where(Answer.lead_id == anna, Answer.question == "budget")
            .values(at=NOW + timedelta(days=30))
        )  # fmt: skip
    return {"anna": anna, "gone": gone, "ivan": ivan}


async def test_the_workbook_has_typed_cells(sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await school(sessions)
    book = workbook(await export(sessions, make_script(), "xlsx", period="30d"))
    assert book.sheetnames == ["Лиды", "Этапы воронки", "Источники", "Кампании", "Покупки"]
    leads = book["Лиды"]
    assert leads.freeze_panes == "B2"  # header and lead number stay in view
    assert all(cell.font.bold for cell in leads[1])
    assert leads.column_dimensions["B"].width >= len("Лид1 Петрова")
    header = [c.value for c in leads[1]]
    assert header[:8] == ["Лид №", "Имя", "Username", "Ссылка в Telegram", "Источник", "Этап",
                          "Температура", "Баллы"]  # fmt: skip
    # Answers under the questions' titles, as the owner reads them, not "1. need".
    assert header[8:11] == ["Зачем?", "Когда?", "Бюджет?"]
    assert "Создан (Europe/Moscow)" in header and "Покупок" in header
    rows = records(leads)
    assert len(rows) == 3
    anna = rows[0]
    assert anna["Лид №"].value == ids["anna"] and anna["Лид №"].data_type == "n"
    assert anna["Имя"].value == "Лид1 Петрова" and anna["Username"].value == "@anna_p"
    assert anna["Ссылка в Telegram"].value == "https://t.me/anna_p"
    assert anna["Ссылка в Telegram"].hyperlink.target == "https://t.me/anna_p"
    assert anna["Этап"].value == "Оплатил <&>" and anna["Температура"].value == "горячий"
    assert anna["Зачем?"].value == "Сменить профессию"
    assert anna["Когда?"].value == 'Через "месяц"; может, раньше\nили позже'
    assert anna["Бюджет?"].value == "Есть"  # recorded "after" now: still there
    # A lead's text that looks like a formula is stored as the text it is.
    assert anna["Источник"].value == "=cmd|' /C calc'!A0" and anna["Источник"].data_type == "s"
    assert anna["Покупок"].value == 2 and anna["Покупок"].data_type == "n"
    revenue = anna["Выручка"]
    assert revenue.data_type == "n" and Decimal(str(revenue.value)) == Decimal("20700.5")
    assert "₽" in revenue.number_format and "#,##0" in revenue.number_format
    created = anna["Создан (Europe/Moscow)"].value
    # Stored at 12:00 UTC: the school reads 15:00, Moscow time.
    assert isinstance(created, datetime) and created == datetime(2026, 2, 28, 15, 0)
    assert anna["Создан (Europe/Moscow)"].is_date
    ivan = rows[2]
    assert ivan["Зачем?"].value == "=Просто так" and ivan["Зачем?"].data_type == "s"
    assert ivan["Ссылка в Telegram"].value == f"tg://user?id={10_000 + ids['ivan']}"
    assert isinstance(ivan["Отписался (Europe/Moscow)"].value, datetime)
    assert ivan["Выручка"].value == 0 and ivan["Покупок"].value == 0


async def test_forgotten_leads_are_anonymous(sessions: async_sessionmaker[AsyncSession]) -> None:
    ids = await school(sessions)
    data = await export(sessions, make_script(), "xlsx")
    book = workbook(data)
    gone = next(r for r in records(book["Лиды"]) if r["Лид №"].value == ids["gone"])
    assert gone["Имя"].value == "(данные удалены)" and gone["Данные удалены"].value == "да"
    assert gone["Username"].value is None and gone["Ссылка в Telegram"].value is None
    assert gone["Зачем?"].value is None
    # Still counted: the purchase, the stage, the source.
    assert gone["Покупок"].value == 1 and gone["Источник"].value == "blog"
    bought = [r for r in records(book["Покупки"]) if r["Лид №"].value == ids["gone"]]
    assert bought and bought[0]["Имя"].value == "(данные удалены)"
    for sheet in book.worksheets:
        for row in sheet.iter_rows(values_only=True):
            assert "секрет" not in " ".join(str(v) for v in row if v is not None)
    csv_text = (await export(sessions, make_script(), "csv")).decode("utf-8-sig")
    assert "секрет" not in csv_text


async def test_every_part_has_its_sheet(sessions: async_sessionmaker[AsyncSession]) -> None:
    await school(sessions)
    book = workbook(await export(sessions, make_script(), "xlsx", period="30d"))
    stages = records(book["Этапы воронки"])
    assert [r["Этап"].value for r in stages][:4] == ["Нажал «Старт»", "Ответил", "Квалифицирован",
                                                     "Оплатил <&>"]  # fmt: skip
    first, engaged = stages[0], stages[1]
    assert first["Дошли"].value == 3 and first["От предыдущего"].value is None
    # 2 of 3 leads answered: a fraction shown as a percent, not the text "66.67".
    share = engaged["От первого"]
    assert share.data_type == "n" and abs(share.value - 2 / 3) < 0.0001
    assert share.number_format.endswith("%")
    sources = {r["Источник"].value: r for r in records(book["Источники"])}
    ads = sources["ads"]
    assert ads["Лиды"].value == 1 and "₽" in ads["Реклама"].number_format
    assert Decimal(str(ads["Реклама"].value)) == 5000 and ads["ROMI"].value == -1
    paid = records(book["Покупки"])
    amounts = [Decimal(str(r["Сумма"].value)) for r in paid]
    assert amounts == [Decimal("6900.5"), Decimal("13800"), Decimal("41400")]
    assert paid[0]["Сумма"].number_format == '#,##0.00 "₽"'
    assert paid[1]["Сумма"].number_format == '#,##0 "₽"'
    assert isinstance(paid[0]["Оплачено (Europe/Moscow)"].value, datetime)
    campaigns = book["Кампании"]
    assert [c.value for c in campaigns[1]][:4] == ["Кампания", "Тип", "Шаг", "Через, ч"]


async def test_the_csv_reads_back_as_numbers(sessions: async_sessionmaker[AsyncSession]) -> None:
    await school(sessions)
    data = await export(sessions, make_script(), "csv", period="30d")
    assert data.startswith(b"\xef\xbb\xbf")  # Excel then reads the Cyrillic right
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    header, *body = rows
    assert len(body) == 3 and all(len(r) == len(header) for r in body)
    anna = dict(zip(header, body[0], strict=True))
    assert anna["Источник"] == "'=cmd|' /C calc'!A0"  # an apostrophe disarms the formula
    assert anna["Бюджет?"] == "Есть" and anna["Зачем?"] == "Сменить профессию"
    assert anna["Username"] == "anna_p" and anna["Имя"] == "Лид1 Петрова"
    # A Russian spreadsheet reads "20700,50" as a number (not the text "20700.50").
    assert anna["Выручка"] == "20700,50" and anna["Покупок"] == "2"
    assert anna["Создан (Europe/Moscow)"] == "2026-02-28 15:00"
    ivan = dict(zip(header, body[2], strict=True))
    assert ivan["Зачем?"] == "'=Просто так" and ivan["Выручка"] == "0"
    english = (await export(sessions, make_script(), "csv", period="30d", lang="en")).decode(
        "utf-8-sig"
    )
    header, *body = list(csv.reader(io.StringIO(english)))  # English Excel: commas
    first = dict(zip(header, body[0], strict=True))
    assert first["Revenue"] == "20700.50" and first["Temperature"] == "hot"
    assert header[:4] == ["Lead #", "Name", "Username", "Telegram link"]
    assert "Created (Europe/Moscow)" in header


async def test_an_empty_school_exports_headers(sessions: async_sessionmaker[AsyncSession]) -> None:
    book = workbook(await export(sessions, make_script(), "xlsx"))
    for sheet in book.worksheets:
        assert sheet.max_row >= 1 and sheet[1][0].value
    assert book["Лиды"].max_row == 1 and book["Покупки"].max_row == 1
    data = await export(sessions, make_script(), "csv")
    assert len(list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))) == 1


async def test_a_header_from_the_script_is_never_a_formula(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    script = make_script()
    async with sessions() as session:
        labels = export_labels("ru", MOSCOW.key)
        sheets = await build_sheets(session, script, parse_period("all", NOW), NOW, zone=MOSCOW,
                                    labels=labels)  # fmt: skip
    leads = sheets[0]
    leads.columns[8] = type(leads.columns[8])("answer:need", "user_text", title="=SUM(A1)")
    header = next(csv.reader(io.StringIO(to_csv(leads, labels).decode("utf-8-sig")),
                             delimiter=";"))  # fmt: skip
    assert header[8] == "'=SUM(A1)"


async def test_an_unknown_format_is_refused(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(ValueError, match="xlsx"):
        await export(sessions, make_script(), "pdf")


async def test_control_characters_in_a_name_do_not_break_the_workbook(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    b = Builder()
    lead = b.lead([("new", 0)])
    # PostgreSQL refuses NUL in text (so it never reaches an export there); SQLite keeps it.
    nul = "\x00" if ENGINE == "sqlite" else ""
    b.answer(lead, "need", None, "бип\x07" + nul + " и " + "очень длинный ответ " * 500)
    await b.save(sessions)
    async with sessions() as session, session.begin():
        await session.execute(update(Lead).values(first_name="Анна\x1b[31m", last_name="\x0c"))
    book = workbook(await export(sessions, make_script(), "xlsx"))
    row = records(book["Лиды"])[0]
    assert row["Имя"].value == "Анна[31m" and row["Зачем?"].value.startswith("бип и очень")
    data = await export(sessions, make_script(), "csv")
    assert "Анна[31m;" in data.decode("utf-8-sig")
