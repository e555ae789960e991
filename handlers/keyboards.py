"""Inline keyboards: the buttons of the funnel's replies, and of the managers' card."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from funnel.dialogue.replies import Reply
from funnel.handoff.cards import ManagerCard
from handlers.callbacks import CardCb, pack


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b.label, callback_data=pack(b)) for b in row]
            for row in reply.buttons
        ]
    )


def card_keyboard(card: ManagerCard) -> InlineKeyboardMarkup:
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
