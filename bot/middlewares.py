"""Update middlewares: one database session per update, updates of one user one at a time
(in this process, and across instances on PostgreSQL), and the dependencies every handler
may ask for by name."""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import TelegramObject, Update
from sqlalchemy import event as event_api
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from bot import inbox, transactions
from bot.intake import user_of
from handlers.i18n import t

log = logging.getLogger("leadbot.updates")

INBOX_ROW = "leadbot.inbox_row"

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


# The person an update comes from: one reading for the intake's queues and for the order
# and locks here.
update_user_id = user_of


class PerUserOrder(BaseMiddleware):
    """Handles one user's updates one after another, so a double tap or three fast /start
    see each other's writes (the lead's version column guards other instances)."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user_id = update_user_id(event) if isinstance(event, Update) else None
        if user_id is None or data.get("inbox_express"):
            # A payment never waits for the user's other updates (bot/intake.py).
            return await handler(event, data)
        lock = self._locks.get(user_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[user_id] = lock
        async with lock:
            return await handler(event, data)


class UserLocks:
    """One user's updates one at a time across instances sharing a PostgreSQL database.

    A PostgreSQL advisory lock keyed by the user's id, held from the start of the update's
    handling to its end, replies included: a transaction-scoped lock would end at the
    handler's commit, before its reply leaves, and a second instance's answer to the user's
    next tap could overtake it. Session-level locks of all the updates in flight live on
    one autocommit connection of their own (no idle transaction, one connection whatever the
    load); a lock another instance holds is tried again after a short pause, which is rare:
    within an instance PerUserOrder already lines one user's updates up.

    If that connection drops, the server releases its locks: the next update opens a new one
    (the lead's version column still refuses a lost update meanwhile)."""

    PAUSE_SECONDS = 0.01
    MAX_PAUSE_SECONDS = 0.2

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None
        self._guard = asyncio.Lock()

    @staticmethod
    def wanted(engine: AsyncEngine) -> bool:
        return engine.dialect.name == "postgresql"

    async def _run(self, statement: str, key: int) -> bool:
        async with self._guard:
            try:
                if self._connection is None:
                    connection = await self.engine.connect()
                    self._connection = await connection.execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                return bool(await self._connection.scalar(text(statement), {"key": key}))
            except Exception:
                await self._drop()
                raise

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:
                await connection.invalidate()

    async def acquire(self, key: int) -> None:
        pause = self.PAUSE_SECONDS
        while not await self._run("SELECT pg_try_advisory_lock(:key)", key):
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.MAX_PAUSE_SECONDS)

    async def release(self, key: int) -> None:
        try:
            await self._run("SELECT pg_advisory_unlock(:key)", key)
        except Exception as error:
            # The connection is gone, and with it the lock.
            log.warning(
                "update.unlock_failed: the lock connection dropped; its locks went with it",
                extra={"event": "update.unlock_failed", "error": type(error).__name__},
            )

    async def close(self) -> None:
        async with self._guard:
            await self._drop()


_user_locks: weakref.WeakKeyDictionary[AsyncEngine, list[UserLocks]] = weakref.WeakKeyDictionary()


async def close_user_locks(engine: AsyncEngine) -> None:
    """At the stop, before the engine is disposed: the locks' connection goes back."""
    for locks in _user_locks.pop(engine, []):
        await locks.close()


class DbSession(BaseMiddleware):
    """Opens the update's session and retries the whole update in a fresh one when the
    database is busy or a row changed under it, as long as nothing was committed yet (the
    handlers commit before they reply, so a retry never doubles a reply). When the tries are
    used up the user is asked to try again and the operator gets a line naming the update.

    The update's inbox row (bot/inbox.py) is marked handled in the same commit as the
    handler's work, so a handled update is never handled again after a crash."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        retry_seconds: float = transactions.DEFAULT_BUDGET_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.retry_seconds = retry_seconds
        engine = sessions.kw.get("bind")
        self.user_locks: UserLocks | None = None
        if isinstance(engine, AsyncEngine) and UserLocks.wanted(engine):
            self.user_locks = UserLocks(engine)
            _user_locks.setdefault(engine, []).append(self.user_locks)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user_id = update_user_id(event) if isinstance(event, Update) else None
        if self.user_locks is None or user_id is None or data.get("inbox_express"):
            # A payment does not wait for the lock either: the lead's version column keeps
            # its writes and the user's other update's apart.
            return await self._handle(handler, event, data)
        await transactions.retrying(
            functools.partial(self.user_locks.acquire, user_id), "update.lock"
        )
        try:
            return await self._handle(handler, event, data)
        finally:
            await self.user_locks.release(user_id)

    async def _handle(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        inbox_id: int | None = data.get("inbox_id")
        pauses = transactions.delays(self.retry_seconds)
        attempt = 0
        while True:
            attempt += 1
            async with self.sessions() as session:
                commits = _CommitWatch(session, inbox_id, data["clock"], data.get("inbox_receipt"))
                # The reply outbox writes the reply to this row (bot/replies.py).
                session.sync_session.info[INBOX_ROW] = inbox_id
                try:
                    result = await handler(event, {**data, "session": session})
                    if inbox_id is not None and not commits.committed:
                        await session.commit()  # a handler that only read
                    return result
                except inbox.AlreadyHandled:
                    log.info("update.already_handled", extra={"event": "update.already_handled",
                                                              "row": inbox_id})  # fmt: skip
                    return None
                except Exception as error:
                    if commits.committed or not transactions.is_retryable(error, attempt):
                        raise
                    pause = next(pauses, None)
                    if pause is None:
                        # Undone before the word to the user: no request inside a write.
                        await session.rollback()
                        await self._give_up(event, data, attempt, error)
                        return None
                    failure = type(error).__name__
                    transactions.note_retry("update")
                finally:
                    await session.rollback()
            log.warning(
                "update.retry: the database is busy or the lead changed; handling the update "
                "again in a fresh transaction",
                extra={
                    "event": "update.retry",
                    "update_id": _update_id(event),
                    "attempt": attempt,
                    "error": failure,
                },
            )
            await asyncio.sleep(pause)

    async def _give_up(
        self, event: TelegramObject, data: dict[str, Any], attempts: int, error: BaseException
    ) -> None:
        log.error(
            "update.gave_up: the database stayed busy or unavailable; the user was asked to "
            "try again. Check the database (disk, locks, server)",
            extra={
                "event": "update.gave_up",
                "update_id": _update_id(event),
                "attempts": attempts,
                "error": type(error).__name__,
            },
        )
        bot = data.get("bot")
        if isinstance(event, Update) and bot is not None:
            await ask_to_try_again(bot, event, data["scripts"].current.language)


class _CommitWatch:
    """Knows whether the update's session committed (then a retry could double a reply) and
    marks the update's inbox row handled in its first commit.

    The session finds its watch in `session.info`: two listeners registered once for every
    session, because listening on each update's session costs more than the rest of this
    middleware."""

    KEY = "leadbot.commit_watch"

    def __init__(
        self,
        session: AsyncSession,
        inbox_id: int | None,
        clock: Any,
        receipt: inbox.Receipt | None = None,
    ) -> None:
        self.committed = False
        self.inbox_id = inbox_id
        self.clock = clock
        self.receipt = receipt
        # A reply to write with the mark (bot/replies.py): chat, requests, status.
        self.reply: dict[str, Any] | None = None
        session.sync_session.info[self.KEY] = self

    def before_commit(self, sync_session: Session) -> None:
        if self.inbox_id is not None and not self.committed:
            values = inbox.handled(self.inbox_id, self.clock.now())
            if self.reply is None:
                marked = sync_session.execute(inbox.MARK_HANDLED, values)
            else:
                marked = sync_session.execute(inbox.MARK_AND_PLAN, {**values, **self.reply})
            if getattr(marked, "rowcount", 1) == 0:
                # Another instance (or a recovery) handled this update first: this
                # transaction is undone, so its answer is neither recorded nor replied twice.
                raise inbox.AlreadyHandled(self.inbox_id)


@event_api.listens_for(Session, "before_commit")
def _before_commit(sync_session: Session) -> None:
    watch = sync_session.info.get(_CommitWatch.KEY)
    if watch is not None:
        watch.before_commit(sync_session)


@event_api.listens_for(Session, "after_commit")
def _after_commit(sync_session: Session) -> None:
    watch = sync_session.info.get(_CommitWatch.KEY)
    if watch is not None:
        if not watch.committed and watch.inbox_id is not None and watch.receipt is not None:
            watch.receipt.marked = True  # the poller need not mark it in a second transaction
        watch.committed = True


def stage_with_mark(session: AsyncSession, reply: dict[str, Any]) -> bool:
    """Has the update's first commit write `reply` (chat, requests, status) with its inbox
    mark; False when that commit is past (the caller writes the reply itself)."""
    watch = session.sync_session.info.get(_CommitWatch.KEY)
    if watch is None or watch.committed or watch.inbox_id is None:
        return False
    watch.reply = reply
    return True


async def ask_to_try_again(bot: Bot, update: Update, language: str) -> None:
    """A short word to the person whose update could not be handled; best effort."""
    text = t("updates.try_again", lang=language)
    try:
        if update.callback_query is not None:
            await bot.answer_callback_query(update.callback_query.id, text, show_alert=True)
        elif update.message is not None and update.message.chat.type == "private":
            await bot.send_message(update.message.chat.id, text)
    except TelegramAPIError:
        pass


def _update_id(event: TelegramObject) -> int | None:
    return event.update_id if isinstance(event, Update) else None
