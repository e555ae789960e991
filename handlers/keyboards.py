"""Inline keyboards from the funnel's replies."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from funnel.dialogue.replies import Reply
from handlers.callbacks import pack


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=b.label, callback_data=pack(b)) for b in row]
            for row in reply.buttons
        ]
    )
