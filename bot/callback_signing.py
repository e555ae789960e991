"""Signed buttons: every callback data the bot sends is signed for the chat it goes to, on
the wire, and every press is checked before any handler sees it.

Signing where the request leaves (a request middleware of the bot's session) means no
keyboard builder needs the key or the chat: a broadcast's one keyboard gets each
recipient's own signature, a card the managers' chat's, and a builder added later cannot
forget. Checking in one outer middleware of the callback queries means no handler acts on
data the bot never sent to that chat: such a press (forged, copied from another chat, or
left in a message from before buttons were signed) reaches the routers as a `StaleCb`, and
each answers it as it answers a stale button of that family."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardMarkup,
    TelegramObject,
)

from handlers.callbacks import FAMILIES, Signer, StaleCb

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import Response, TelegramMethod
    from aiogram.methods.base import TelegramType

log = logging.getLogger("leadbot.callbacks")


def signed_markup(
    markup: InlineKeyboardMarkup, signer: Signer, chat_id: int | str
) -> InlineKeyboardMarkup:
    """A copy of `markup` whose callback buttons carry their signature for `chat_id` (the
    markup itself may be shared by several requests, so it is never changed)."""
    return markup.model_copy(
        update={
            "inline_keyboard": [
                [
                    button.model_copy(
                        update={"callback_data": signer.sign(button.callback_data, chat_id)}
                    )
                    if button.callback_data is not None
                    else button
                    for button in row
                ]
                for row in markup.inline_keyboard
            ]
        }
    )


def _has_callbacks(markup: InlineKeyboardMarkup) -> bool:
    return any(b.callback_data is not None for row in markup.inline_keyboard for b in row)


class SignCallbacks(BaseRequestMiddleware):
    """Signs the inline keyboard of every request that addresses a chat (send, copy, edit).
    A keyboard without a chat (an inline message) is left unsigned: its presses stay stale,
    and the bot sends none."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        markup = getattr(method, "reply_markup", None)
        chat_id = getattr(method, "chat_id", None)
        if (
            isinstance(markup, InlineKeyboardMarkup)
            and isinstance(chat_id, int | str)
            and _has_callbacks(markup)
        ):
            signed = signed_markup(markup, self.signer, chat_id)
            method = method.model_copy(update={"reply_markup": signed})
        return await make_request(bot, method)


def _family(data: str | None) -> str:
    """The prefix the data claims, if it is one of ours (never the data itself)."""
    prefix = (data or "").partition(":")[0]
    return prefix if prefix in FAMILIES else ""


class VerifyCallbacks(BaseMiddleware):
    """Lets a press through with the data the bot signed for its chat, signature removed;
    any other press goes on as a `StaleCb` of the family it claims. Register as an outer
    middleware of the dispatcher's callback queries: it then runs before every filter."""

    def __init__(self, signer: Signer) -> None:
        self.signer = signer

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, CallbackQuery):
            return await handler(event, data)
        # A press on an inline message has no chat: the bot never signs such buttons.
        chat = event.message.chat if event.message is not None else None
        payload = self.signer.verify(event.data, chat.id) if chat is not None else None
        if payload is None:
            family = _family(event.data)
            # Neither the data nor who sent it: a forger must not fill the log.
            log.debug("callback.unsigned", extra={"event": "callback.unsigned", "of": family})
            payload = StaleCb(of=family).pack()
        checked = event.model_copy(update={"data": payload}).as_(event.bot)
        return await handler(checked, data)
