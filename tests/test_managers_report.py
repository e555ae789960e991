"""The managers' report against a fixture computed by hand: three managers, a lead handed
from one to another, a booking before the take, a legacy take with no card, a forgotten
lead, a second currency, and three periods. Then the view: escaped names, phone-wide lines,
one Telegram message however many managers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.models import Lead, ManagerTake, Purchase, StageEvent
from funnel.core.telegram_text import TELEGRAM_LIMIT, check_telegram_html, visible_text
from funnel.reports.managers import ManagerRow, ManagersReport, managers_report
from funnel.reports.periods import Period, parse_period
from funnel.script.schema import Script
from handlers.i18n import tn
from handlers.views.managers_report import format_managers_html, format_managers_text

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # Monday, 12:00 in Moscow
OLEG, IRA, PAVEL = 1001, 1002, 1003
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
NOW = T0 + 30 * DAY


def lead(number: int, *, forgotten: bool = False) -> Lead:
    return Lead(
        id=number, user_id=None if forgotten else 500 + number,
        chat_id=None if forgotten else 500 + number,
        first_name=None if forgotten else f"Лид{number}", source="vk_ads", stage="qualified",
        script_version="test", cycle=1, cycle_started_at=T0, created_at=T0, stage_changed_at=T0,
        deleted_at=T0 + 20 * DAY if forgotten else None,
    )  # fmt: skip


def taken(
    lead_id: int, manager: int, name: str, called: datetime, at: datetime, *, card: bool = True
) -> ManagerTake:
    return ManagerTake(
        lead_id=lead_id, manager_id=manager, manager_name=name, card_id=lead_id if card else None,
        called_at=called, taken_at=at, active_at=at,
    )  # fmt: skip


def moved(lead_id: int, stage: str, at: datetime) -> StageEvent:
    return StageEvent(lead_id=lead_id, from_stage=None, to_stage=stage, at=at, cause="test")


def bought(lead_id: int, amount: str, at: datetime, currency: str = "RUB") -> Purchase:
    return Purchase(lead_id=lead_id, amount=Decimal(amount), currency=currency, at=at)


async def fixture(session: AsyncSession) -> None:
    session.add_all([lead(n) for n in (1, 2, 3, 4, 5, 7)] + [lead(6, forgotten=True)])
    await session.flush()
    session.add_all(
        [
            # L1: Oleg in 10 min; booked after an hour, paid the next day.
            taken(1, OLEG, "Олег", T0, T0 + 10 * MINUTE),
            moved(1, "consultation", T0 + HOUR),
            moved(1, "customer", T0 + DAY),
            bought(1, "13800.00", T0 + DAY),
            # L2: Oleg in 30 min; nothing came of it.
            taken(2, OLEG, "Олег", T0 + HOUR, T0 + HOUR + 30 * MINUTE),
            # L3: Ira in 5 min, released; Oleg took it two days after the card and sold it
            # (twice: once in dollars).
            taken(3, IRA, "Ира", T0 + 2 * HOUR, T0 + 2 * HOUR + 5 * MINUTE),
            taken(3, OLEG, "Олег Петров", T0 + 2 * HOUR, T0 + 2 * DAY),
            moved(3, "customer", T0 + 3 * DAY),
            bought(3, "6900.50", T0 + 3 * DAY),
            bought(3, "100.00", T0 + 4 * DAY, "USD"),
            # L4: the booking made the card; Ira took it 20 min later; paid on day 5.
            moved(4, "consultation", T0 + 3 * HOUR),
            taken(4, IRA, "Ира", T0 + 3 * HOUR, T0 + 3 * HOUR + 20 * MINUTE),
            moved(4, "customer", T0 + 5 * DAY),
            bought(4, "20000", T0 + 5 * DAY),
            # L5: Pavel, ten days later (outside the first week); an hour to take.
            taken(5, PAVEL, "<Паша & Co>", T0 + 10 * DAY, T0 + 10 * DAY + HOUR),
            moved(5, "customer", T0 + 10 * DAY + 2 * HOUR),
            bought(5, "5000", T0 + 10 * DAY + 2 * HOUR),
            # L6: forgotten since; Ira took it in 2 min. Still counts, as a number.
            taken(6, IRA, "Ира", T0 + 4 * HOUR, T0 + 4 * HOUR + 2 * MINUTE),
            # L7: a take from before cards recorded their moment: no time to take.
            taken(7, OLEG, "Олег", T0 + 5 * HOUR, T0 + 5 * HOUR, card=False),
        ]
    )
    await session.commit()


def row(
    manager: int | None, name: str, taken_: int, median: float | None, booked: int, paid: int,
    revenue: str, other: tuple[tuple[str, Decimal], ...], conversion: str | None,
) -> ManagerRow:  # fmt: skip
    return ManagerRow(
        manager_id=manager, name=name, taken=taken_, median_take_seconds=median, booked=booked,
        paid=paid, revenue=Decimal(revenue), other_revenue=other,
        conversion=None if conversion is None else Decimal(conversion),
    )  # fmt: skip


USD = (("USD", Decimal("100.00")),)


async def report_for(
    sessions: async_sessionmaker[AsyncSession], script: Script, period: str
) -> ManagersReport:
    async with sessions() as session:
        await fixture(session)
        chosen = parse_period(period, NOW, tz=ZoneInfo("Europe/Moscow"))
        return await managers_report(session, script, chosen)


async def test_all_time_matches_the_hand_computed_figures(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    report = await report_for(sessions, script, "all")
    assert report.currency == "RUB"
    assert report.rows == (
        # 4 leads; median of 10 min, 30 min, 46 h (L7 has no card); L1 booked; L1 and L3 paid.
        row(OLEG, "Олег Петров", 4, 1800.0, 1, 2, "20700.50", USD, "50.00"),
        # 3 leads; median of 5, 20, 2 min; L4's booking came before the take: Ira's.
        row(IRA, "Ира", 3, 300.0, 1, 1, "20000.00", (), "33.33"),
        row(PAVEL, "<Паша & Co>", 1, 3600.0, 0, 1, "5000.00", (), "100.00"),
    )
    # Median of all seven timed takes: 2, 5, 10, 20, 30, 60 min, 46 h.
    assert report.total == row(None, "", 7, 1200.0, 2, 4, "45700.50", USD, "57.14")


async def test_a_week_leaves_out_the_later_take(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    report = await report_for(sessions, script, "2026-03-02..2026-03-08")
    assert [r.manager_id for r in report.rows] == [OLEG, IRA]
    assert report.total == row(None, "", 6, 900.0, 2, 3, "40700.50", USD, "50.00")


async def test_one_day_credits_the_sale_to_the_take_of_that_day(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    # 2026-03-04 in Moscow: only Oleg's take of L3, which the payment on day 3 followed.
    report = await report_for(sessions, script, "2026-03-04")
    assert report.rows == (row(OLEG, "Олег Петров", 1, 165600.0, 0, 1, "6900.50", USD, "100.00"),)
    empty = await managers_report_in(sessions, script, "2026-02-01")
    assert empty.rows == () and empty.total.taken == 0 and empty.total.conversion is None


async def managers_report_in(
    sessions: async_sessionmaker[AsyncSession], script: Script, period: str
) -> ManagersReport:
    async with sessions() as session:
        return await managers_report(session, script, parse_period(period, NOW))


async def test_the_view_escapes_names_and_fits_a_phone(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    report = await report_for(sessions, script, "all")
    for lang in ("ru", "en"):
        text = format_managers_html(report, lang=lang)
        assert check_telegram_html(text) is None
        assert "&lt;Паша &amp; Co&gt;" in text and "<Паша" not in text
        for line in visible_text(text).splitlines():
            assert len(line) <= 40, line
    ru = visible_text(format_managers_html(report, lang="ru"))
    assert "1. Олег Петров" in ru and "Взято: 4 · медиана 30\u00a0мин" in ru
    assert "Запись: 1 · оплата: 2 (50%)" in ru and "Выручка: 20\u202f701\u00a0₽ + 100\u00a0$" in ru
    assert "оплата: 1 (33%)" in ru
    plain = format_managers_text(report, lang="en")
    assert "Revenue: 45,701 ₽ + 100 $" in plain and "<Паша & Co>" in plain


def test_many_managers_fit_one_message_and_the_rest_are_counted() -> None:
    rows = tuple(
        row(n, f"Менеджер <{n}> " + "я" * 30, 3, 60.0, 1, 1, "1000", (), "33.33")
        for n in range(300)
    )
    total = row(None, "", 900, 60.0, 300, 300, "300000", (), "33.33")
    report = ManagersReport(Period("all"), "RUB", rows, total)
    text = format_managers_html(report, lang="ru")
    assert len(text) <= TELEGRAM_LIMIT and check_telegram_html(text) is None
    shown = sum(1 for line in visible_text(text).splitlines() if "Менеджер <" in line)
    assert 10 < shown < 300
    assert visible_text(text).endswith(tn("managers.more", 300 - shown, lang="ru"))
    assert f"…и ещё {300 - shown} менеджер" in visible_text(text)


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_no_takes_reads_as_such(lang: str) -> None:
    week = Period("7d", NOW - 7 * DAY, NOW)
    report = ManagersReport(week, "RUB", (), row(None, "", 0, None, 0, 0, "0", (), None))
    text = format_managers_html(report, lang=lang)
    assert check_telegram_html(text) is None and "7d" in text
