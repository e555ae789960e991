"""The leads CSV: opens in Excel and Google Sheets with Cyrillic intact, parses back with
the csv module, neutralises formulas, and keeps forgotten leads anonymous."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.reports.export import export_leads_csv, safe_cell
from funnel.reports.periods import parse_period
from funnel.script.schema import Script
from handlers.views.export import csv_labels
from tests.test_analytics import NOW, Builder, make_script


def test_safe_cell() -> None:
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    for start in "+-@\t\r":
        assert safe_cell(start + "x").startswith("'")
    assert safe_cell("обычный текст") == "обычный текст"
    assert safe_cell("") == ""


async def export(sessions: async_sessionmaker[AsyncSession], script: Script, period: str = "all",
                 lang: str = "ru") -> tuple[bytes, list[list[str]]]:  # fmt: skip
    async with sessions() as session:
        data = await export_leads_csv(
            session, script, parse_period(period, NOW), NOW, labels=csv_labels(lang)
        )
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    return data, rows


async def test_csv(sessions: async_sessionmaker[AsyncSession]) -> None:
    script = make_script()
    b = Builder()
    a = b.lead([("new", 0), ("engaged", 10)], source="=cmd|' /C calc'!A0", temperature="hot")
    b.answer(a, "need", "career", "career")
    b.answer(a, "timing", None, 'Через "месяц"; может, раньше\nили позже')
    b.purchase(a, 6900)
    gone = b.lead([("new", 0)], deleted=True, source="blog")
    b.answer(gone, "need", None, "секрет")
    c = b.lead([("new", 0)], source="ads", opted_out=True)
    b.answer(c, "need", "fun", "fun")  # the option label "=Просто так" is a formula too
    b.lead([("new", 0)], created=NOW - timedelta(days=60))
    await b.save(sessions)

    data, rows = await export(sessions, script, "30d")
    assert data.startswith(b"\xef\xbb\xbf")
    header, *body = rows
    assert header[:6] == ["id", "Создан (UTC)", "Этап", "Источник", "Температура", "Баллы"]
    assert header[6:9] == ["1. need", "2. timing", "3. budget"]
    assert len(body) == 3 and all(len(r) == len(header) for r in body)
    first = dict(zip(header, body[0], strict=True))
    assert first["Этап"] == "Ответил"
    assert first["Источник"] == "'=cmd|' /C calc'!A0"
    assert first["Температура"] == "горячий"
    assert first["1. need"] == "Сменить профессию"
    assert first["2. timing"] == 'Через "месяц"; может, раньше\nили позже'
    assert first["Выручка"] == "6900.00"
    forgotten = dict(zip(header, body[1], strict=True))
    assert forgotten["1. need"] == "" and forgotten["Данные удалены"] == "да"
    assert "секрет" not in data.decode("utf-8-sig")
    third = dict(zip(header, body[2], strict=True))
    assert third["1. need"] == "'=Просто так" and third["Отписался"]
    _, everything = await export(sessions, script)
    assert len(everything) == 5
    _, english = await export(sessions, script, "30d", lang="en")
    assert english[0][:6] == ["id", "Created (UTC)", "Stage", "Source", "Temperature", "Score"]
    assert english[0][9:] == ["Revenue", "Stage changed (UTC)", "Opted out", "Blocked the bot",
                              "Data deleted"]  # fmt: skip
    first = dict(zip(english[0], english[1], strict=True))
    assert first["Temperature"] == "hot" and first["Revenue"] == "6900.00"
    assert dict(zip(english[0], english[2], strict=True))["Data deleted"] == "yes"


async def test_empty_export_has_a_header(sessions: async_sessionmaker[AsyncSession]) -> None:
    data, rows = await export(sessions, make_script())
    assert data.startswith(b"\xef\xbb\xbf") and len(rows) == 1
