"""Inline keyboards: the buttons of the funnel's replies, and of the managers' card."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from funnel.dialogue.replies import Reply
from funnel.handoff.cards import ManagerCard
from handlers.callbacks import CardCb, pack
from handlers.i18n import t


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b.label, callback_data=pack(b)) for b in row]
            for row in reply.buttons
        ]
    )


def card_keyboard(card: ManagerCard, lang: str | None = None) -> InlineKeyboardMarkup:
    """The card's buttons in `lang`, the school's language (the script's)."""
    if card.taken:
        # The owner gives the lead back to the bot's follow-ups (the managers' loop).
        act, text = "release", t("card.button.release", lang=lang)
    else:
        act, text = "take", t("card.button.take", lang=lang)
    take = [
        InlineKeyboardButton(text=text, callback_data=CardCb(act=act, lead=card.lead_id).pack())
    ]
    return InlineKeyboardMarkup(
        inline_keyboard=[
            take,
            [
                InlineKeyboardButton(
                    text=t("card.button.paid", lang=lang),
                    callback_data=CardCb(act="paid", lead=card.lead_id).pack(),
                ),
                InlineKeyboardButton(
                    text=t("card.button.unfit", lang=lang),
                    callback_data=CardCb(act="unfit", lead=card.lead_id).pack(),
                ),
            ],
        ]
    )
