"""The delivery engine every outbox shares: one reading of send failures, and a row that is
`sending` only while its request is on the wire, so a graceful stop loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage
from sqlalchemy import select
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bot.delivery import STALE_SLOT_SECONDS, Courier, classify
from bot.delivery_middleware import RateLimitMiddleware, WriteGuardMiddleware
from bot.outbox import Outbox
from bot.ratelimit import RateLimiter
from funnel.core.clock import FakeClock
from funnel.core.models import Touch
from tests.test_campaigns import NOON, SCRIPT, ZONE, add_lead

METHOD = SendMessage(chat_id=1, text="x")


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (TelegramRetryAfter(METHOD, "Too Many Requests: retry after 3", 3), "retry"),
        (TelegramForbiddenError(METHOD, "Forbidden: bot was blocked by the user"), "blocked"),
        (TelegramBadRequest(METHOD, "Bad Request: chat not found"), "refused"),
        (TelegramServerError(METHOD, "Internal Server Error"), "unknown"),
        (TelegramNetworkError(METHOD, "Request timeout error"), "unknown"),
        (TimeoutError(), "unknown"),
        (RuntimeError("a bug"), "unknown"),
    ],
)
def test_one_reading_of_every_send_failure(error: BaseException, verdict: str) -> None:
    assert classify(error).verdict == verdict


def test_a_connection_never_made_is_retried_and_429_says_when() -> None:
    refused = TelegramNetworkError(METHOD, "Cannot connect")
    refused.__cause__ = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        OSError(111, "refused"),
    )
    assert classify(refused).verdict == "retry"
    attempt = classify(TelegramRetryAfter(METHOD, "Too Many Requests: retry after 7", 7))
    assert attempt.retry_after == 7.0


async def test_the_claim_waits_for_the_slot() -> None:
    """The courier takes the slot before it claims: while a chat's limit holds a row back,
    the row is not claimed."""
    limiter = RateLimiter(rate_per_second=100, chat_rate_per_second=1, chat_burst=1)
    courier = Courier(limiter, "test")
    events: list[str] = []

    async def claim() -> bool:
        events.append("claim")
        return True

    async def request() -> str:
        events.append("send")
        return "ok"

    first = await courier.deliver(7, claim, request)
    second = courier.spawn(courier.deliver(7, claim, request))
    await asyncio.sleep(0.3)
    assert events == ["claim", "send"]  # the second row waits, unclaimed
    await courier.drain(1.0)
    assert second.cancelled() and first.verdict == "sent"
    assert events == ["claim", "send"]


async def test_a_claim_that_stalled_takes_a_fresh_slot_so_the_sends_stay_spaced() -> None:
    """Rows whose claims waited on a busy database together would all leave the moment it
    answers, over the rate; after a claim that stalled, a row takes a fresh slot. Only the
    rows whose slots are still recent (STALE_SLOT_SECONDS) leave at once."""
    rate, rows = 20.0, 20
    limiter = RateLimiter(rate_per_second=rate, chat_rate_per_second=100, chat_burst=10)
    courier = Courier(limiter, "test")
    database_answers = asyncio.Event()
    sent_at: list[float] = []

    async def stalled_claim() -> bool:
        await database_answers.wait()
        return True

    async def request() -> str:
        sent_at.append(asyncio.get_running_loop().time())
        return "ok"

    tasks = [courier.spawn(courier.deliver(chat, stalled_claim, request)) for chat in range(rows)]
    await asyncio.sleep(rows / rate + 0.2)  # every slot granted, every claim stuck
    database_answers.set()
    await asyncio.gather(*tasks)
    assert len(sent_at) == rows
    window = 0.1
    busiest = max(sum(1 for t in sent_at if start <= t < start + window) for start in sent_at)
    assert busiest <= STALE_SLOT_SECONDS * rate + window * rate + 1, sorted(sent_at)
    assert sent_at[-1] - sent_at[0] >= (rows - STALE_SLOT_SECONDS * rate - 2) / rate


# -- the touch outbox against the emulator --------------------------------------------------


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(rate_per_second=1000, chat_burst=5) as emulator:
        yield emulator


async def paced_bot(emu: TelegramEmulator, limiter: RateLimiter) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
    session.middleware(WriteGuardMiddleware())
    session.middleware(RateLimitMiddleware(limiter))
    return Bot(DEFAULT_TOKEN, session=session)


async def due_wave(sessions: Any, emu: TelegramEmulator, count: int) -> list[int]:
    chats = []
    for i in range(count):
        user = emu.add_user(f"Lead{i}")
        await add_lead(sessions, user_id=user.id, chat_id=user.chat_id)
        chats.append(user.chat_id)
    return chats


async def statuses(sessions: Any) -> list[str]:
    async with sessions() as session:
        return list((await session.scalars(select(Touch.status).order_by(Touch.id))).all())


async def test_a_graceful_stop_mid_wave_loses_nothing_and_doubles_nothing(
    sessions: Any, emu: TelegramEmulator
) -> None:
    chats = await due_wave(sessions, emu, 12)
    limiter = RateLimiter(rate_per_second=4)  # three seconds of wave
    bot = await paced_bot(emu, limiter)
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = Outbox(sessions=sessions, bot=bot, script=lambda: SCRIPT, clock=clock, zone=ZONE,
                    manager_chat_id=None, limiter=limiter)  # fmt: skip
    try:
        tick = asyncio.ensure_future(outbox.tick())
        await asyncio.sleep(1.0)
        now = await statuses(sessions)
        # Only what is on the wire may be "sending"; the rest waits as planned.
        assert now.count("sending") <= 1 and now.count("planned") >= 6
        await outbox.stop(grace_seconds=5)
        stats = await tick
        after_stop = await statuses(sessions)
        assert "sending" not in after_stop and "unknown" not in after_stop
        assert after_stop.count("sent") == stats.sent == len(emu.requests_for("sendMessage"))
        assert after_stop.count("planned") == 12 - stats.sent > 0
        # The next start sends the rest, each once.
        again = Outbox(sessions=sessions, bot=bot, script=lambda: SCRIPT, clock=clock,
                       zone=ZONE, manager_chat_id=None, limiter=RateLimiter(1000))  # fmt: skip
        await again.tick()
    finally:
        await bot.session.close()
    assert set(await statuses(sessions)) == {"sent"}
    assert all(len(emu.messages(chat)) == 1 for chat in chats)


async def test_a_429_puts_the_touch_back_to_planned_until_the_pause_is_over(
    sessions: Any, emu: TelegramEmulator
) -> None:
    [chat] = await due_wave(sessions, emu, 1)
    limiter = RateLimiter(rate_per_second=100)
    bot = await paced_bot(emu, limiter)
    clock = FakeClock(NOON + timedelta(hours=1))
    outbox = Outbox(sessions=sessions, bot=bot, script=lambda: SCRIPT, clock=clock, zone=ZONE,
                    manager_chat_id=None, limiter=limiter)  # fmt: skip
    emu.fail_next("sendMessage", error_code=429, retry_after=1)
    try:
        stats = await outbox.tick()
        assert (stats.sent, stats.retried) == (0, 1)
        assert await statuses(sessions) == ["planned"]
        assert limiter.paused_until > 0
        clock.advance(2)
        assert (await outbox.tick()).sent == 1
    finally:
        await bot.session.close()
    assert len(emu.messages(chat)) == 1
