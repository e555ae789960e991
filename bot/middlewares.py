"""Update middlewares: one database session per update, updates of one user one at a time,
and the dependencies every handler may ask for by name."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def update_user_id(update: Update) -> int | None:
    event = (
        update.message
        or update.edited_message
        or update.callback_query
        or update.my_chat_member
        or update.chat_member
    )
    user = getattr(event, "from_user", None)
    return user.id if user is not None else None


class PerUserOrder(BaseMiddleware):
    """Handles one user's updates one after another, so a double tap or three fast /start
    see each other's writes (the lead's version column guards other instances)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user_id = update_user_id(event) if isinstance(event, Update) else None
        if user_id is None:
            return await handler(event, data)
        lock = self._locks.get(user_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user_id] = lock
        async with lock:
            return await handler(event, data)


class DbSession(BaseMiddleware):
    """Opens the update's session; the handler commits before it replies, and whatever
    it left uncommitted is rolled back, never half-written."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        async with self.sessions() as session:
            data["session"] = session
            try:
                return await handler(event, data)
            finally:
                await session.rollback()
