"""The emulator's payments, checked like Telegram checks them: sendInvoice's limits, Stars'
rules, the 10 seconds for answerPreCheckoutQuery, and refundStarPayment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import LabeledPrice
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.control import ControlClient
from telegram_emulator.payments import ledger

from bot.delivery_middleware import WriteGuardMiddleware
from tests.botapi_spec import assert_requests_valid

TOKEN = "381764678:TEST:100500"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> Clock:
    return Clock()


@pytest.fixture
async def emu(wall: Clock) -> AsyncIterator[TelegramEmulator]:
    async with TelegramEmulator(wall_clock=wall) as emulator:
        yield emulator
        assert_requests_valid(emulator.requests)


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
    session.middleware(WriteGuardMiddleware())
    bot = Bot(DEFAULT_TOKEN, session=session)
    yield bot
    await bot.session.close()


def invoice(chat_id: int, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "chat_id": chat_id, "title": "Course", "description": "Twelve weeks",
        "payload": "lb1:1:full:abcdef", "provider_token": TOKEN, "currency": "RUB",
        "prices": [LabeledPrice(label="Course", amount=4_990_000)],
    }  # fmt: skip
    return {**values, **changes}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"title": "x" * 33}, "INVOICE_TITLE_TOO_LONG"),
        ({"title": " "}, "INVOICE_TITLE_INVALID"),
        ({"description": "d" * 256}, "INVOICE_DESCRIPTION_TOO_LONG"),
        ({"payload": "п" * 65}, "INVOICE_PAYLOAD_INVALID"),  # 130 bytes
        ({"currency": "rub"}, "CURRENCY_INVALID"),
        ({"provider_token": ""}, "PAYMENT_PROVIDER_INVALID"),
        ({"prices": [LabeledPrice(label="x", amount=0)]}, "CURRENCY_TOTAL_AMOUNT_INVALID"),
        ({"currency": "XTR"}, "STARS_INVOICE_INVALID"),  # a provider token with Stars
        (
            {
                "currency": "XTR",
                "provider_token": "",
                "prices": [LabeledPrice(label="a", amount=1), LabeledPrice(label="b", amount=1)],
            },
            "STARS_INVOICE_INVALID",
        ),
    ],
)
async def test_send_invoice_is_refused_like_telegram(
    emu: TelegramEmulator, bot: Bot, changes: dict[str, Any], error: str
) -> None:
    user = emu.add_user("Ann")
    with pytest.raises(TelegramBadRequest) as refused:
        await bot.send_invoice(**invoice(user.id, **changes))
    assert error in refused.value.message
    assert user.messages == []


async def test_paying_an_invoice_waits_for_the_bots_answer(
    emu: TelegramEmulator, bot: Bot, wall: Clock
) -> None:
    user = emu.add_user("Ann")
    sent = await bot.send_invoice(**invoice(user.id))
    assert sent.invoice is not None and sent.invoice.total_amount == 4_990_000
    [message] = user.messages
    assert message.kind == "invoice" and message.labels == ["Pay 49900.00 RUB"]

    # Nobody answers: Telegram gives up after its 10 seconds and takes no money.
    silent = await user.pay(message, timeout=0.2)
    assert silent.status == "timeout" and ledger(emu.world).charges == {}
    wall.now += 11
    with pytest.raises(TelegramBadRequest):
        await bot.answer_pre_checkout_query(silent.query.query_id, ok=True)

    query = emu.world.updates[-1]["pre_checkout_query"]
    assert query["invoice_payload"] == "lb1:1:full:abcdef" and query["currency"] == "RUB"

    async def answer_next(ok: bool, **extra: Any) -> None:
        await emu.wait_until(lambda: len(ledger(emu.world).queries) > before)
        newest = list(ledger(emu.world).queries)[-1]
        await bot.answer_pre_checkout_query(newest, ok=ok, **extra)

    before = len(ledger(emu.world).queries)
    declined, _ = await asyncio.gather(
        user.pay(message, timeout=2), answer_next(False, error_message="Sold out")
    )
    assert declined.status == "declined" and declined.error_message == "Sold out"
    before = len(ledger(emu.world).queries)
    paid, _ = await asyncio.gather(user.pay(message, timeout=2), answer_next(True))
    assert paid.status == "paid" and paid.charge is not None
    success = emu.world.updates[-1]["message"]["successful_payment"]
    assert success["telegram_payment_charge_id"] == paid.charge.telegram_payment_charge_id
    assert success["total_amount"] == 4_990_000
    # A second answer to the same query is refused, as Telegram does.
    with pytest.raises(TelegramBadRequest):
        await bot.answer_pre_checkout_query(paid.query.query_id, ok=True)


async def test_a_refusal_needs_its_reason(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Ann")
    record = await user.pre_checkout("anything", "RUB", 100, timeout=0.01)
    with pytest.raises(TelegramBadRequest) as refused:
        await bot.answer_pre_checkout_query(record.query_id, ok=False)
    assert "ERROR_MESSAGE_EMPTY" in refused.value.message


async def test_stars_are_refunded_once(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Ann")
    stars = [LabeledPrice(label="Course", amount=500)]
    await bot.send_invoice(**invoice(user.id, currency="XTR", provider_token="", prices=stars))
    [message] = user.messages
    record = await user.checkout(message, timeout=0.01)
    await bot.answer_pre_checkout_query(record.query_id, ok=True)
    paid = user.complete_payment(record)
    assert paid.charge is not None and paid.charge.provider_payment_charge_id == ""
    charge = paid.charge.telegram_payment_charge_id
    with pytest.raises(TelegramBadRequest, match="CHARGE_ID_INVALID"):
        await bot.refund_star_payment(user_id=user.id + 1, telegram_payment_charge_id=charge)
    assert await bot.refund_star_payment(user_id=user.id, telegram_payment_charge_id=charge)
    refunded = emu.world.updates[-1]["message"]["refunded_payment"]
    assert refunded["telegram_payment_charge_id"] == charge
    with pytest.raises(TelegramBadRequest, match="CHARGE_ALREADY_REFUNDED"):
        await bot.refund_star_payment(user_id=user.id, telegram_payment_charge_id=charge)


async def test_the_control_api_pays_the_newest_invoice(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user("Ann")
    async with ControlClient(emu.base_url) as control:
        with pytest.raises(RuntimeError, match="no invoice"):
            await control.pay(user.id)
        await bot.send_invoice(**invoice(user.id))

        async def approve() -> None:
            await emu.wait_until(lambda: ledger(emu.world).queries)
            await bot.answer_pre_checkout_query(next(iter(ledger(emu.world).queries)), ok=True)

        result, _ = await asyncio.gather(control.pay(user.id), approve())
    assert result["status"] == "paid" and result["telegram_payment_charge_id"]
