"""Delivers a dialogue result: the replies are written with the result (the reply outbox,
bot/replies.py), then the commit, then the tap's answer, then the replies leave.

A reply therefore never announces something the database does not hold, and a reply the
database holds is sent even if the process dies right after the commit."""

from __future__ import annotations

import logging
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError
from aiogram.methods import SendMessage, TelegramMethod
from aiogram.types import CallbackQuery, LinkPreviewOptions
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.telegram_text import fit_to_telegram
from funnel.dialogue.flow import Dialogue, Result
from handlers.dependencies import ReplyPort
from handlers.keyboards import keyboard
from handlers.payments import deliver_invoice, invoice_request, offer_invoice

log = logging.getLogger("leadbot.respond")


async def respond(
    dialogue: Dialogue,
    bot: Bot,
    chat_id: int,
    result: Result,
    callback: CallbackQuery | None = None,
    provider_token: str | None = None,
    replies: ReplyPort | None = None,
) -> None:
    session: AsyncSession = dialogue.session
    if replies is not None:
        staged = await replies.stage(
            session, chat_id, requests(dialogue, chat_id, result, provider_token)
        )
        await session.commit()
        if callback is not None:
            await answer_callback(callback, result.alert)
        await replies.deliver(staged)
        return
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


def requests(
    dialogue: Dialogue, chat_id: int, result: Result, provider_token: str | None
) -> list[TelegramMethod[Any]]:
    """The Bot API requests a result's replies make, every parameter explicit (the row keeps
    them as they are sent)."""
    made: list[TelegramMethod[Any]] = []
    for reply in result.replies:
        made.append(
            SendMessage(
                chat_id=chat_id,
                text=fit_to_telegram(reply.text),
                parse_mode="HTML",
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_markup=keyboard(reply),
            )
        )
        invoice = offer_invoice(dialogue.script, reply.offer, result.lead_id, provider_token)
        if invoice is not None:
            made.append(invoice_request(chat_id, invoice, provider_token))
    return made


async def answer_callback(callback: CallbackQuery, text: str | None = None) -> None:
    """Every tap gets an answer, or the phone shows a spinner for a while."""
    try:
        await callback.answer(text[:200] if text else None)
    except TelegramBadRequest:
        # Too old (the update waited in a queue): nothing to stop spinning any more.
        log.info("callback.expired", extra={"callback_id": callback.id})
