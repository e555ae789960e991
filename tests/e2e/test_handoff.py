"""The hand-off through the emulator: the managers' card and the CRM webhook go through the
notifications outbox; errors are retried on later ticks, a crash never doubles a card, and
the webhook's URL and payload never reach the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator

from bot.app import App
from bot.logs import FieldsFormatter
from funnel.core.clock import FakeClock
from funnel.core.models import Notification
from tests.e2e.conftest import HOT, WARM, World, fast_limiter, qualify, running_world

BOOK = "📅 Записаться на консультацию"
TRIAL = "🎓 Бесплатный пробный урок"
SECRET = "s3cret-crm-token"


@dataclass
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeCrm:
    """A CRM's incoming webhook on localhost: records each POST, answers the statuses queued
    in `answers` (then 200), and holds the first `hold` requests until `release` is set."""

    url: str = ""
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        received = Received(dict(request.headers), await request.json())
        async with self.changed:
            self.received.append(received)
            held = len(self.received) <= self.hold
            self.changed.notify_all()
        if held:
            await self.release.wait()
        status = self.answers.pop(0) if self.answers else 200
        return web.json_response({"accepted": status < 300}, status=status)

    async def wait_for(self, count: int) -> list[Received]:
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(lambda: len(self.received) >= count)
        return self.received


@pytest.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    fake = FakeCrm()
    app = web.Application()
    app.router.add_post("/hook", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/hook?token={SECRET}"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


@pytest.fixture
async def crm_world(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, crm: FakeCrm
) -> AsyncIterator[World]:
    async with running_world(emu, tmp_path, clock, crm_webhook_url=crm.url) as world:
        yield world


async def delivered(world: World) -> None:
    """Everything due has been tried once: a tick, then any delivery kicked meanwhile."""
    await world.app.handoff.tick()
    await world.app.handoff.settle()
    await world.app.replies.settle()


async def rows(world: World, kind: str | None = None) -> list[Notification]:
    async with world.sessions() as session:
        query = select(Notification).order_by(Notification.id)
        if kind is not None:
            query = query.where(Notification.kind == kind)
        return list((await session.scalars(query)).all())


def cards_requested(world: World) -> int:
    return sum(
        1
        for r in world.emu.requests_for("sendMessage")
        if r.params["chat_id"] == world.managers.id
    )


async def restart(world: World, clock: FakeClock) -> App:
    """A second process on the same database, as after a kill -9: started up, not polling."""
    again = App(world.app.settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.prepare()
    return again


def log_lines(caplog: pytest.LogCaptureFixture) -> str:
    """The bot's log as an operator reads it (the fake CRM's own access log left out)."""
    formatter = FieldsFormatter()
    return "\n".join(
        formatter.format(record) for record in caplog.records if record.name != "aiohttp.access"
    )


async def test_the_card_arrives_at_once_and_a_double_tap_makes_no_second(world: World) -> None:
    user = await qualify(world, HOT, username="anna_k")
    card = await world.managers.next_message()
    assert "Лид #" in card.plain_text and "Сменить профессию" in card.plain_text
    assert "🙋 Беру" in card.labels
    outcome = user.last_message
    assert outcome is not None
    before = len(user.messages)
    await user.press(outcome, BOOK)
    await user.press(outcome, BOOK)  # a double tap
    await user.press(outcome, TRIAL)  # the same moment: booked
    await user.wait_for_count(before + 3)
    await delivered(world)
    # One card for the hot verdict, one for the booking; the repeats made none.
    assert len(world.managers.messages) == 2
    assert "Записался на консультацию" in world.managers.messages[1].plain_text
    sent = await rows(world, "manager_card")
    assert [(r.status, r.attempts) for r in sent] == [("sent", 1), ("sent", 1)]
    assert cards_requested(world) == 2


async def test_a_card_refused_by_flood_control_is_retried_on_a_later_tick(
    world: World, clock: FakeClock
) -> None:
    world.emu.fail_next("sendMessage", error_code=429, retry_after=1, chat_id=world.managers.id)
    await qualify(world, HOT, username="anna_k")
    await delivered(world)
    assert world.managers.messages == []
    [row] = await rows(world)
    assert (row.status, row.attempts) == ("planned", 1)
    assert "retry after" in (row.error or "").lower()
    # Not before its backoff is over...
    assert (await world.app.handoff.tick()).sent == 0
    clock.advance(15)
    # ...then the next tick delivers it.
    assert (await world.app.handoff.tick()).sent == 1
    card = await world.managers.next_message()
    assert "Лид #" in card.plain_text
    [row] = await rows(world)
    assert (row.status, row.attempts, row.sent_at) == ("sent", 2, clock.now())


async def test_a_card_that_met_a_server_error_is_never_sent_twice(
    world: World, clock: FakeClock
) -> None:
    """A 5xx may come after Telegram delivered the message: the same reading as for the
    touches, "unknown", and never resent (a doubled card makes two managers call)."""
    world.emu.fail_next("sendMessage", error_code=500, chat_id=world.managers.id)
    await qualify(world, HOT, username="anna_k")
    await delivered(world)
    [row] = await rows(world)
    assert (row.status, row.attempts) == ("unknown", 1)
    assert "Internal Server Error" in (row.error or "")
    clock.advance(3600)
    assert (await world.app.handoff.tick()).sent == 0
    assert world.managers.messages == [] and cards_requested(world) == 1


async def test_a_refused_card_fails_naming_the_setting(
    world: World, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    await world.managers.remove_bot(by=world.manager)
    await qualify(world, HOT, username="anna_k")
    await delivered(world)
    [row] = await rows(world)
    assert row.status == "failed"
    assert row.error == "Forbidden: bot was kicked from the supergroup chat"
    failed = [r for r in caplog.records if r.getMessage().startswith("handoff.card_failed")]
    assert failed and failed[0].levelno == logging.ERROR
    assert "MANAGER_CHAT_ID" in failed[0].getMessage()
    clock.advance(3600)
    await world.app.handoff.tick()
    assert cards_requested(world) == 1


async def test_a_card_a_crash_left_sending_is_unknown_and_never_resent(
    world: World, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    # The card reaches the chat, the answer never comes back; then the process dies.
    world.emu.hang_next("sendMessage", chat_id=world.managers.id)
    world.app.handoff.stop_grace_seconds = 0
    await qualify(world, HOT, username="anna_k")
    await world.managers.next_message()
    [row] = await rows(world)
    assert row.status == "sending"  # claimed in its own commit before the request left
    again = await restart(world, clock)
    try:
        stats = await again.handoff.tick()
        clock.advance(3600)
        stats2 = await again.handoff.tick()
    finally:
        await again.stop()
    assert stats.sent == stats2.sent == 0
    [row] = await rows(world)
    assert row.status == "unknown"
    assert len(world.managers.messages) == 1 and cards_requested(world) == 1
    [warning] = [r for r in caplog.records if "handoff.recovered_unknown" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert getattr(warning, "lead_ids", None) == [row.lead_id]


async def test_the_webhook_posts_the_lead_until_a_2xx_and_logs_neither_url_nor_payload(
    crm_world: World, crm: FakeCrm, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="leadbot")
    crm.answers = [500]
    created = clock.now()
    await qualify(crm_world, HOT, username="anna_k")
    await crm_world.managers.next_message()  # the card goes out as well
    await delivered(crm_world)
    [first] = await crm.wait_for(1)
    [row] = await rows(crm_world, "crm_webhook")
    assert (row.status, row.attempts, row.error) == ("planned", 1, "HTTP 500")
    clock.advance(15)
    await crm_world.app.handoff.tick()
    first, second = await crm.wait_for(2)
    [row] = await rows(crm_world, "crm_webhook")
    assert (row.status, row.attempts) == ("sent", 2)

    body = second.body
    key = body["idempotency_key"]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == key
    assert first.body["idempotency_key"] == key
    assert second.headers["Content-Type"].startswith("application/json")
    assert (body["name"], body["username"], body["link"]) == (
        "Анна", "anna_k", "https://t.me/anna_k"
    )  # fmt: skip
    assert (body["source"], body["stage"], body["temperature"], body["score"]) == (
        "vk_ads", "qualified", "hot", 100
    )  # fmt: skip
    assert [(a["question"], a["value"]) for a in body["answers"]] == [
        ("need", HOT[0]), ("timing", HOT[1]), ("budget", HOT[2]), ("authority", HOT[3])
    ]  # fmt: skip
    assert len(body["reasons"]) == 4 and body["created_at"] == created.isoformat()

    lines = log_lines(caplog)
    assert "HTTP 500" in lines and "handoff.webhook_sent" in lines
    for secret in (SECRET, crm.url, "/hook", key, "Сменить профессию", "anna_k"):
        assert secret not in lines


async def test_a_warm_lead_reaches_the_crm_and_not_the_managers(
    crm_world: World, crm: FakeCrm
) -> None:
    await qualify(crm_world, WARM, username="anna_k")
    await delivered(crm_world)
    [posted] = await crm.wait_for(1)
    assert (posted.body["temperature"], posted.body["score"]) == ("warm", 45)
    assert crm_world.managers.messages == []
    assert [r.kind for r in await rows(crm_world)] == ["crm_webhook"]


async def test_a_webhook_a_crash_left_sending_is_sent_again_with_its_key(
    crm_world: World, crm: FakeCrm, clock: FakeClock
) -> None:
    crm.hold = 1  # the first POST gets no answer before the process dies
    crm_world.app.handoff.stop_grace_seconds = 0
    await qualify(crm_world, WARM, username="anna_k")
    await crm.wait_for(1)
    again = await restart(crm_world, clock)
    try:
        stats = await again.handoff.tick()
    finally:
        await again.stop()
    first, second = await crm.wait_for(2)
    assert stats.sent == 1
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    [row] = await rows(crm_world)
    assert (row.status, row.attempts) == ("sent", 2)


async def test_the_webhook_gives_up_after_a_day(
    crm_world: World, crm: FakeCrm, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    crm.answers = [503] * 1000
    started = clock.now()
    await qualify(crm_world, WARM, username="anna_k")
    await delivered(crm_world)
    for _ in range(100):
        [row] = await rows(crm_world)
        if row.status != "planned":
            break
        clock.set(row.due_at)
        await crm_world.app.handoff.tick()
    assert row.status == "failed" and (row.error or "").startswith("gave up after")
    assert clock.now() - started <= timedelta(hours=24)
    tries = len(crm.received)
    assert tries == row.attempts > 20
    gave_up = [r for r in caplog.records if r.getMessage().startswith("handoff.gave_up")]
    assert gave_up and "CRM_WEBHOOK_URL" in gave_up[0].getMessage()
    clock.advance(86400)
    await crm_world.app.handoff.tick()
    assert len(crm.received) == tries
