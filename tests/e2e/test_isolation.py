"""One person never holds up the others: a flood from one prospect, with Telegram's own pace
(one message a second per chat) on both sides, while others talk and pay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.users import SimUser

from bot.app import App
from funnel.core.clock import FakeClock
from funnel.core.models import InboxUpdate
from handlers.i18n import t
from tests.botapi_spec import assert_requests_valid
from tests.conftest import RU_SCRIPT
from tests.e2e.conftest import HOT, settings_for
from tests.e2e.test_payments import PROVIDER_TOKEN

FLOOD = 200
TALKERS = 20
PAYERS = 5


@asynccontextmanager
async def paced_bot(emu: TelegramEmulator, tmp_path: Path, clock: FakeClock) -> AsyncIterator[App]:
    """The bot with the limiter it runs with in production (30/s, 1/s per chat), a payment
    provider, on an emulator that enforces Telegram's limits."""
    script = tmp_path / "ru.yaml"
    script.write_text(RU_SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    settings = settings_for(
        emu, tmp_path, payment_provider_token=PROVIDER_TOKEN, script_path=str(script)
    )
    app = App(settings, token=DEFAULT_TOKEN, clock=clock)
    await app.start(scheduler=False)
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()  # Telegram's limits: 30/s, about 1/s per chat
    await emulator.start()
    try:
        yield emulator
        assert_requests_valid(emulator.requests)
    finally:
        await emulator.stop()


async def to_invoice(user: SimUser) -> object:
    await user.send("/start vk_ads")
    message = await user.next_message(timeout=20)
    for label in HOT:
        await user.press(message, label)
        message = await user.next_message(timeout=20)
    return await user.wait_for(lambda m: m.kind == "invoice", timeout=20)


async def first_reply_after(user: SimUser, text: str) -> float:
    start = time.monotonic()
    await user.send(text)
    await user.next_message(timeout=30)
    return time.monotonic() - start


async def test_a_flood_from_one_prospect_delays_nobody_else_and_no_payment(
    telegram: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with paced_bot(telegram, tmp_path, clock) as app:
        payers = [telegram.add_user(f"Плательщик {i}") for i in range(PAYERS)]
        invoices = await asyncio.gather(*(to_invoice(user) for user in payers))
        talkers = [telegram.add_user(f"Собеседник {i}") for i in range(TALKERS)]
        flooder = telegram.add_user("Флудер")
        await flooder.send("/start")
        await flooder.next_message(timeout=10)

        for n in range(FLOOD):  # a forwarded pile of messages, all at once
            await flooder.send(f"пересланное сообщение {n}")

        async def pay(user: SimUser, invoice: object) -> tuple[str, float]:
            start = time.monotonic()
            result = await user.pay(invoice, timeout=2)  # type: ignore[arg-type]
            return result.status, time.monotonic() - start

        waits, paid = await asyncio.gather(
            asyncio.gather(*(first_reply_after(user, "/help") for user in talkers)),
            asyncio.gather(*(pay(user, inv) for user, inv in zip(payers, invoices, strict=True))),
        )
        waits = sorted(waits)
        assert waits[-1] <= 1.5, waits  # p99 of 20 is the slowest
        assert [status for status, _ in paid] == ["paid"] * PAYERS
        assert max(seconds for _, seconds in paid) <= 2.0, paid

        # The flooder's first messages are answered, then one "please slow down"; the rest
        # are recorded and left unanswered.
        slow_down = t("updates.slow_down", lang="ru")
        await flooder.wait_for(lambda m: m.plain_text == slow_down, timeout=30)
        await telegram.wait_until(lambda: not telegram.pending_updates, timeout=30)
        await asyncio.sleep(1.0)
        replies = flooder.messages
        assert sum(m.plain_text == slow_down for m in replies) == 1
        assert len(replies) <= 1 + app.settings.inbound_burst + 2, len(replies)
        async with app.sessions() as session:
            unhandled = await session.scalar(
                select(func.count())
                .select_from(InboxUpdate)
                .where(InboxUpdate.handled_at.is_(None))
            )
        # Nothing was dropped unrecorded: every update of the flood is settled in the inbox.
        for _ in range(100):
            if not unhandled:
                break
            await asyncio.sleep(0.1)
            async with app.sessions() as session:
                unhandled = await session.scalar(
                    select(func.count())
                    .select_from(InboxUpdate)
                    .where(InboxUpdate.handled_at.is_(None))
                )
        assert unhandled == 0

        # Once the flood is over the flooder is answered again, and /stop always passes.
        await flooder.send("/stop")
        await flooder.wait_for(lambda m: m not in replies, timeout=10)
