"""Payments in the bot: invoices for the script's offers, the pre-checkout answer (within
Telegram's 10 seconds), the successful payment (recorded once, the buyer thanked, the managers
and the CRM told) and the admins' `/refund`."""

from __future__ import annotations

import logging
from html import escape
from typing import Any

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.methods import SendInvoice
from aiogram.types import LabeledPrice, Message, PreCheckoutQuery
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs
from funnel.core.clock import Clock
from funnel.core.errors import InputError
from funnel.core.models import Lead
from funnel.dialogue import messages
from funnel.handoff import payments
from funnel.handoff.payments import Invoice
from funnel.script.schema import Script
from handlers.dependencies import BotConfig, HandOffPort
from handlers.errors import explain
from handlers.i18n import N_, t
from handlers.views.payment_note import format_amount

log = logging.getLogger("leadbot.payments")

# Telegram shows the refusal in its payment form: plain text, short.
CHECKOUT_REFUSALS: dict[str, str] = {
    "unknown_invoice": N_("payment.refused.unknown_invoice"),
    "not_yours": N_("payment.refused.not_yours"),
    "forgotten": N_("payment.refused.forgotten"),
    "offer_gone": N_("payment.refused.offer_gone"),
    "price_changed": N_("payment.refused.price_changed"),
}
REFUND_ERRORS: dict[str, str] = {
    "refund.no_reference": N_("refund.error.no_reference"),
    "refund.no_lead": N_("refund.error.no_lead"),
    "refund.nothing_to_refund": N_("refund.error.nothing_to_refund"),
    "refund.already_refunded": N_("refund.error.already_refunded"),
    "refund.several": N_("refund.error.several"),
    "refund.bad_reference": N_("refund.error.bad_reference"),
    "refund.unknown_charge": N_("refund.error.unknown_charge"),
}
# What Telegram answers for a Stars charge refunded before (e.g. the first /refund's reply was
# lost): the money is back, so the refund is recorded.
ALREADY_REFUNDED = "CHARGE_ALREADY_REFUNDED"


def invoice_request(
    chat_id: int, invoice: Invoice, provider_token: str | None, **extra: Any
) -> SendInvoice:
    """sendInvoice for one offer: Stars with an empty provider token, any other currency with
    the provider's."""
    return SendInvoice(
        chat_id=chat_id,
        title=invoice.title,
        description=invoice.description,
        payload=invoice.payload,
        provider_token="" if invoice.stars else (provider_token or ""),
        currency=invoice.currency,
        prices=[LabeledPrice(label=invoice.title, amount=invoice.total_amount)],
        photo_url=invoice.photo_url,
        **extra,
    )


async def send_invoice(
    bot: Bot, chat_id: int, invoice: Invoice, provider_token: str | None, **extra: Any
) -> Message:
    return await bot(invoice_request(chat_id, invoice, provider_token, **extra))


async def deliver_invoice(
    bot: Bot, chat_id: int, invoice: Invoice, provider_token: str | None, **extra: Any
) -> Message | None:
    """Sends the invoice after its text; Telegram refusing it (a wrong provider token, a
    price below the provider's minimum) is logged for the operator, never the buyer's
    problem. A blocked chat (403) is the caller's to handle."""
    try:
        return await send_invoice(bot, chat_id, invoice, provider_token, **extra)
    except TelegramBadRequest as error:
        log.error(
            "payment.invoice_refused: Telegram refused the invoice; check "
            "PAYMENT_PROVIDER_TOKEN and the offer's price and currency",
            extra={"event": "payment.invoice_refused", "offer": invoice.offer_id,
                   "error": error.message[:200]},
        )  # fmt: skip
        return None


def offer_invoice(
    script: Script, offer_id: str | None, lead_id: int | None, provider_token: str | None
) -> Invoice | None:
    """The invoice a reply's offer calls for, or None (no offer, no lead, or an offer that
    cannot be sent as the bot is set up: logged, the text still goes)."""
    if offer_id is None or lead_id is None:
        return None
    offer = script.offer(offer_id)
    if offer is None or not payments.sendable(offer, provider_token is not None):
        log.warning(
            "payment.offer_not_sent: the offer is missing from the script or needs "
            "PAYMENT_PROVIDER_TOKEN; see `python -m bot check`",
            extra={"event": "payment.offer_not_sent", "offer": offer_id, "lead_id": lead_id},
        )
        return None
    return payments.invoice_for(script, offer.id, lead_id)


def thanks_text(script: Script, lead: Any) -> str:
    template = script.texts.payment_thanks or t("payment.thanks", lang=script.language)
    return messages.text_for(script, lead, template)


def router(config: BotConfig) -> Router:
    r = Router(name="payments")

    @r.pre_checkout_query()
    async def on_pre_checkout(
        query: PreCheckoutQuery, bot: Bot, session: AsyncSession, script: Script
    ) -> None:
        verdict = await payments.check_checkout(
            session,
            script,
            payer_id=query.from_user.id,
            payload=query.invoice_payload,
            currency=query.currency,
            total_amount=query.total_amount,
        )
        log.info(
            "payment.pre_checkout",
            extra={"event": "payment.pre_checkout", "ok": verdict.ok, "reason": verdict.reason,
                   "lead_id": verdict.lead_id, "offer": verdict.offer_id},
        )  # fmt: skip
        key = CHECKOUT_REFUSALS[verdict.reason or "unknown_invoice"]
        error = None if verdict.ok else t(key, lang=script.language)
        try:
            await bot.answer_pre_checkout_query(query.id, ok=verdict.ok, error_message=error)
        except TelegramBadRequest:
            # Past Telegram's 10 seconds (the update waited in a queue): the buyer was told
            # the payment failed and no money was taken; nothing to undo here.
            log.warning(
                "payment.pre_checkout_expired: answered too late, the payment did not go "
                "through; if this repeats, the bot is overloaded or was down",
                extra={"event": "payment.pre_checkout_expired", "lead_id": verdict.lead_id},
            )

    @r.message(F.successful_payment)
    async def on_successful_payment(
        message: Message,
        bot: Bot,
        session: AsyncSession,
        script: Script,
        clock: Clock,
        handoff: HandOffPort,
    ) -> None:
        paid = message.successful_payment
        if paid is None or message.from_user is None:
            return
        result = await payments.record_payment(
            session,
            script,
            payer_id=message.from_user.id,
            payload=paid.invoice_payload,
            currency=paid.currency,
            total_amount=paid.total_amount,
            telegram_charge_id=paid.telegram_payment_charge_id,
            provider_charge_id=paid.provider_payment_charge_id,
            at=clock.now(),
        )
        fields = {"event": f"payment.{result.status}", "lead_id": result.lead_id,
                  "purchase_id": result.purchase_id, "offer": result.offer_id,
                  "currency": paid.currency}  # fmt: skip
        if result.status == "duplicate":
            # Telegram delivered this charge again: recorded and thanked the first time.
            log.info("payment.duplicate", extra=fields)
            await session.commit()
            return
        if result.status == "unmatched":
            log.error(
                "payment.unmatched: money was taken for an invoice no lead can be found for; "
                "look the charge up in the payment provider (or refund it with /refund)",
                extra={**fields, "charge": paid.telegram_payment_charge_id},
            )
            await session.commit()
            await _say(bot, message.chat.id, thanks_text(script, None))
            return
        assert result.lead_id is not None and result.purchase_id is not None
        planned = await handoff.plan_payment(session, result.lead_id, result.purchase_id, "paid")
        await session.commit()
        log.info("payment.recorded", extra={**fields, "stage": result.stage})
        lead = await session.get(Lead, result.lead_id)
        try:
            await _say(bot, message.chat.id, thanks_text(script, lead))
        finally:
            if planned:
                handoff.kick()

    @r.message(F.refunded_payment)
    async def on_refunded_payment(
        message: Message, session: AsyncSession, clock: Clock, handoff: HandOffPort
    ) -> None:
        """Telegram's word that Stars went back (after /refund, or refunded elsewhere): the
        purchase is marked refunded if it is not yet; nothing is said to the buyer twice."""
        refunded = message.refunded_payment
        if refunded is None:
            return
        purchase = await payments.purchase_by_charge(session, refunded.telegram_payment_charge_id)
        if purchase is None or purchase.refunded_at is not None:
            await session.commit()
            return
        await payments.mark_refunded(session, purchase, None, clock.now())
        planned = await handoff.plan_payment(session, purchase.lead_id, purchase.id, "refunded")
        await session.commit()
        log.info(
            "payment.refunded_by_telegram",
            extra={"event": "payment.refunded_by_telegram", "lead_id": purchase.lead_id,
                   "purchase_id": purchase.id},
        )  # fmt: skip
        if planned:
            handoff.kick()

    admin_only = (F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(config.admin_ids))

    @r.message(Command("refund"), *admin_only)
    async def cmd_refund(
        message: Message,
        command: CommandObject,
        bot: Bot,
        session: AsyncSession,
        script: Script,
        clock: Clock,
        handoff: HandOffPort,
    ) -> None:
        lang = script.language
        usage = escape(t("refund.usage", lang=lang))
        try:
            args = inputs.split_args(command.args)
        except ValueError as e:
            await message.answer(f"{escape(explain(e, lang))}\n{usage}")
            return
        if len(args) != 1:
            await message.answer(usage)
            return
        try:
            found = await payments.find_refundable(session, args[0])
        except InputError as e:
            key = REFUND_ERRORS.get(e.code)
            text = t(key, lang=lang, **e.fields) if key else explain(e, lang)
            await message.answer(f"{escape(text)}\n{usage}")
            return
        except ValueError as e:
            await message.answer(f"{escape(explain(e, lang))}\n{usage}")
            return
        purchase, lead = found.purchase, found.lead
        if found.via_telegram:
            if lead.user_id is None:
                await message.answer(t("refund.forgotten", lang=lang, lead=lead.id))
                return
            charge = purchase.telegram_payment_charge_id
            assert charge is not None
            try:
                await bot.refund_star_payment(
                    user_id=lead.user_id, telegram_payment_charge_id=charge
                )
            except TelegramBadRequest as error:
                if ALREADY_REFUNDED not in error.message:
                    reason = escape(error.message[:200])
                    await message.answer(t("refund.telegram_refused", lang=lang, reason=reason))
                    return
        by = message.from_user.id if message.from_user else None
        await payments.mark_refunded(session, purchase, by, clock.now())
        planned = await handoff.plan_payment(session, lead.id, purchase.id, "refunded")
        await session.commit()
        log.info(
            "payment.refunded",
            extra={"event": "payment.refunded", "lead_id": lead.id, "purchase_id": purchase.id,
                   "via_telegram": found.via_telegram},
        )  # fmt: skip
        amount = escape(format_amount(purchase.amount, purchase.currency, lang=lang))
        key = N_("refund.done_stars") if found.via_telegram else N_("refund.done_recorded")
        await message.answer(t(key, lang=lang, lead=lead.id, amount=amount))
        if lead.chat_id is not None and lead.deleted_at is None:
            template = script.texts.payment_refunded or t("payment.refunded", lang=lang)
            await _say(bot, lead.chat_id, messages.text_for(script, lead, template))
        if planned:
            handoff.kick()

    return r


async def _say(bot: Bot, chat_id: int, text: str) -> None:
    """A word to the buyer after the commit; a blocked chat loses nothing recorded."""
    try:
        await bot.send_message(chat_id, text)
    except TelegramAPIError as error:
        log.info(
            "payment.reply_not_delivered",
            extra={"event": "payment.reply_not_delivered", "error": type(error).__name__},
        )
