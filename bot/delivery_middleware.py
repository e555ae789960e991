"""Request middlewares: no request inside a write transaction (bot/write_guard.py), and every
outgoing send paced through the rate limiter.

A 429 pauses all senders and retries; any other failure, a network one included, is never
resent here: a doubled marketing message is worse than a lost one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter

from bot import write_guard
from bot.delivery import PACED
from bot.ratelimit import SendLimiter

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import Response, TelegramMethod
    from aiogram.methods.base import TelegramType

__all__ = [
    "UNLIMITED_SEND_METHODS",
    "RateLimitMiddleware",
    "WriteGuardMiddleware",
    "limited_chat_id",
]

logger = logging.getLogger(__name__)

# "Typing…" indicators are not messages and Telegram does not count them against the limits.
UNLIMITED_SEND_METHODS: frozenset[str] = frozenset({"sendChatAction"})


def limited_chat_id(method: TelegramMethod[Any]) -> int | str | None:
    """The chat a sending method delivers to, or None if the method is not rate limited."""
    api_method = method.__api_method__
    if not api_method.startswith("send") or api_method in UNLIMITED_SEND_METHODS:
        return None
    # sendGift may address a user instead of a chat; it lands in that user's private chat.
    target = getattr(method, "chat_id", None)
    if target is None:
        target = getattr(method, "user_id", None)
    if isinstance(target, int | str) and not isinstance(target, bool):
        return target
    return None


class WriteGuardMiddleware(BaseRequestMiddleware):
    """Refuses a request asked for inside a write transaction (RequestInWriteTransaction,
    naming the method). Install it first, outside the limiter's middleware: waiting for a
    send slot inside a write transaction holds the database as long as the request would."""

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        write_guard.refuse_inside(method.__api_method__)
        return await make_request(bot, method)


class RateLimitMiddleware(BaseRequestMiddleware):
    """Waits for the limiter before each send; on a 429 pauses everyone and tries again.

    Install with `bot.session.middleware(RateLimitMiddleware(limiter))`.
    """

    def __init__(self, limiter: SendLimiter, max_retries: int = 5) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries!r}")
        self.limiter = limiter
        self.max_retries = max_retries

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        chat_id = limited_chat_id(method)
        if chat_id is None:
            return await make_request(bot, method)
        if PACED.get():
            # An outbox row: the delivery engine took the slot before it claimed the row and
            # puts the row back to planned after a 429 (bot/delivery.py).
            return await make_request(bot, method)
        retries = 0
        while True:
            await self.limiter.acquire(chat_id)
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as error:
                # Telegram refused before delivering, so resending cannot double the message.
                self.limiter.pause_all(error.retry_after)
                fields = {
                    "event": "telegram_retry_after",
                    "method": method.__api_method__,
                    "chat_id": chat_id,
                    "retry_after": error.retry_after,
                    "attempt": retries + 1,
                }
                if retries >= self.max_retries:
                    logger.error(
                        "telegram_retry_after_gave_up method=%s chat_id=%s retry_after=%s "
                        "attempts=%d: Telegram keeps throttling this bot; lower the send rate or "
                        "spread the campaign over more time",
                        method.__api_method__,
                        chat_id,
                        error.retry_after,
                        retries + 1,
                        extra={**fields, "event": "telegram_retry_after_gave_up"},
                    )
                    raise
                logger.warning(
                    "telegram_retry_after method=%s chat_id=%s retry_after=%s attempt=%d: "
                    "all sends paused, will retry",
                    method.__api_method__,
                    chat_id,
                    error.retry_after,
                    retries + 1,
                    extra=fields,
                )
                retries += 1
