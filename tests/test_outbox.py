"""The outbox against the Telegram emulator: the real aiogram Bot with the rate limiter,
a fake funnel clock, a real SQLite database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bot.delivery_middleware import RateLimitMiddleware, WriteGuardMiddleware
from bot.outbox import Outbox
from bot.ratelimit import RateLimiter
from bot.scheduler import add_daily_job, create_scheduler
from funnel.core import store
from funnel.core.clock import FakeClock
from funnel.core.models import JobMark, Lead, Touch
from tests.test_campaigns import NOON, SCRIPT, ZONE, add_lead, touches

RATE = 200.0


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(rate_per_second=RATE, chat_burst=5) as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
    session.middleware(WriteGuardMiddleware())
    session.middleware(RateLimitMiddleware(RateLimiter(rate_per_second=RATE)))
    bot = Bot(DEFAULT_TOKEN, session=session)
    yield bot
    await bot.session.close()


def make_outbox(
    sessions: async_sessionmaker[AsyncSession],
    bot: Bot,
    clock: FakeClock,
    manager_chat_id: int | None = None,
    **options: Any,
) -> Outbox:
    return Outbox(
        sessions=sessions,
        bot=bot,
        script=lambda: SCRIPT,
        clock=clock,
        zone=ZONE,
        manager_chat_id=manager_chat_id,
        **options,
    )


async def lead_for(
    sessions: async_sessionmaker[AsyncSession], emu: TelegramEmulator, **fields: Any
) -> tuple[int, int]:
    user = emu.add_user("Ann")
    lead_id = await add_lead(sessions, user_id=user.id, chat_id=user.chat_id, **fields)
    return lead_id, user.chat_id


async def get_lead(sessions: async_sessionmaker[AsyncSession], lead_id: int) -> Lead:
    async with sessions() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        return lead


async def test_a_silent_lead_is_nudged_with_the_question_and_a_stop_button(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    lead_id, chat_id = await lead_for(sessions, emu)
    clock = FakeClock(NOON + timedelta(minutes=30))
    outbox = make_outbox(sessions, bot, clock)
    stats = await outbox.tick()
    assert (stats.planned, stats.sent) == (0, 0)
    clock.advance(timedelta(minutes=30))
    stats = await outbox.tick()
    assert (stats.planned, stats.sent) == (1, 1)
    [message] = emu.messages(chat_id)
    assert message.plain_text == "Ann, continue from question 2?"
    assert message.labels == ["Now", "Not now", "Stop messages"]
    [touch] = await touches(sessions)
    assert (touch.status, touch.attempts, touch.sent_at) == ("sent", 1, clock.now())
    assert (await get_lead(sessions, lead_id)).last_outbound_at == clock.now()
    # Nothing more until step two is due.
    assert (await outbox.tick()).sent == 0
    assert len(emu.messages(chat_id)) == 1


async def test_a_reply_cancels_the_rest_and_stop_is_respected(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    replied, replied_chat = await lead_for(sessions, emu)
    stopped, stopped_chat = await lead_for(sessions, emu)
    opted_out, opted_chat = await lead_for(sessions, emu)
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = make_outbox(sessions, bot, clock)
    await outbox.plan(clock.now())
    async with sessions() as session:
        lead = await session.get(Lead, replied)
        assert lead is not None
        store.start_cycle(lead, clock.now())  # the lead wrote in the meantime
        await session.execute(
            update(Lead).where(Lead.id == stopped).values(opted_out_at=clock.now())
        )
        lead = await session.get(Lead, opted_out)
        assert lead is not None
        lead.opted_out_at = clock.now()
        await store.cancel_pending_touches(session, opted_out, "opted_out")
        await session.commit()
    stats = await outbox.deliver(clock.now())
    assert (stats.sent, stats.cancelled) == (0, 2)
    reasons = {t.lead_id: (t.status, t.reason) for t in await touches(sessions)}
    assert reasons == {
        replied: ("cancelled", "replied"),
        stopped: ("cancelled", "opted_out"),
        opted_out: ("cancelled", "opted_out"),
    }
    assert emu.messages(replied_chat) == emu.messages(stopped_chat) == []
    assert emu.messages(opted_chat) == []
    assert emu.requests_for("sendMessage") == []


async def test_a_block_marks_the_lead_and_cancels_its_other_touches(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    lead_id, chat_id = await lead_for(sessions, emu)
    clock = FakeClock(NOON + timedelta(hours=1))
    async with sessions() as session:
        session.add(Touch(lead_id=lead_id, campaign="postsale_nps", step=1, cycle=1,
                          due_at=NOON + timedelta(days=9), created_at=NOON))  # fmt: skip
        await session.commit()
    emu.user(chat_id).record.blocked = True
    outbox = make_outbox(sessions, bot, clock)
    stats = await outbox.tick()
    assert (stats.sent, stats.failed) == (0, 1)
    by_campaign = {t.campaign: t for t in await touches(sessions)}
    nudge = by_campaign["nurture_dialogue"]
    assert (nudge.status, nudge.reason) == ("failed", "blocked")
    assert "blocked" in (nudge.error or "")
    assert (by_campaign["postsale_nps"].status, by_campaign["postsale_nps"].reason) == (
        "cancelled",
        "blocked",
    )
    assert (await get_lead(sessions, lead_id)).blocked_at == clock.now()
    # A blocked lead is never planned again.
    clock.advance(timedelta(days=2))
    assert (await outbox.tick()).planned == 0
    assert len(emu.requests_for("sendMessage")) == 1


async def test_a_bad_request_fails_without_retry(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    await lead_for(sessions, emu)
    emu.fail_next("sendMessage", error_code=400, description="Bad Request: chat not found")
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = make_outbox(sessions, bot, clock)
    assert (await outbox.tick()).failed == 1
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        await outbox.tick()
    [touch] = await touches(sessions)
    assert (touch.status, touch.reason, touch.attempts) == ("failed", "bad_request", 1)
    assert touch.error == "Bad Request: chat not found"
    assert len(emu.requests_for("sendMessage")) == 1


async def test_a_timeout_is_unknown_and_never_resent(
    sessions: Any, emu: TelegramEmulator, bot: Bot, caplog: pytest.LogCaptureFixture
) -> None:
    lead_id, chat_id = await lead_for(sessions, emu)
    emu.hang_next("sendMessage", seconds=3, apply=True)
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = make_outbox(sessions, bot, clock, send_timeout=1)
    with caplog.at_level("WARNING", logger="leadbot.outbox"):
        stats = await outbox.tick()
    assert stats.unknown == 1
    [touch] = await touches(sessions)
    assert (touch.status, touch.attempts) == ("unknown", 1)
    [record] = [r for r in caplog.records if getattr(r, "event", "") == "outbox.send_unknown"]
    assert record.__dict__["touch_id"] == touch.id
    assert "continue" not in record.getMessage() + str(record.__dict__.get("error"))
    for _ in range(3):
        clock.advance(timedelta(minutes=5))
        await outbox.tick()
    await asyncio.sleep(0)
    assert len(emu.requests_for("sendMessage")) == 1
    [touch] = await touches(sessions)
    assert touch.status == "unknown"
    # The message did arrive (the answer was lost): exactly once.
    assert len(emu.messages(chat_id)) == 1
    assert lead_id


async def test_quiet_hours_postpone_to_the_morning(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    evening = datetime(2026, 3, 3, 18, 30, tzinfo=UTC)  # 21:30 in Moscow
    _, chat_id = await lead_for(sessions, emu, at=evening - timedelta(hours=1))
    clock = FakeClock(evening)
    outbox = make_outbox(sessions, bot, clock)
    stats = await outbox.tick()
    assert (stats.planned, stats.sent, stats.postponed) == (1, 0, 1)
    [touch] = await touches(sessions)
    morning = datetime(2026, 3, 4, 7, 0, tzinfo=UTC)
    assert (touch.due_at, touch.postponed, touch.reason) == (morning, 1, "quiet_hours")
    clock.set(morning - timedelta(minutes=1))
    assert (await outbox.tick()).sent == 0
    clock.set(morning)
    assert (await outbox.tick()).sent == 1
    assert len(emu.messages(chat_id)) == 1


async def test_the_frequency_cap_postpones_the_third_message(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    lead_id, chat_id = await lead_for(sessions, emu, stage="qualified")
    clock = FakeClock(NOON + timedelta(hours=1))
    async with sessions() as session:
        for step in (1, 2, 3):
            session.add(Touch(lead_id=lead_id, campaign="nurture_qualified", step=step,
                              cycle=1, due_at=NOON, created_at=NOON))  # fmt: skip
        await session.commit()
    outbox = make_outbox(sessions, bot, clock)
    stats = await outbox.deliver(clock.now())
    assert (stats.sent, stats.postponed) == (2, 1)
    postponed = [t for t in await touches(sessions) if t.status == "planned"]
    assert [t.due_at for t in postponed] == [clock.now() + timedelta(days=1)]
    assert len(emu.messages(chat_id)) == 2


async def test_a_step_with_notify_managers_alerts_the_managers_chat(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    manager = emu.add_user("Max")
    group = emu.add_group("Managers", [manager])
    await group.add_bot(manager)
    await lead_for(sessions, emu, stage="qualified", at=NOON - timedelta(days=7))
    clock = FakeClock(NOON)
    outbox = make_outbox(sessions, bot, clock, manager_chat_id=group.id)
    assert (await outbox.tick()).sent == 1
    [alert] = emu.messages(group.id)
    # In the school's language: the test script is English.
    assert alert.plain_text.startswith("🔔 Qualified, not booked, step 3: 1 message sent")


async def test_recover_turns_sending_into_unknown(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    lead_id, _ = await lead_for(sessions, emu)
    async with sessions() as session:
        session.add(Touch(lead_id=lead_id, campaign="nurture_dialogue", step=1, cycle=1,
                          due_at=NOON, created_at=NOON, status="sending"))  # fmt: skip
        await session.commit()
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = make_outbox(sessions, bot, clock)
    assert await outbox.recover() == 1
    await outbox.tick()
    [touch] = await touches(sessions)
    assert touch.status == "unknown"
    assert emu.requests_for("sendMessage") == []


async def test_hundreds_of_touches_never_trip_the_flood_limit(
    sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    count = 300
    chats = [(await lead_for(sessions, emu))[1] for _ in range(count)]
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = make_outbox(sessions, bot, clock, batch_size=120)
    stats = await outbox.tick()
    assert (stats.planned, stats.sent) == (count, count)
    assert emu.stats.too_many_requests == 0
    assert all(len(emu.messages(chat)) == 1 for chat in chats)
    async with sessions() as session:
        statuses = (await session.scalars(select(Touch.status))).all()
    assert set(statuses) == {"sent"}


async def test_an_idle_tick_reads_three_statements_and_writes_only_the_watermarks(
    engine: AsyncEngine, sessions: Any, emu: TelegramEmulator, bot: Bot
) -> None:
    # Every statement costs the tick a round trip through the driver, whatever it reads: the
    # idle tick (the one a bot runs every few seconds) stays at a handful, however many
    # campaign steps the script has.
    lead_id, _ = await lead_for(sessions, emu)
    clock = FakeClock(NOON + timedelta(minutes=30))
    outbox = make_outbox(sessions, bot, clock)
    await outbox.tick()  # the first pass sets every step's watermark
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(" ".join(str(args[2]).split()))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        stats = await outbox.tick()
        assert (stats.planned, stats.sent) == (0, 0)
        assert len(statements) == 3
        assert all(statement.startswith("SELECT") for statement in statements)
        statements.clear()
        # The clock moved: every step's watermark follows it, in one statement.
        clock.advance(timedelta(seconds=5))
        stats = await outbox.tick()
        assert (stats.planned, stats.sent) == (0, 0)
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    writes = [s for s in statements if not s.startswith("SELECT")]
    lock = [s for s in writes if s.startswith("UPDATE job_marks")]
    assert len(lock) == (1 if engine.dialect.name == "sqlite" else 0)
    [upsert] = [s for s in writes if s not in lock]
    assert upsert.startswith("INSERT INTO job_marks")
    steps = sum(len(campaign.steps) for campaign in SCRIPT.campaigns)
    async with sessions() as session:
        marks = (
            await session.scalars(select(JobMark.at).where(JobMark.name.like("plan:%")))
        ).all()
    assert len(marks) == steps
    assert set(marks) == {clock.now() - o for c in SCRIPT.campaigns for o in c.offsets()}
    # The lead's first touch is still planned on time.
    clock.set(NOON + timedelta(hours=1))
    assert (await outbox.tick()).planned == 1
    assert [(t.lead_id, t.step) for t in await touches(sessions)] == [(lead_id, 1)]


async def test_the_scheduler_ticks_at_once_and_survives_a_failing_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    ran_twice = asyncio.Event()

    async def tick() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("database is down")
        ran_twice.set()

    scheduler = create_scheduler(tick, 0.05)
    job = scheduler.get_job("funnel_tick")
    assert job is not None
    assert (job.max_instances, job.coalesce) == (1, True)
    with caplog.at_level("ERROR", logger="leadbot.scheduler"):
        scheduler.start()
        try:
            await asyncio.wait_for(ran_twice.wait(), 5)
        finally:
            scheduler.shutdown(wait=False)
    assert len(calls) >= 2
    [failure] = [r for r in caplog.records if getattr(r, "event", "") == "scheduler.job_failed"]
    assert failure.__dict__["job"] == "funnel_tick"


async def test_a_tick_cancelled_at_shutdown_is_a_stop_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    started = asyncio.Event()

    async def tick() -> None:
        started.set()
        await asyncio.Event().wait()  # a delivery round waiting on the rate limiter

    scheduler = create_scheduler(tick, 60)
    with caplog.at_level("INFO"):
        scheduler.start()
        await asyncio.wait_for(started.wait(), 5)
        scheduler.shutdown(wait=False)
        running = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    [stopped] = [r for r in caplog.records if getattr(r, "event", "") == "scheduler.job_stopped"]
    assert stopped.__dict__["job"] == "funnel_tick"


def test_daily_job_runs_at_local_time() -> None:
    scheduler = create_scheduler(lambda: asyncio.sleep(0), 60)

    async def digest() -> None:
        pass

    job = add_daily_job(scheduler, digest, 9, 30, ZONE)
    trigger = job.trigger
    assert isinstance(trigger, CronTrigger)
    assert str(trigger.timezone) == "Europe/Moscow"
    assert (job.id, job.max_instances) == ("digest", 1)
    assert "hour='9'" in str(trigger) and "minute='30'" in str(trigger)
