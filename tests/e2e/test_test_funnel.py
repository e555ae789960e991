"""`/test_funnel`: an admin goes through the whole script on themself with time compressed
(nudges in seconds), as a test lead that no report, rollup, export or CRM webhook counts;
`/test_funnel stop` ends it. Bad input gets a usage line, never a test run."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text
from telegram_emulator.server import TelegramEmulator

from funnel.core.clock import FakeClock
from funnel.core.models import Lead, Notification, Touch
from funnel.reports.campaign_effect import campaign_report
from funnel.reports.export import export_file
from funnel.reports.funnel_report import funnel_report
from funnel.reports.periods import parse_period
from funnel.reports.rollup import rebuild
from handlers.views.export import export_labels
from tests.e2e.conftest import HOT, World, qualify, running_world

# A CRM that is never reached: the test only looks at what was planned for it.
DEAD_CRM = "http://127.0.0.1:9/hook"


@pytest.fixture
async def crm_world(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[World]:
    async with running_world(emu, tmp_path, clock, crm_webhook_url=DEAD_CRM) as world:
        yield world


async def go_through(world: World, answers: list[str]) -> None:
    """The admin taps `answers` from the question they were just asked."""
    message = world.admin.last_message
    for label in answers:
        assert message is not None
        await world.admin.press(message, label)
        message = await world.admin.next_message()


async def admin_lead(world: World) -> Lead:
    async with world.sessions() as session:
        lead = await session.scalar(select(Lead).where(Lead.user_id == world.admin.id))
        assert lead is not None
        return lead


async def rollups(world: World) -> dict[str, list[Any]]:
    async with world.app.engine.connect() as connection:
        return {
            table: sorted(
                tuple(row)
                for row in (await connection.execute(text(f"SELECT * FROM {table}"))).all()
                if any(row[counts]) and (table != "rollup_gaps" or row[4])
            )
            for table, counts in (
                ("rollup_leads", slice(-1, None)),
                ("rollup_gaps", slice(4, 5)),
                ("rollup_questions", slice(2, None)),
            )
        }


async def rebuilt(world: World) -> dict[str, list[Any]]:
    async with world.app.engine.begin() as connection:
        await connection.run_sync(rebuild)
    return await rollups(world)


async def test_the_whole_script_with_nudges_in_seconds(world: World, clock: FakeClock) -> None:
    clock.advance(timedelta(hours=11))  # 23:00 in Moscow: outside the send window
    real = world.user("Пётр")
    await real.send("/start")
    await real.next_message()
    await world.admin.send("/test_funnel 3600")
    started = (await world.admin.next_message()).plain_text
    assert started.startswith("🧪 Тест сценария python_course@2026-11-1")
    assert "час сценария — 1 с" in started
    first = await world.admin.next_message()
    assert "Я помощник Школы «Код будущего»" in first.plain_text
    assert "Вопрос 1 из 4" in first.plain_text
    await go_through(world, HOT)
    assert "отлично подходите" in world.admin.messages[-1].plain_text
    lead = await admin_lead(world)
    assert (lead.is_test, lead.time_scale, lead.stage) == (True, 3600.0, "qualified")

    # A day of the script is 24 seconds: the first nurture step, then the second.
    clock.advance(timedelta(seconds=25))
    await world.app.outbox.tick()
    nudge = await world.admin.next_message()
    assert "История выпускницы" in nudge.plain_text
    clock.advance(timedelta(seconds=48))
    await world.app.outbox.tick()
    assert "пробный урок" in (await world.admin.next_message()).plain_text
    # Night or day, the cap of two a day: a test is not held back.
    clock.advance(timedelta(seconds=96))
    await world.app.outbox.tick()
    assert "скидка 15%" in (await world.admin.next_message()).plain_text
    # A real prospect silent for an hour at night still waits for the morning.
    clock.advance(timedelta(hours=1))
    await world.app.outbox.tick()
    assert len(real.messages) == 1
    # The three nudges the admin got are in no campaign report.
    async with world.sessions() as session:
        report = await campaign_report(session, world.app.scripts.current, clock.now())
    assert all(step.sent == 0 for c in report.campaigns for step in c.steps)


async def test_a_test_lead_is_in_no_report_rollup_export_or_crm(
    crm_world: World, clock: FakeClock
) -> None:
    world = crm_world
    await qualify(world, HOT)  # one real prospect
    await world.admin.send("/test_funnel")
    await world.admin.next_message()
    await world.admin.next_message()
    await go_through(world, HOT)

    script = world.app.scripts.current
    async with world.sessions() as session:
        for period in ("all", "7d"):
            report = await funnel_report(
                session, script, now=clock.now(), period=parse_period(period, clock.now())
            )
            assert report.totals.leads == 1, period
            assert report.stages[2].reached == 1
        data = await export_file(
            session, script, parse_period("all", clock.now()), clock.now(),
            zone=ZoneInfo("Europe/Moscow"), labels=export_labels("ru", "Europe/Moscow"),
            fmt="csv",
        )  # fmt: skip
        rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
        assert len(rows) == 2  # the header and the real prospect
        crm_leads = (
            await session.scalars(
                select(Notification.lead_id).where(Notification.kind == "crm_webhook")
            )
        ).all()
    test_lead = await admin_lead(world)
    assert test_lead.id not in crm_leads and len(crm_leads) == 1
    assert await rollups(world) == await rebuilt(world)


async def test_an_admin_who_was_a_lead_turns_into_a_test_lead_and_leaves_the_counts(
    world: World, clock: FakeClock
) -> None:
    await qualify(world, HOT, name="Пётр")
    await world.admin.send("/start ads")
    await world.admin.next_message()
    # A real lead halfway through, with time between its stages: counted everywhere.
    clock.advance(timedelta(seconds=90))
    await go_through(world, HOT[:1])
    clock.advance(timedelta(hours=3))
    await go_through(world, HOT[1:2])
    clock.advance(timedelta(minutes=5))
    before = await rollups(world)
    assert sum(row[-1] for row in before["rollup_leads"]) == 2

    await world.admin.send("/test_funnel 60")
    await world.admin.next_message()
    first = await world.admin.next_message()
    assert "Вопрос 1 из 4" in first.plain_text
    after = await rollups(world)
    assert sum(row[-1] for row in after["rollup_leads"]) == 1
    assert after == await rebuilt(world)
    lead = await admin_lead(world)
    assert (lead.stage, lead.position, lead.score, lead.is_test) == ("new", "need", 0, True)
    # The test run goes on, and the counts stay those of the one real lead.
    await go_through(world, HOT)
    assert await rollups(world) == await rebuilt(world)
    async with world.sessions() as session:
        report = await funnel_report(
            session, world.app.scripts.current, now=clock.now(),
            period=parse_period("all", clock.now()),
        )  # fmt: skip
    assert report.totals.leads == 1


async def test_stop_ends_the_run_and_cancels_what_was_planned(
    world: World, clock: FakeClock
) -> None:
    await world.admin.send("/test_funnel stop")
    assert (await world.admin.next_message()).plain_text.startswith("Тест сейчас не идёт")
    await world.admin.send("/test_funnel")
    await world.admin.next_message()
    await world.admin.next_message()  # the first question; then silence
    clock.advance(timedelta(seconds=2))  # an hour of the script
    assert await world.app.outbox.plan(clock.now()) == 1
    await world.admin.send("/test_funnel stop")
    assert (await world.admin.next_message()).plain_text.startswith("🧪 Тест закончен")
    lead = await admin_lead(world)
    assert lead.time_scale is None and lead.is_test
    async with world.sessions() as session:
        statuses = (await session.scalars(select(Touch.status))).all()
    assert statuses == ["cancelled"]
    # Days later, on the real clock, nothing more is planned for the admin.
    clock.advance(timedelta(days=3))
    assert await world.app.outbox.plan(clock.now()) == 0


@pytest.mark.parametrize(
    "args",
    ["abc", "0", "nan", "inf", "-5", "1 2", "99999999999", "x" * 5000, "stop now"],
    ids=["word", "zero", "nan", "inf", "negative", "two", "huge", "long", "stop-extra"],
)
async def test_bad_input_gets_the_usage_and_starts_nothing(world: World, args: str) -> None:
    await world.admin.send(f"/test_funnel {args}")
    reply = (await world.admin.next_message()).plain_text
    assert "/test_funnel stop" in reply and "🧪" not in reply
    async with world.sessions() as session:
        assert await session.scalar(select(Lead).where(Lead.user_id == world.admin.id)) is None


async def test_a_prospect_cannot_start_a_test_run(world: World) -> None:
    prospect = world.user("Мария")
    await prospect.send("/test_funnel 100000")
    reply = (await prospect.next_message()).plain_text
    assert "🧪" not in reply
    async with world.sessions() as session:
        leads = (await session.scalars(select(Lead))).all()
    assert all(not lead.is_test for lead in leads)


async def test_starting_twice_restarts_the_run(world: World, clock: FakeClock) -> None:
    for scale in ("3600", "x600"):
        await world.admin.send(f"/test_funnel {scale}")
        await world.admin.next_message()
        await world.admin.next_message()
    lead = await admin_lead(world)
    assert lead.time_scale == 600.0
    async with world.sessions() as session:
        count = await session.scalar(
            select(text("count(*)")).select_from(Lead).where(Lead.user_id == world.admin.id)
        )
    assert count == 1
