"""An update is never dropped: a locked database, a write conflict and a crash between
fetching and handling are retried or resumed, and the user is answered; when the database
stays away the user is asked to try again and the log names the update, never the person."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiogram.types import Update
from sqlalchemy import select, update
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator

from bot import db, inbox
from bot.app import App
from bot.logs import FieldsFormatter
from funnel.core.clock import FakeClock
from funnel.core.models import Answer, InboxUpdate, Lead, Purchase
from funnel.dialogue.flow import Dialogue
from funnel.handoff import purchases
from tests import engines
from tests.botapi_spec import assert_requests_valid
from tests.e2e.conftest import HOT, World, fast_limiter, qualify, running_world, settings_for

NAME, USERNAME = "Зоя", "zoya_private"


def hold_lock(path: Path, seconds: float) -> threading.Thread:
    """Another process's writer takes SQLite's write lock and holds it for `seconds`."""
    taken = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, timeout=5)
        connection.execute("BEGIN EXCLUSIVE")
        taken.set()
        threading.Event().wait(seconds)
        connection.rollback()
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(5)
    return thread


@contextmanager
def locked(path: Path, seconds: float) -> Iterator[None]:
    thread = hold_lock(path, seconds)
    try:
        yield
    finally:
        thread.join()


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    formatter = FieldsFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_SECONDS", 0.3)


@engines.sqlite_only  # it locks the SQLite file itself
async def test_a_start_during_a_locked_database_is_answered_after_the_lock(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, short_busy: None,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.INFO)
    async with running_world(emu, tmp_path, clock) as world:
        user = world.user(NAME, username=USERNAME)
        with locked(tmp_path / "bot.sqlite3", 3.0):
            await user.send("/start vk_ads")
            await asyncio.sleep(1.5)
            assert user.messages == []  # still locked: no reply yet, nothing lost
        greeting = await user.next_message(timeout=15)
        assert greeting.buttons
        async with world.sessions() as session:
            lead = (await session.scalars(select(Lead))).one()
            assert lead.source == "vk_ads" and lead.first_name == NAME
    text = log_text(caplog)
    # The lock was met and waited out (storing the update, or handling it), never dropped.
    assert "db.retry" in text or "update.retry" in text
    assert NAME not in text and USERNAME not in text


async def test_a_payment_that_meets_a_write_conflict_is_recorded_once(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await qualify(world, HOT, "Анна", username="anna")
    original = purchases.record_purchase
    conflicts = 0

    async def conflicting(session, script, lead, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal conflicts
        if conflicts == 0:
            conflicts += 1
            # A follow-up (another transaction) changes the lead under the admin's /paid.
            async with world.sessions() as other:
                await other.execute(
                    update(Lead).where(Lead.id == lead.id).values(version=Lead.version + 1)
                )
                await other.commit()
        return await original(session, script, lead, *args, **kwargs)

    monkeypatch.setattr("handlers.admin.record_purchase", conflicting)
    caplog.set_level(logging.INFO)
    await world.admin.send("/paid @anna 6900")
    reply = await world.admin.next_message(timeout=15)
    assert "6900" in reply.plain_text or "6 900" in reply.plain_text
    await asyncio.sleep(0.3)
    assert len([m for m in world.admin.messages if "Оплат" in m.plain_text]) == 1
    async with world.sessions() as session:
        assert len((await session.scalars(select(Purchase))).all()) == 1
        assert (await session.scalars(select(Lead))).one().stage == "customer"
    assert conflicts == 1 and "update.retry" in log_text(caplog)


@engines.sqlite_only  # it locks the SQLite file itself
async def test_a_database_that_stays_locked_asks_the_user_to_try_again(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, short_busy: None,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The update was stored, then the database locked up for longer than the update's
    tries (shortened to a second here, about two minutes in production)."""
    caplog.set_level(logging.INFO)
    original = Dialogue.start
    holders: list[threading.Thread] = []

    async def start_under_a_lock(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not holders:
            holders.append(await asyncio.to_thread(hold_lock, tmp_path / "bot.sqlite3", 4.0))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Dialogue, "start", start_under_a_lock)
    settings = settings_for(emu, tmp_path)
    app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter(),
              retry_seconds=1.0)  # fmt: skip
    await app.start(scheduler=False)
    try:
        user = emu.add_user(NAME, username=USERNAME, language_code="ru")
        await user.send("/start")
        sorry = await user.next_message(timeout=10)
        assert "попробуйте ещё раз" in sorry.plain_text
        await asyncio.to_thread(holders[0].join)
        await user.send("/start")
        assert (await user.next_message(timeout=10)).buttons
        async with app.sessions() as session:
            assert len((await session.scalars(select(Lead))).all()) == 1
    finally:
        await app.stop()
    text = log_text(caplog)
    assert "update.gave_up" in text and "update_id=" in text
    assert NAME not in text and USERNAME not in text


async def test_an_update_received_before_a_crash_is_handled_at_the_next_start(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    """The process died after getUpdates returned a tap and before it was handled: the
    inbox still holds it, the next start handles it (and Telegram's redelivery is skipped)."""
    async with running_world(emu, tmp_path, clock) as world:
        user = world.user("Вера")
        await user.send("/start")
        question = await user.next_message()
        # The tap as the bot would have fetched it, stored in the inbox, never handled.
        tap = 10_000  # beyond anything the emulator has handed out in this test
        button = question.buttons[0][0]
        payload = {
            "update_id": tap,
            "callback_query": {
                "id": "crash-1",
                "from": user.to_api(),
                "chat_instance": "1",
                "message": {
                    "message_id": question.message_id,
                    "date": 1_700_000_000,
                    "chat": {"id": user.chat_id, "type": "private"},
                    "text": question.plain_text,
                },
                "data": button.callback_data,
            },
        }
        item = Update.model_validate(payload)
        async with world.sessions() as session:
            stored = await inbox.store(session, [item], clock.now(), world.app.bot.id)
            assert [s.update.update_id for s in stored] == [tap]
            await session.commit()
    async with running_world(emu, tmp_path, clock) as world:
        second = await user.next_message(timeout=10)
        assert second.message_id != question.message_id
        async with world.sessions() as session:
            assert len((await session.scalars(select(Answer))).all()) == 1
            row = await session.scalar(select(InboxUpdate).where(InboxUpdate.update_id == tap))
            assert row is not None and row.handled_at is not None and row.payload == ""
            # Telegram delivering it once more changes nothing.
            assert await inbox.store(session, [item], clock.now(), world.app.bot.id) == []


async def test_a_restarted_bot_api_server_numbering_anew_meets_a_bot_that_answers(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A newcomer's second run: the emulator (or a local Bot API server) restarted, the same
    database. Its update ids begin again from 1, and the bot answers them."""
    caplog.set_level(logging.INFO)
    first = TelegramEmulator(rate_per_second=1000, chat_rate_per_second=200, chat_burst=50)
    await first.start()
    port = int(first.base_url.rsplit(":", 1)[1])
    try:
        async with running_world(first, tmp_path, clock) as world:
            anna = world.user("Анна")
            await anna.send("/start")
            assert (await anna.next_message(timeout=10)).buttons
    finally:
        await first.stop()
    second = TelegramEmulator(rate_per_second=1000, chat_rate_per_second=200, chat_burst=50)
    await second.start(port=port)
    try:
        async with running_world(second, tmp_path, clock) as world:
            boris = world.user("Борис")
            await boris.send("/start")
            assert (await boris.next_message(timeout=10)).buttons
        assert_requests_valid(second.requests)
    finally:
        await second.stop()
    assert "inbox.renumbered" in caplog.text
