"""Payments in the bot, below the presentation: offers in the script (checked with the line
of each mistake), the invoice payload, the pre-checkout verdicts, a payment recorded once per
Telegram charge, refunds, exact Decimal money in the report, the CRM's purchase event, a
campaign step's invoice through the outbox, and `check`'s word on unsendable offers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bot.delivery_middleware import WriteGuardMiddleware
from bot.outbox import Outbox
from funnel.core.clock import FakeClock
from funnel.core.errors import InputError
from funnel.core.models import Lead, Purchase, StageEvent
from funnel.handoff import crm, payments
from funnel.handoff.purchases import record_purchase
from funnel.reports.funnel_report import funnel_report
from funnel.reports.money import from_cents, money_ratio, return_percent
from funnel.reports.periods import parse_period
from funnel.script.loading import ScriptError, parse_script
from funnel.script.schema import Script
from tests.conftest import ROOT, RU_SCRIPT
from tests.test_campaigns import NOON, SCRIPT_YAML, ZONE, add_lead, make_script

OFFERS_YAML = """offers:
  - id: course
    title: "Python course"
    description: "12 weeks with a mentor"
    price: "49900"
    currency: RUB
  - id: stars
    title: "Mini course"
    description: "Seven lessons"
    price: 250
    currency: XTR
"""
PAYING_SCRIPT = make_script(
    SCRIPT_YAML + OFFERS_YAML,
    **{
        "hot: {stage: qualified, text: Hot}": "hot: {stage: qualified, text: Hot, offer: course}",
        "{after: 4d, text: Offer, buttons: [book], notify_managers: true}": (
            "{after: 4d, text: Offer, buttons: [book], offer: stars}"
        ),
    },
)


def refusal(source: str) -> list[str]:
    with pytest.raises(ScriptError) as caught:
        parse_script(source, "s.yaml")
    return caught.value.problems


def line_of(source: str, fragment: str) -> int:
    return source[: source.index(fragment)].count("\n") + 1


# -- offers in the script -------------------------------------------------------------------


def test_offers_are_read_as_exact_decimals_and_telegram_units() -> None:
    course, stars = PAYING_SCRIPT.offers
    assert course.price == Decimal("49900") and course.total_amount == 4_990_000
    assert stars.stars and stars.total_amount == 250
    assert PAYING_SCRIPT.outcomes.hot.offer == "course"
    source = SCRIPT_YAML + OFFERS_YAML.replace('"49900"', "499.9")
    assert parse_script(source).offers[0].total_amount == 49_990  # 499.90 ₽, no float drift


def test_an_unknown_offer_is_refused_at_the_line_of_the_reference() -> None:
    source = SCRIPT_YAML.replace(
        "{after: 2d, text: Free lesson, buttons: [book]}",
        "{after: 2d, text: Free lesson, buttons: [book], offer: nope}",
    ).replace("hot: {stage: qualified, text: Hot}", "hot:\n    stage: qualified\n    text: Hot\n"
              "    offer: missing")  # fmt: skip
    problems = refusal(source + OFFERS_YAML)
    assert problems == [
        f"s.yaml:{line_of(source, 'offer: missing')}: outcomes.hot.offer: names offer "
        "'missing', which is not in offers",
        f"s.yaml:{line_of(source, 'offer: nope')}: "
        "campaigns.nurture_qualified.steps.2.offer: names offer 'nope', which is not in offers",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('price: "49900"', 'price: "499.999"'), "at most 2 decimals"),
        (('price: "49900"', 'price: "0"'), "above zero"),
        (('price: "49900"', 'price: "-5"'), "above zero"),
        (('price: "49900"', 'price: "lots"'), "is not a price"),
        (('price: "49900"', "price: true"), "write the price as a number"),
        (("price: 250", 'price: "2.5"'), "whole units"),
        (('price: "49900"', 'price: "9999999999"'), "too large"),
        (("currency: RUB", "currency: rub"), "should match pattern"),
        (('title: "Python course"', 'title: "' + "x" * 33 + '"'), "at most 32"),
        (('description: "12 weeks with a mentor"', 'description: ""'), "at least 1"),
        (("currency: RUB", "currency: RUB\n    photo_url: http://x/p.png"), "https://"),
    ],
)
def test_a_bad_offer_is_refused_with_its_line(change: tuple[str, str], message: str) -> None:
    offers = OFFERS_YAML.replace(*change)
    source = SCRIPT_YAML + offers
    [problem] = refusal(source)
    assert problem.startswith("s.yaml:") and "offers." in problem, problem
    assert message in problem, problem
    assert int(problem.split(":")[1]) > line_of(source, "offers:")


def test_a_script_without_payment_texts_still_loads() -> None:
    # The small test scripts name none of the payment texts: the bot's own words stand in.
    assert PAYING_SCRIPT.texts.payment_thanks is None


def test_the_shipped_scripts_sell_the_course() -> None:
    from funnel.script.loading import load_script

    for name in ("ru.yaml", "en.yaml"):
        script = load_script(ROOT / "scripts" / name)
        assert script.outcomes.hot.offer == "full" and script.offer("full") is not None
        assert any(step.offer for c in script.campaigns for step in c.steps)
        assert script.texts.payment_thanks and script.texts.payment_refunded


# -- the payload ----------------------------------------------------------------------------


def test_the_payload_names_the_lead_and_offer_only() -> None:
    payload = payments.invoice_payload(12, "course", "n0nce_AB")
    assert payload == "lb1:12:course:n0nce_AB"
    assert payments.parse_payload(payload) == (12, "course")
    long = payments.invoice_payload(999_999_999_999, "a" * 24)
    assert len(long.encode()) <= 128 and payments.parse_payload(long) == (
        999_999_999_999,
        "a" * 24,
    )
    assert payments.invoice_payload(1, "course") != payments.invoice_payload(1, "course")


@given(st.text(max_size=200))
def test_a_forged_payload_is_never_taken_for_ours(text: str) -> None:
    parsed = payments.parse_payload(text)
    if parsed is not None:
        lead_id, offer_id = parsed
        assert text.startswith(f"lb1:{lead_id}:{offer_id}:")


def test_telegram_units_become_money_exactly() -> None:
    assert payments.to_amount(4_990_050, "RUB") == Decimal("49900.50")
    assert payments.to_amount(1, "USD") == Decimal("0.01")
    assert payments.to_amount(250, "XTR") == Decimal("250.00")
    assert payments.to_amount(500, "JPY") == Decimal("500.00")


# -- pre-checkout, the payment, refunds -----------------------------------------------------


async def lead(sessions: async_sessionmaker[AsyncSession], user_id: int = 777) -> int:
    return await add_lead(sessions, stage="qualified", user_id=user_id, chat_id=user_id)


async def check(session: AsyncSession, script: Script = PAYING_SCRIPT, **fields: Any) -> Any:
    values: dict[str, Any] = {"payer_id": 777, "payload": "lb1:1:course:abcdef",
                              "currency": "RUB", "total_amount": 4_990_000, **fields}  # fmt: skip
    return await payments.check_checkout(session, script, **values)


async def test_pre_checkout_verdicts(sessions: async_sessionmaker[AsyncSession]) -> None:
    await lead(sessions)
    async with sessions() as session:
        assert (await check(session)).ok
        assert (await check(session, total_amount=4_990_001)).reason == "price_changed"
        assert (await check(session, currency="USD")).reason == "price_changed"
        assert (await check(session, payer_id=778)).reason == "not_yours"
        assert (await check(session, payload="lb1:2:course:abcdef")).reason == "unknown_invoice"
        assert (await check(session, payload="lb1:1:gone:abcdef")).reason == "offer_gone"
        assert (await check(session, payload="")).reason == "unknown_invoice"
        assert (await check(session, payload="lb1:1:course:a\nb")).reason == "unknown_invoice"
        row = await session.get(Lead, 1)
        assert row is not None
        row.deleted_at = NOON
        assert (await check(session)).reason == "forgotten"


async def pay(session: AsyncSession, charge: str, **fields: Any) -> payments.Paid:
    values: dict[str, Any] = {"payer_id": 777, "payload": "lb1:1:course:abcdef",
                              "currency": "RUB", "total_amount": 4_990_000,
                              "telegram_charge_id": charge, "provider_charge_id": "prov-1",
                              "at": NOON, **fields}  # fmt: skip
    return await payments.record_payment(session, PAYING_SCRIPT, **values)


async def test_a_charge_is_recorded_once_and_a_repeat_makes_the_lead_loyal(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await lead(sessions)
    async with sessions() as session:
        first = await pay(session, "tg-charge-1")
        await session.commit()
    assert (first.status, first.stage, first.amount) == ("recorded", "customer", Decimal("49900"))
    async with sessions() as session:
        again = await pay(session, "tg-charge-1")
        await session.commit()
    assert again.status == "duplicate" and again.purchase_id == first.purchase_id
    async with sessions() as session:
        repeat = await pay(session, "tg-charge-2", payload="lb1:1:stars:abcdef",
                           currency="XTR", total_amount=250)  # fmt: skip
        await session.commit()
        rows = (await session.scalars(select(Purchase).order_by(Purchase.id))).all()
        events = (await session.scalars(select(StageEvent.to_stage).order_by(StageEvent.id))).all()
    assert repeat.stage == "loyal"
    assert [(p.amount, p.currency, p.offer) for p in rows] == [
        (Decimal("49900.00"), "RUB", "course"), (Decimal("250.00"), "XTR", "stars"),
    ]  # fmt: skip
    assert events[-2:] == ["customer", "loyal"]


async def test_a_payment_with_a_foreign_payload_goes_to_the_payer(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await lead(sessions)
    await lead(sessions, user_id=888)
    async with sessions() as session:
        paid = await pay(session, "tg-x", payer_id=888)
        nobody = await pay(session, "tg-y", payer_id=999, payload="junk")
    assert paid.lead_id == 2 and nobody.status == "unmatched"


async def test_refunds_name_one_purchase_and_never_twice(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await lead(sessions)
    async with sessions() as session:
        with pytest.raises(InputError) as nothing:
            await payments.find_refundable(session, "#1")
        assert nothing.value.code == "refund.nothing_to_refund"
        await pay(
            session, "stx-charge-1", payload="lb1:1:stars:abcdef", currency="XTR", total_amount=250
        )
        await pay(session, "tg-charge-2")
        await session.commit()
    async with sessions() as session:
        with pytest.raises(InputError) as several:
            await payments.find_refundable(session, "1")
        assert several.value.code == "refund.several"
        assert "stx-charge-1" in several.value.fields["charges"]
        found = await payments.find_refundable(session, "stx-charge-1")
        assert found.via_telegram and found.lead.id == 1
        assert await payments.mark_refunded(session, found.purchase, 5, NOON)
        assert not await payments.mark_refunded(session, found.purchase, 5, NOON)
        await session.commit()
    async with sessions() as session:
        # One purchase left: the lead's number names it now.
        left = await payments.find_refundable(session, "#1")
        assert left.purchase.telegram_payment_charge_id == "tg-charge-2" and not left.via_telegram
        for reference, code in (("stx-charge-1", "refund.already_refunded"),
                                ("nope-nope", "refund.unknown_charge"),
                                ("x", "refund.bad_reference"), ("#3", "refund.no_lead"),
                                ("a b;c", "refund.bad_reference")):  # fmt: skip
            with pytest.raises(InputError) as refused:
                await payments.find_refundable(session, reference)
            assert refused.value.code == code, reference


# -- money in the report --------------------------------------------------------------------


async def test_report_money_is_decimal_and_exact(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    ids = [await add_lead(sessions, stage="qualified", user_id=900 + n) for n in range(3)]
    async with sessions() as session:
        leads = [await session.get(Lead, i) for i in ids]
        # 0.1 + 0.2 is 0.30000000000000004 in binary floats; money must say 0.30.
        for row, amount in zip(leads, ("0.10", "0.20", "0.20"), strict=True):
            assert row is not None
            await record_purchase(session, PAYING_SCRIPT, row, Decimal(amount), "RUB", 1, NOON)
        await session.commit()
    async with sessions() as session:
        report = await funnel_report(
            session, PAYING_SCRIPT, now=NOON, period=parse_period(None, NOON)
        )
    money = report.money
    assert isinstance(money.revenue, Decimal) and money.revenue == Decimal("0.50")
    assert str(money.revenue) == "0.50"
    assert money.average_check == Decimal("0.17")  # 0.1666… half up
    assert money.ltv == Decimal("0.17")  # one purchase per customer here
    assert report.to_json()["money"]["revenue"] == 0.5
    # Refunding one takes it out of revenue, purchases, customers and the average.
    async with sessions() as session:
        purchase = (await session.scalars(select(Purchase).order_by(Purchase.id))).first()
        assert purchase is not None
        await payments.mark_refunded(session, purchase, 1, NOON)
        await session.commit()
    async with sessions() as session:
        report = await funnel_report(
            session, PAYING_SCRIPT, now=NOON, period=parse_period(None, NOON)
        )
    money = report.money
    assert (money.revenue, money.purchases, money.customers) == (Decimal("0.40"), 2, 2)
    assert money.average_check == Decimal("0.20") and money.ltv == Decimal("0.20")


def test_payment_settings_keep_the_token_secret() -> None:
    from bot.settings import load_settings

    assert load_settings(_env_file=None, payment_provider_token="  ").provider_token is None
    settings = load_settings(_env_file=None, payment_provider_token="381764678:TEST:1")
    assert settings.provider_token == "381764678:TEST:1"
    assert "381764678:TEST:1" not in repr(settings) and "TEST:1" not in str(settings)


def test_money_arithmetic_rounds_half_up_and_stays_decimal() -> None:
    assert from_cents(30) == Decimal("0.30") and from_cents(None) == Decimal("0.00")
    assert money_ratio(Decimal("0.05"), 2) == Decimal("0.03")
    assert money_ratio(Decimal("10"), 0) is None
    assert return_percent(Decimal("30000"), Decimal("10000")) == 200.0
    assert return_percent(Decimal("1"), Decimal("3")) == -66.67


# -- the CRM hears of the purchase ------------------------------------------------------------


async def test_the_crm_purchase_event_carries_exact_money(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await lead(sessions)
    async with sessions() as session:
        paid = await pay(session, "tg-crm", total_amount=4_990_050, payload="lb1:1:course:abcdef")
        purchase = await session.get(Purchase, paid.purchase_id)
        row = await session.get(Lead, 1)
    assert purchase is not None
    payload = crm.purchase_payload(purchase, "paid", "key-1", row)
    assert payload["event"] == "purchase" and payload["amount"] == "49900.50"
    assert payload["telegram_payment_charge_id"] == "tg-crm" and payload["lead_id"] == 1
    assert "name" not in payload and "username" not in payload
    assert crm.purchase_payload(purchase, "refunded", "key-2", row)["event"] == "refund"


# -- a campaign step's invoice, through the outbox --------------------------------------------


async def test_a_campaign_step_sends_its_offer_as_an_invoice(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with TelegramEmulator(rate_per_second=200) as emu:
        user = emu.add_user("Ann")
        await add_lead(sessions, stage="qualified", at=NOON - timedelta(days=7),
                       user_id=user.id, chat_id=user.chat_id)  # fmt: skip
        session = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
        session.middleware(WriteGuardMiddleware())
        bot = Bot(DEFAULT_TOKEN, session=session)
        try:
            outbox = Outbox(sessions=sessions, bot=bot, script=lambda: PAYING_SCRIPT,
                            clock=FakeClock(NOON), zone=ZONE, manager_chat_id=None)  # fmt: skip
            assert (await outbox.tick()).sent == 1
        finally:
            await bot.session.close()
        text, invoice = emu.messages(user.chat_id)
        assert text.plain_text == "Offer"
        assert invoice.kind == "invoice" and invoice.raw["invoice"]["total_amount"] == 250
        [request] = emu.requests_for("sendInvoice")
        assert request.params["currency"] == "XTR"
        assert payments.parse_payload(request.params["payload"]) == (1, "stars")


# -- `check` names offers that cannot be sent -------------------------------------------------


def test_check_warns_about_an_offer_that_needs_a_provider_token() -> None:
    env = {**os.environ, "BOT_TOKEN": "123456:ABCDEF", "ADMIN_IDS": "5",
           "MANAGER_CHAT_ID": "-100123", "PAYMENT_PROVIDER_TOKEN": ""}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "bot", "check", str(RU_SCRIPT)], cwd=ROOT, capture_output=True,
        text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 0 and run.stdout.startswith("ok: ")
    lines = run.stderr.splitlines()
    assert len(lines) == 2 and all("PAYMENT_PROVIDER_TOKEN" in line for line in lines)
    assert "'full'" in lines[0] and "RUB" in lines[0]


async def test_the_lead_card_marks_a_refunded_payment(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from funnel.reports.lead_card import lead_card
    from handlers.views.lead_card import format_lead_card_html

    await lead(sessions)
    async with sessions() as session:
        await pay(session, "tg-card-1")
        await pay(session, "tg-card-2", total_amount=4_990_050)
        found = await payments.find_refundable(session, "tg-card-1")
        await payments.mark_refunded(session, found.purchase, 5, NOON)
        await session.commit()
        card = await lead_card(session, PAYING_SCRIPT, 1)
    assert card is not None
    assert [(p.amount, p.refunded) for p in card.purchases] == [
        (Decimal("49900.00"), True), (Decimal("49900.50"), False),
    ]  # fmt: skip
    text = format_lead_card_html(card, lang="ru")
    assert "49\u202f900\u00a0₽ (возврат)" in text and "49\u202f900,50\u00a0₽" in text
    assert "49\u202f900,50\u00a0₽ (возврат)" not in text
