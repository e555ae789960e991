"""Puts a hot lead's card into the managers' chat within seconds of the lead turning hot
or booking, with buttons to take it, mark it paid or mark it not a fit."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel import handoff, store
from funnel.handoff import Card
from funnel.script import Script
from handlers.callbacks import CardCb

log = logging.getLogger("leadbot.handoff")


def card_keyboard(card: Card) -> InlineKeyboardMarkup:
    take_data = CardCb(act="take", lead=card.lead_id).pack()
    take = [] if card.taken else [InlineKeyboardButton(text="🙋 Беру", callback_data=take_data)]
    return InlineKeyboardMarkup(
        inline_keyboard=[
            take,
            [
                InlineKeyboardButton(
                    text="💰 Оплатил", callback_data=CardCb(act="paid", lead=card.lead_id).pack()
                ),
                InlineKeyboardButton(
                    text="🚫 Не подходит",
                    callback_data=CardCb(act="unfit", lead=card.lead_id).pack(),
                ),
            ],
        ]
    )


class HandOff:
    def __init__(
        self,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        script: Callable[[], Script],
        manager_chat_id: int | None,
    ) -> None:
        self.bot = bot
        self.sessions = sessions
        self.script = script
        self.manager_chat_id = manager_chat_id

    async def lead_is_hot(self, lead_id: int) -> None:
        if self.manager_chat_id is None:
            return
        async with self.sessions() as session:
            lead = await store.lead_by_id(session, lead_id)
            if lead is None or lead.deleted_at is not None:
                return
            card = await handoff.lead_card(session, self.script(), lead)
        try:
            await self.bot.send_message(
                self.manager_chat_id, card.text, reply_markup=card_keyboard(card)
            )
        except TelegramAPIError as e:
            log.error(
                "handoff.failed: check MANAGER_CHAT_ID and that the bot is in that chat",
                extra={"lead_id": lead_id, "error": type(e).__name__},
            )
