"""Delivers a dialogue result: commit first, then answer the tap, then send the replies.

A reply therefore never announces something the database does not hold."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.types import CallbackQuery
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.telegram_text import fit_to_telegram
from funnel.dialogue.flow import Dialogue, Result
from handlers.keyboards import keyboard
from handlers.payments import deliver_invoice, offer_invoice

log = logging.getLogger("leadbot.respond")


async def respond(
    dialogue: Dialogue,
    bot: Bot,
    chat_id: int,
    result: Result,
    callback: CallbackQuery | None = None,
    provider_token: str | None = None,
) -> None:
    session: AsyncSession = dialogue.session
    await session.commit()
    if callback is not None:
        await answer_callback(callback, result.alert)
    for reply in result.replies:
        try:
            await bot.send_message(
                chat_id, fit_to_telegram(reply.text), reply_markup=keyboard(reply)
            )
            invoice = offer_invoice(dialogue.script, reply.offer, result.lead_id, provider_token)
            if invoice is not None:
                await deliver_invoice(bot, chat_id, invoice, provider_token)
        except TelegramForbiddenError:
            # Blocked between the tap and the reply: remember, and stop talking.
            await dialogue.blocked(chat_id, True)
            await session.commit()
            log.info("reply.blocked", extra={"chat_id": chat_id})
            return


async def answer_callback(callback: CallbackQuery, text: str | None = None) -> None:
    """Every tap gets an answer, or the phone shows a spinner for a while."""
    try:
        await callback.answer(text[:200] if text else None)
    except TelegramBadRequest:
        # Too old (the update waited in a queue): nothing to stop spinning any more.
        log.info("callback.expired", extra={"callback_id": callback.id})
