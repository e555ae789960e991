"""The rule that no request goes on the wire inside a write transaction (bot/write_guard.py):
the Bot API session and the CRM client refuse one, on SQLite (the driver's writer gate) and
on PostgreSQL (the engine's events, with TEST_POSTGRES_URL); reads, committed or rolled-back
work and other tasks are let through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.users import SimUser

from bot import write_guard
from bot.crm import CrmWebhook
from bot.delivery_middleware import WriteGuardMiddleware
from bot.write_guard import RequestInWriteTransaction
from funnel.core import store
from funnel.core.models import Lead

SECRET_TEXT = "Анна, ваш номер +7 900 000-00-00"


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator() as emulator:
        yield emulator


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
    session.middleware(WriteGuardMiddleware())
    bot = Bot(DEFAULT_TOKEN, session=session)
    yield bot
    await bot.session.close()


@pytest.fixture
def user(emu: TelegramEmulator) -> SimUser:
    return emu.add_user("Анна")


async def _add_lead(session: AsyncSession) -> int:
    profile = store.Profile(user_id=7, chat_id=7, first_name="Анна")
    lead = store.new_lead(profile, source="direct", stage="new", position=None, version="1",
                          at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC))  # fmt: skip
    session.add(lead)
    await session.flush()
    return lead.id


def _refused_once(method: str) -> None:
    """The refusal was counted; cleared, since this test provoked it on purpose."""
    assert dict(write_guard.refused) == {method: 1}
    write_guard.refused.clear()


async def test_a_send_inside_a_write_is_refused_and_never_leaves(
    sessions: async_sessionmaker[AsyncSession], bot: Bot, emu: TelegramEmulator, user: SimUser
) -> None:
    async with sessions() as session:
        await _add_lead(session)
        assert write_guard.in_write_transaction()
        with pytest.raises(RequestInWriteTransaction) as refused:
            await bot.send_message(user.chat_id, SECRET_TEXT)
        # Names the method, never what the request carried.
        assert refused.value.request == "sendMessage"
        assert "sendMessage" in str(refused.value) and "Анна" not in str(refused.value)
        assert emu.requests_for("sendMessage") == []
        _refused_once("sendMessage")
        await session.commit()
        assert not write_guard.in_write_transaction()
        await bot.send_message(user.chat_id, "after the commit")
    assert [m.plain_text for m in emu.messages(user.chat_id)] == ["after the commit"]


async def test_update_and_textual_writes_count_until_rollback(
    sessions: async_sessionmaker[AsyncSession], bot: Bot, user: SimUser
) -> None:
    async with sessions() as session:
        lead_id = await _add_lead(session)
        await session.commit()
    writes: list[Any] = [
        update(Lead).where(Lead.id == lead_id).values(first_name="Ира"),
        text("UPDATE leads SET first_name = 'Ира' WHERE id = :id").bindparams(id=lead_id),
        text("DELETE FROM answers WHERE lead_id = :id").bindparams(id=lead_id),
    ]
    for statement in writes:
        async with sessions() as session:
            await session.execute(statement)
            with pytest.raises(RequestInWriteTransaction):
                await bot.get_me()
            _refused_once("getMe")
            await session.rollback()
            assert not write_guard.in_write_transaction()
            assert (await bot.get_me()).id == bot.id


async def test_reads_are_not_writes(
    sessions: async_sessionmaker[AsyncSession], bot: Bot, user: SimUser
) -> None:
    async with sessions() as session:
        await session.scalars(select(Lead))
        await session.execute(text("SELECT count(*) FROM leads"))
        # A report's common table expression reads.
        await session.execute(text("WITH n AS (SELECT count(*) AS c FROM leads) SELECT c FROM n"))
        assert not write_guard.in_write_transaction()
        await bot.send_message(user.chat_id, "a read holds nothing")


async def test_a_task_of_its_own_waits_for_no_transaction_of_its_parent(
    sessions: async_sessionmaker[AsyncSession], bot: Bot, emu: TelegramEmulator, user: SimUser
) -> None:
    """As the hand-off's kick does after the commit: another task is not inside the write."""
    async with sessions() as session:
        await _add_lead(session)
        sent = asyncio.create_task(bot.send_message(user.chat_id, "from another task"))
        await asyncio.wait({sent}, timeout=5)
        assert sent.done() and sent.exception() is None
        await session.rollback()
    assert len(emu.messages(user.chat_id)) == 1


async def test_the_crm_client_refuses_inside_a_write(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Nothing listens there: a request that left would fail with a connection error instead.
    crm = CrmWebhook("http://127.0.0.1:9/never")
    try:
        async with sessions() as session:
            await _add_lead(session)
            with pytest.raises(RequestInWriteTransaction):
                await crm.post({"answers": SECRET_TEXT}, "key-1")
            _refused_once("crm.post")
    finally:
        await crm.close()


async def test_the_guard_follows_the_connection_not_the_session(engine: AsyncEngine) -> None:
    """Core connections too (jobs that write with `engine.begin()`), and a transaction that
    ends with its connection's close."""
    async with engine.connect() as connection:
        await connection.execute(text("DELETE FROM answers WHERE lead_id = -1"))
        assert write_guard.in_write_transaction()
    assert not write_guard.in_write_transaction()
    async with engine.begin() as connection:
        await connection.execute(update(Lead).where(Lead.id == -1).values(first_name="x"))
        assert write_guard.in_write_transaction()
    assert not write_guard.in_write_transaction()
