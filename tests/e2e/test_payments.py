"""Payments in the bot through the emulator: the hot outcome's invoice (the right amount, a
payload with nothing of the person), the pre-checkout answer, a payment recorded once however
often Telegram delivers it and across a restart, refusals of changed, removed and forged
invoices, and refunds that take the money out of the report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from bot.app import App
from funnel.core.clock import FakeClock
from funnel.core.models import Lead, Notification, Purchase, StageEvent
from funnel.reports.funnel_report import funnel_report
from funnel.reports.periods import parse_period
from handlers.i18n import t
from tests.conftest import RU_SCRIPT
from tests.e2e.conftest import HOT, World, fast_limiter, qualify, running_world
from tests.e2e.test_handoff import FakeCrm

PROVIDER_TOKEN = "381764678:TEST:100500"
THANKS = "Спасибо за оплату"


def stars_script(tmp_path: Path) -> Path:
    """The shipped script with its course sold for 500 Telegram Stars."""
    text = RU_SCRIPT.read_text(encoding="utf-8")
    old = 'price: "49900"\n    currency: RUB'
    assert old in text
    path = tmp_path / "stars.yaml"
    path.write_text(text.replace(old, 'price: "500"\n    currency: XTR'), encoding="utf-8")
    return path


@pytest.fixture
async def paying(emu: TelegramEmulator, tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    """The shipped script (the course for 49 900 ₽) with a payment provider set up."""
    script = tmp_path / "ru.yaml"
    script.write_text(RU_SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    async with running_world(
        emu, tmp_path, clock, payment_provider_token=PROVIDER_TOKEN, script_path=str(script)
    ) as world:
        yield world


@pytest.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    """The school's CRM on localhost (tests/e2e/test_handoff.py's fake)."""
    fake = FakeCrm()
    app = web.Application()
    app.router.add_post("/hook", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


@pytest.fixture
async def stars(emu: TelegramEmulator, tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    """The course sold for Telegram Stars, and no provider token at all."""
    async with running_world(emu, tmp_path, clock, script_path=str(stars_script(tmp_path))) as w:
        yield w


async def invoice_after_outcome(user: SimUser) -> BotMessage:
    return await user.wait_for(lambda m: m.kind == "invoice")


async def purchases(world: World) -> list[Purchase]:
    async with world.sessions() as session:
        return list((await session.scalars(select(Purchase).order_by(Purchase.id))).all())


async def admin_says(world: World, text: str) -> str:
    await world.admin.send(text)
    return (await world.admin.next_message()).plain_text


async def revenue(world: World, clock: FakeClock) -> tuple[Decimal, int, int]:
    async with world.sessions() as session:
        report = await funnel_report(
            session,
            world.app.scripts.current,
            now=clock.now(),
            period=parse_period(None, clock.now()),
        )
    money = report.money
    return money.revenue, money.purchases, money.customers


async def test_a_hot_lead_pays_the_invoice_once_however_often_telegram_delivers_it(
    paying: World, clock: FakeClock
) -> None:
    world = paying
    user = await qualify(world, HOT, "Анна", username="anna_k")
    invoice = await invoice_after_outcome(user)
    [request] = world.emu.requests_for("sendInvoice")
    params = request.params
    # 49 900 ₽ in kopecks; a provider's token; a payload that names no person.
    assert params["currency"] == "RUB" and params["prices"][0]["amount"] == 4_990_000
    assert params["provider_token"] == PROVIDER_TOKEN
    payload = params["payload"]
    assert len(payload.encode()) <= 128 and payload.startswith("lb1:1:full:")
    assert "Анна" not in payload and "anna" not in payload and str(user.id) not in payload

    result = await user.pay(invoice)
    assert result.status == "paid"
    thanks = await user.wait_for(lambda m: THANKS in m.plain_text, after=invoice)
    assert "Анна" in thanks.plain_text
    # Telegram delivers the same payment again, in a new update: still one purchase.
    user.deliver_payment_again(result)
    user.deliver_payment_again(result)
    await world.emu.wait_until(lambda: len(world.emu.pending_updates) == 0)
    await user.send("/help")
    await user.wait_for(lambda m: "/forget" in m.plain_text, after=thanks)
    assert sum(THANKS in m.plain_text for m in user.messages) == 1

    [purchase] = await purchases(world)
    assert purchase.amount == Decimal("49900.00") and isinstance(purchase.amount, Decimal)
    assert purchase.currency == "RUB" and purchase.offer == "full"
    assert result.charge is not None
    assert purchase.telegram_payment_charge_id == result.charge.telegram_payment_charge_id
    assert purchase.provider_payment_charge_id == result.charge.provider_payment_charge_id
    async with world.sessions() as session:
        lead = await session.get(Lead, purchase.lead_id)
        assert lead is not None and lead.stage == "customer"
        causes = (await session.scalars(select(StageEvent.cause).order_by(StageEvent.id))).all()
    assert causes[-1] == "paid"
    # The managers hear of it once, through the hand-off outbox.
    await world.app.handoff.tick()
    await world.app.handoff.settle()
    note = await world.managers.wait_for(lambda m: "оплатил в боте" in m.plain_text)
    assert "#1" in note.plain_text and "49\u202f900\u00a0₽" in note.plain_text
    async with world.sessions() as session:
        notes = (
            await session.scalars(select(Notification).where(Notification.kind == "payment_note"))
        ).all()
    assert [n.status for n in notes] == ["sent"]
    assert await revenue(world, clock) == (Decimal("49900.00"), 1, 1)


async def test_a_payment_made_while_the_bot_was_down_is_recorded_after_the_restart(
    paying: World, clock: FakeClock
) -> None:
    world = paying
    user = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(user)
    query = await user.checkout(invoice)
    assert query.ok is True
    await world.app.stop()
    # Telegram takes the money while the bot is stopped: the update waits for it.
    result = user.complete_payment(query)
    assert result.status == "paid" and len(world.emu.pending_updates) == 1

    again = App(world.app.settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.start(scheduler=False)
    try:
        await user.wait_for(lambda m: THANKS in m.plain_text, timeout=10, after=invoice)
        async with again.sessions() as session:
            [purchase] = (await session.scalars(select(Purchase))).all()
        assert purchase.amount == Decimal("49900.00") and purchase.refunded_at is None
        drops = [
            r.params.get("drop_pending_updates") for r in world.emu.requests_for("deleteWebhook")
        ]
        assert drops and not any(drops)  # the start-up never drops pending updates
    finally:
        await again.stop()


async def test_a_changed_price_a_removed_offer_and_a_wrong_amount_are_refused(
    paying: World, tmp_path: Path
) -> None:
    world = paying
    user = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(user)
    script = tmp_path / "ru.yaml"
    text = script.read_text(encoding="utf-8")

    # The owner raises the price after the invoice went out.
    script.write_text(text.replace('price: "49900"', 'price: "54900"'), encoding="utf-8")
    assert "загружен" in await admin_says(world, "/reload")
    declined = await user.pay(invoice)
    assert declined.status == "declined"
    assert declined.error_message == t("payment.refused.price_changed", lang="ru")

    # The offer is withdrawn (renamed): its old invoices cannot be paid.
    renamed = text.replace("offer: full", "offer: full_v2").replace("id: full\n", "id: full_v2\n")
    script.write_text(renamed, encoding="utf-8")
    assert "загружен" in await admin_says(world, "/reload")
    gone = await user.pay(invoice)
    assert gone.status == "declined"
    assert gone.error_message == t("payment.refused.offer_gone", lang="ru")

    # The right offer with a wrong amount (a client that tampered with the form).
    script.write_text(text, encoding="utf-8")
    assert "загружен" in await admin_says(world, "/reload")
    [request] = world.emu.requests_for("sendInvoice")
    wrong = await user.pre_checkout(request.params["payload"], "RUB", 100)
    assert wrong.ok is False
    assert wrong.error_message == t("payment.refused.price_changed", lang="ru")
    assert await purchases(world) == []
    # The untouched invoice still pays.
    assert (await user.pay(invoice)).status == "paid"
    await user.wait_for(lambda m: THANKS in m.plain_text, after=invoice)
    assert len(await purchases(world)) == 1


async def test_forged_and_foreign_pre_checkouts_are_refused(paying: World) -> None:
    world = paying
    anna = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(anna)
    [request] = world.emu.requests_for("sendInvoice")
    payload = request.params["payload"]
    stranger = world.user("Чужой")
    await stranger.send("/start")
    await stranger.next_message()

    foreign = await stranger.pre_checkout(payload, "RUB", 4_990_000)
    assert foreign.ok is False
    assert foreign.error_message == t("payment.refused.not_yours", lang="ru")
    for forged in ("lb1:999:full:abcdef", "lb1:1:full", "x" * 128, "lb1:1:full:ab cd", "🙂"):
        answer = await stranger.pre_checkout(forged, "RUB", 4_990_000)
        assert answer.ok is False, forged
        assert answer.error_message == t("payment.refused.unknown_invoice", lang="ru")
    # A forwarded invoice paid by the stranger is refused too; Anna's still pays.
    assert (await stranger.pay(invoice)).status == "declined"
    assert (await anna.pay(invoice)).status == "paid"
    await anna.wait_for(lambda m: THANKS in m.plain_text, after=invoice)
    [purchase] = await purchases(world)
    assert purchase.lead_id == 1


async def test_a_forgotten_lead_cannot_pay_an_old_invoice(paying: World) -> None:
    world = paying
    user = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(user)
    await user.send("/forget")
    confirm = await user.wait_for(lambda m: "Да, удалить" in m.labels)
    await user.press(confirm, "Да, удалить")
    await user.wait_for(lambda m: "удалены" in m.plain_text)
    answer = await user.pay(invoice)
    assert answer.status == "declined"
    assert answer.error_message == t("payment.refused.forgotten", lang="ru")


async def test_a_stars_refund_reverses_the_purchase_in_the_report(
    stars: World, clock: FakeClock
) -> None:
    world = stars
    user = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(user)
    [request] = world.emu.requests_for("sendInvoice")
    assert request.params["currency"] == "XTR" and not request.params.get("provider_token")
    assert request.params["prices"] == [{"label": "Курс «Python-разработчик»", "amount": 500}]
    result = await user.pay(invoice)
    assert result.status == "paid" and result.charge is not None
    await user.wait_for(lambda m: THANKS in m.plain_text, after=invoice)
    assert await revenue(world, clock) == (Decimal("500.00"), 1, 1)

    reply = await admin_says(world, "/refund #1")
    assert "возвращены" in reply
    [refund] = world.emu.requests_for("refundStarPayment")
    assert refund.params == {
        "user_id": user.id,
        "telegram_payment_charge_id": result.charge.telegram_payment_charge_id,
    }
    assert refund.ok
    await user.wait_for(lambda m: "вернули" in m.plain_text)
    assert await revenue(world, clock) == (Decimal("0.00"), 0, 0)
    [purchase] = await purchases(world)
    assert purchase.refunded_at is not None and purchase.refunded_by == world.admin.id

    # Again, by lead and by charge id: already refunded, nothing sent to Telegram.
    assert "уже возвращена" in await admin_says(world, "/refund 1")
    charge = result.charge.telegram_payment_charge_id
    assert "уже возвращена" in await admin_says(world, f"/refund {charge}")
    assert len(world.emu.requests_for("refundStarPayment")) == 1


async def test_refund_arguments_that_name_nothing_get_a_clear_reply(stars: World) -> None:
    world = stars
    assert "не найден" in await admin_says(world, "/refund stxNOPE00000001")
    assert "не номер лида" in await admin_says(world, "/refund ';DROP_TABLE")
    assert "/refund" in await admin_says(world, "/refund one two")  # two words: the usage
    assert "/refund" in await admin_says(world, "/refund")
    assert "не найден" in await admin_says(world, "/refund #404")
    too_big = await admin_says(world, "/refund #99999999999999999999")
    assert "слишком большой" in too_big and "/refund" in too_big
    user = await qualify(world, HOT, "Анна")
    await invoice_after_outcome(user)
    assert "нет оплат" in await admin_says(world, "/refund 1")
    # Not an admin: the command is just text to the prospects' dialogue, nothing refunded.
    await user.send("/refund 1")
    await user.next_message()
    assert world.emu.requests_for("refundStarPayment") == []


async def test_a_provider_refund_is_recorded_and_leaves_telegram_alone(
    paying: World, clock: FakeClock
) -> None:
    world = paying
    user = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(user)
    result = await user.pay(invoice)
    assert result.charge is not None
    await user.wait_for(lambda m: THANKS in m.plain_text, after=invoice)
    reply = await admin_says(world, f"/refund {result.charge.telegram_payment_charge_id}")
    assert "записан" in reply and "49\u202f900\u00a0₽" in reply
    assert world.emu.requests_for("refundStarPayment") == []
    assert await revenue(world, clock) == (Decimal("0.00"), 0, 0)


async def test_without_a_provider_token_a_rub_offer_is_not_sent(world: World) -> None:
    user = await qualify(world, HOT, "Анна")
    outcome = user.last_message
    assert outcome is not None and outcome.buttons
    await user.send("/help")
    await user.wait_for(lambda m: "/forget" in m.plain_text, after=outcome)
    assert world.emu.requests_for("sendInvoice") == []


async def test_the_crm_hears_of_the_purchase_and_of_its_refund(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, crm: FakeCrm
) -> None:
    async with running_world(
        emu, tmp_path, clock, crm_webhook_url=crm.url, script_path=str(stars_script(tmp_path))
    ) as world:
        user = await qualify(world, HOT, "Анна", username="anna_k")
        invoice = await invoice_after_outcome(user)
        result = await user.pay(invoice)
        await user.wait_for(lambda m: THANKS in m.plain_text, after=invoice)
        assert "возвращены" in await admin_says(world, "/refund 1")
        await world.app.handoff.tick()
        await world.app.handoff.settle()
        received = await crm.wait_for(3)
        events = {r.body["event"]: r for r in received}
        assert set(events) >= {"lead", "purchase", "refund"}
        purchase = events["purchase"].body
        assert result.charge is not None
        assert purchase["amount"] == "500.00" and purchase["currency"] == "XTR"
        assert purchase["telegram_payment_charge_id"] == result.charge.telegram_payment_charge_id
        assert purchase["idempotency_key"] == events["purchase"].headers["Idempotency-Key"]
        assert events["refund"].body["refunded_at"] is not None
        assert events["refund"].body["idempotency_key"] != purchase["idempotency_key"]


async def test_a_pre_checkout_answered_too_late_fails_quietly(
    paying: World, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    world = paying
    user = await qualify(world, HOT, "Анна")
    invoice = await invoice_after_outcome(user)
    await world.app.stop()
    # The bot is down for longer than Telegram's 10 seconds: the buyer's payment fails.
    query = await user.checkout(invoice, timeout=0.2)
    assert query.ok is None and user.complete_payment(query).status == "timeout"
    query.sent_at -= 20
    before = len(user.messages)
    again = App(world.app.settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.start(scheduler=False)
    try:
        await world.emu.wait_for_request("answerPreCheckoutQuery", timeout=10)
        await world.emu.wait_until(lambda: not world.emu.pending_updates)
        await user.send("/help")
        await user.wait_for(lambda m: "/forget" in m.plain_text, after=invoice)
    finally:
        await again.stop()
    # No "try again" for a query nobody can answer any more, and no purchase.
    assert user.messages[before].plain_text.startswith("Я помогаю")
    assert "payment.pre_checkout_expired" in caplog.text
    assert await purchases(world) == []
