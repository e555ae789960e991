"""The report over a period reads the daily and money rollups for the period's whole UTC
days and the log for the rest; over random histories (the rollup workload: stages in and out
of order, answers, purchases in two currencies, refunds, /forget, test leads, creation times
on the edges of days) it equals the report computed from the log alone, for every kind of
period (days back from now, date ranges in the school's timezone, half-hour zones included,
one day, part of a day, open ends) and source, on whichever engine the suite runs; and again
after a rebuild."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import db
from bot.paths import shipped
from funnel.reports import rollup
from funnel.reports.funnel_report import funnel_report
from funnel.reports.periods import Period, parse_period
from funnel.reports.report_sql import Reads
from funnel.reports.rollup_sql import DaySpan, day_of, day_start
from funnel.script.schema import Script
from tests.test_analytics import make_script
from tests.test_postgres_rollup import START, Workload

NOW = START + timedelta(days=31, hours=3, minutes=17)
ZONES = [UTC, ZoneInfo("Europe/Moscow"), ZoneInfo("Asia/Kolkata"), ZoneInfo("America/New_York")]


def periods() -> list[Period]:
    found = [parse_period(days, NOW) for days in ("all", "1d", "7d", "30d", "3650d")]
    for zone in ZONES:
        for typed in ("2026-03-04", "2026-03-02..2026-03-20", "2026-02-01..2026-04-30"):
            found.append(parse_period(typed, NOW, tz=zone))
    midnight = datetime(2026, 3, 4, tzinfo=UTC)
    found += [
        Period("whole days", midnight, midnight + timedelta(days=6)),
        Period("part of a day", midnight + timedelta(hours=3), midnight + timedelta(hours=20)),
        Period("from a day on", start=midnight + timedelta(hours=5)),
        Period("until a day", end=midnight + timedelta(days=5, minutes=1)),
        Period("nothing", midnight, midnight),
    ]
    return found


async def _compare(sessions: async_sessionmaker[AsyncSession], script: Script) -> int:
    """Every period and source: the report from the rollups equals the one from the log;
    returns how many of those reports counted a lead."""
    counted = 0
    async with sessions() as session:
        for period in periods():
            for source in (None, "vk_ads", "nobody"):
                kept = await funnel_report(session, script, now=NOW, period=period, source=source)
                logged = await funnel_report(
                    session, script, now=NOW, period=period, source=source, from_log=True
                )
                assert kept.to_json() == logged.to_json(), (period, source)
                counted += kept.totals.leads > 0
    return counted


async def test_period_reports_from_the_rollups_equal_the_log(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    script = make_script()
    workload = Workload(seed=20261202)
    for batch in range(4):
        async with sessions() as session, session.begin():
            for n in range(batch * 150, batch * 150 + 150):
                await workload.step(session, n)
        assert await _compare(sessions, script) > 20, "the periods met leads"
    async with sessions() as session:
        money, buyers = (
            await session.execute(
                text(
                    "SELECT count(*), count(DISTINCT lead_id) FROM purchases "
                    "WHERE refunded_at IS NULL"
                )
            )
        ).one()
    assert money > buyers > 0, "repeat purchases were made"
    async with engine.begin() as connection:
        await connection.run_sync(rollup.rebuild)
    await _compare(sessions, script)


async def test_a_period_reads_the_daily_rollups(engine: AsyncEngine) -> None:
    """Emptied daily and money rollups change a 30-day report (the log does not)."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    script = make_script()
    workload = Workload(seed=5)
    async with sessions() as session, session.begin():
        for n in range(300):
            await workload.step(session, n)
    period = parse_period("30d", NOW)
    async with sessions() as session:
        before = await funnel_report(session, script, now=NOW, period=period)
    assert before.totals.leads and before.money.purchases
    async with sessions() as session, session.begin():
        for table in ("daily_leads", "daily_gaps", "daily_questions", "money"):
            await session.execute(text(f"DELETE FROM rollup_{table}"))
    async with sessions() as session:
        emptied = await funnel_report(session, script, now=NOW, period=period)
        logged = await funnel_report(session, script, now=NOW, period=period, from_log=True)
    assert logged.to_json() == before.to_json()
    assert emptied.totals.leads < before.totals.leads
    assert emptied.money.purchases < before.money.purchases
    reads = Reads.plan(engine.dialect.name, script, period, None)
    assert reads.rollups is not None and len(reads.parts) == 2


def test_a_period_splits_into_whole_utc_days_and_its_ends() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    month = DaySpan.of(parse_period("2026-03-01..2026-03-31", NOW, tz=moscow))
    # 21:00 UTC on the eve of the 1st to 21:00 UTC on the 31st: 29 whole days in between.
    assert (month.first, month.end) == (day_of(START), day_of(START) + 30)
    assert [(p.start, p.end) for p in month.rest] == [
        (datetime(2026, 2, 28, 21, tzinfo=UTC), day_start(day_of(START))),
        (day_start(day_of(START) + 30), datetime(2026, 3, 31, 21, tzinfo=UTC)),
    ]
    assert DaySpan.of(parse_period("all", NOW)) == DaySpan(None, None, ())
    utc_day = DaySpan.of(parse_period("2026-03-04", NOW))
    assert utc_day.rest == () and utc_day.end == utc_day.first + 1  # type: ignore[operator]
    short = Period("part", START, START + timedelta(hours=2))
    assert DaySpan.of(short).no_days and DaySpan.of(short).rest == (short,)
    last = datetime(2026, 3, 4, tzinfo=UTC) - timedelta(microseconds=1)
    assert day_of(last) + 1 == day_of(last + timedelta(microseconds=1))


def _to(connection: Any, target: str, *, up: bool = True) -> None:
    config = Config()
    config.set_main_option("script_location", str(shipped("migrations")))
    config.attributes["connection"] = connection
    (command.upgrade if up else command.downgrade)(config, target)


async def test_migration_0013_fills_the_new_rollups_and_goes_down_again(tmp_path: Path) -> None:
    """A database from before 0013 with leads, a log and purchases: the upgrade fills the
    daily and money rollups (the 30-day report equals the log's at once), and the downgrade
    leaves the 0011 triggers (0012 adds none) keeping the all-time rollups."""
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}")
    script = make_script()
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_to, "0012")
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        workload = Workload(seed=12)
        workload.money = _no_purchases  # type: ignore[method-assign]
        async with sessions() as session, session.begin():
            for n in range(200):
                await workload.step(session, n)
            for lead_id in workload.lead_ids[:20]:
                await session.execute(
                    text(
                        "INSERT INTO purchases (lead_id, amount, currency, at, recorded_by) "
                        "VALUES (:lead, 6900, 'RUB', :at, 1)"
                    ),
                    {"lead": lead_id, "at": "2026-03-20 10:00:00.000000"},
                )
        async with engine.begin() as connection:
            await connection.run_sync(_to, "head")
        async with sessions() as session:
            for typed in ("30d", "all"):
                period = parse_period(typed, NOW)
                kept = await funnel_report(session, script, now=NOW, period=period)
                logged = await funnel_report(
                    session, script, now=NOW, period=period, from_log=True
                )
                assert kept.to_json() == logged.to_json()
            counted = await session.scalar(
                text(
                    "SELECT count(*) FROM purchases p JOIN leads l ON l.id = p.lead_id "
                    "WHERE NOT l.is_test"
                )
            )
        assert kept.money.purchases == counted and counted and kept.totals.leads > 0
        async with engine.begin() as connection:
            await connection.run_sync(_to, "0012", up=False)
            tables = await connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE 'rollup_daily%' "
                "OR name IN ('rollup_money', 'rollup_first_purchases')"
            )
            assert tables.all() == []
        async with sessions() as session, session.begin():
            before = await session.scalar(text("SELECT sum(leads) FROM rollup_leads"))
            await workload.step(session, 10_000)  # the workload's first step of a batch: a lead
            await session.execute(
                text(
                    "INSERT INTO purchases (lead_id, amount, currency, at, recorded_by) "
                    "VALUES (:lead, 1, 'RUB', :at, 1)"
                ),
                {"lead": workload.lead_ids[0], "at": "2026-03-20 10:00:00.000000"},
            )
        async with sessions() as session:
            after = await session.scalar(text("SELECT sum(leads) FROM rollup_leads"))
        assert after is not None and before is not None and after >= before
    finally:
        await engine.dispose()


async def _no_purchases(session: AsyncSession, lead_id: int) -> None:
    """Before 0013 nothing keeps money rollups: the old schema gets its purchases apart."""
