"""Updates are never lost: each one fetched from Telegram is written to the `inbox` table
before the polling offset confirms it, handled, and marked handled in the commit of its
handling (bot/middlewares.py). After a crash the next start handles what is left, and an
update Telegram delivers again is recognised and skipped.

The `Poller` replaces aiogram's polling loop, which confirms updates as soon as it fetched
them (an update fetched just before `kill -9` was lost)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError
from aiogram.methods import GetUpdates
from aiogram.types import Update
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from funnel.core.clock import Clock
from funnel.core.models import InboxUpdate

log = logging.getLogger("leadbot.inbox")

# Telegram keeps an unconfirmed update for 24 hours; a handled row is kept twice as long so
# a delivery of it again is still recognised.
KEEP_HANDLED = timedelta(hours=48)
DEFAULT_CONCURRENCY = 64
POLL_TIMEOUT_SECONDS = 10
# Rows a purge deletes in one transaction: tens of milliseconds of the writer at most.
PURGE_BATCH = 5_000
MAX_BACKOFF_SECONDS = 30.0
INBOX = cast(Table, InboxUpdate.__table__)


@dataclass
class Receipt:
    """Handed to the dispatcher with an update: its session sets `marked` when the commit that
    recorded the handling also marked the inbox row (bot/middlewares.py)."""

    marked: bool = False


class AlreadyHandled(Exception):
    """The update's inbox row was marked handled by another transaction first."""

    def __init__(self, update_id: int) -> None:
        super().__init__(f"update {update_id} was handled already")
        self.update_id = update_id


# Marks an update handled; its payload (texts, names) goes. On the table, not the mapped
# class: the ORM's bulk-update path costs more than the statement, in every update's commit;
# and built once, with its values bound at each execution (`handled(...)`).
MARK_HANDLED = (
    update(INBOX)
    .where(INBOX.c.update_id == bindparam("marked_id"), INBOX.c.handled_at.is_(None))
    .values(handled_at=bindparam("marked_at"), payload="")
)


def handled(update_id: int, now: datetime) -> dict[str, Any]:
    """MARK_HANDLED's parameters for one update."""
    return {"marked_id": update_id, "marked_at": now}


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def store(session: AsyncSession, updates: Sequence[Update], now: datetime) -> set[int]:
    """Writes updates not seen before; returns the ids that are new."""
    if not updates:
        return set()
    rows = [
        {
            "update_id": u.update_id,
            "payload": u.model_dump_json(exclude_unset=True, by_alias=True),
            "received_at": now,
            "handled_at": None,
        }
        for u in updates
    ]
    # One statement for any number of rows, its parameters apart (the driver's "insert many
    # values" with RETURNING): compiled once and cached, where `.values(rows)` was compiled
    # again for every batch, half the cost of storing an update.
    statement = (
        _insert(session)(INBOX)
        .on_conflict_do_nothing(index_elements=["update_id"])
        .returning(INBOX.c.update_id)
    )
    return set((await session.execute(statement, rows)).scalars().all())


async def pending(session: AsyncSession, limit: int) -> list[tuple[int, str]]:
    """Updates received and not handled yet, oldest first."""
    rows = await session.execute(
        select(InboxUpdate.update_id, InboxUpdate.payload)
        .where(InboxUpdate.handled_at.is_(None))
        .order_by(InboxUpdate.update_id)
        .limit(limit)
    )
    return [(update_id, payload) for update_id, payload in rows.all()]


async def purge(session: AsyncSession, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Deletes at most `limit` handled rows past KEEP_HANDLED; how many went."""
    expired = (
        select(INBOX.c.update_id)
        .where(INBOX.c.handled_at < now - KEEP_HANDLED)
        .order_by(INBOX.c.handled_at)
        .limit(limit)
    )
    result = await session.execute(delete(INBOX).where(INBOX.c.update_id.in_(expired)))
    return int(getattr(result, "rowcount", 0) or 0)


async def purge_all(
    sessions: async_sessionmaker[AsyncSession], now: datetime, limit: int = PURGE_BATCH
) -> int:
    """Every handled row past KEEP_HANDLED, `limit` rows a transaction: a purge after days
    of traffic once held SQLite's single writer (and the loop) for as long as it took, and
    every reply waited behind it. Between batches the other writers take their turns."""
    total = 0

    async def batch() -> int:
        async with sessions() as session:
            count = await purge(session, now, limit)
            await session.commit()
        return count

    while True:
        count = await transactions.retrying(batch, "inbox.purge")
        total += count
        if count < limit:
            return total
        await asyncio.sleep(0)


class Poller:
    """Long polling through the inbox: fetch, store, confirm, handle (bounded concurrency).

    `stop()` ends fetching and lets the updates being handled finish (for a while); what is
    left stays in the inbox for the next start."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_timeout: int = POLL_TIMEOUT_SECONDS,
    ) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self.sessions = sessions
        self.clock = clock
        self.poll_timeout = poll_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._handling: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Handles what a previous run left, then polls until `stop()`."""
        await purge_all(self.sessions, self.clock.now())
        await self._handle_leftovers()
        allowed = self.dispatcher.resolve_used_update_types()
        offset: int | None = None
        backoff = 1.0
        while not self._stopping.is_set():
            await self._slots.acquire()  # fetch only while a handler slot is free
            self._slots.release()
            try:
                updates = await self._fetch(offset, allowed)
            except asyncio.CancelledError:
                raise
            except (TelegramNetworkError, TelegramAPIError, TimeoutError, OSError) as error:
                if self._stopping.is_set():
                    break
                log.warning(
                    "polling.retry: Telegram did not answer getUpdates; trying again",
                    extra={"event": "polling.retry", "error": type(error).__name__,
                           "retry_in": backoff},
                )  # fmt: skip
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 1.0
            if not updates:
                continue
            try:
                new = await transactions.retrying(
                    functools.partial(self._store, updates), "inbox.store", budget=float("inf")
                )
            except Exception:
                # Not stored, so not confirmed: Telegram hands the same updates out again.
                log.exception("inbox.store_failed", extra={"event": "inbox.store_failed"})
                await self._pause(backoff)
                continue
            offset = updates[-1].update_id + 1  # confirmed by the next getUpdates
            for item in updates:
                if item.update_id in new:
                    await self._spawn(item)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping.set()
        if self._handling:
            _, late = await asyncio.wait(set(self._handling), timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    @property
    def handling(self) -> int:
        return len(self._handling)

    async def _fetch(self, offset: int | None, allowed: list[str]) -> list[Update]:
        fetch = asyncio.ensure_future(
            self.bot(GetUpdates(offset=offset, timeout=self.poll_timeout,
                                allowed_updates=allowed))
        )  # fmt: skip
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not fetch.done():
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
            return []
        return fetch.result()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _store(self, updates: Sequence[Update]) -> set[int]:
        async with self.sessions() as session:
            new = await store(session, updates, self.clock.now())
            await session.commit()
        return new

    async def _handle_leftovers(self) -> None:
        async def read() -> list[tuple[int, str]]:
            async with self.sessions() as session:
                return await pending(session, 1_000_000)

        left = await transactions.retrying(read, "inbox.pending", budget=float("inf"))
        if left:
            log.warning(
                "inbox.resumed: handling updates a stopped process had received",
                extra={"event": "inbox.resumed", "updates": len(left)},
            )
        for update_id, payload in left:
            try:
                item = Update.model_validate_json(payload)
            except ValueError:
                log.error("inbox.unreadable", extra={"event": "inbox.unreadable",
                                                     "update_id": update_id})  # fmt: skip
                await self._mark(update_id)
                continue
            await self._spawn(item)

    async def _spawn(self, item: Update) -> None:
        await self._slots.acquire()
        task = asyncio.create_task(self._handle(item))
        self._handling.add(task)
        task.add_done_callback(self._handling.discard)

    async def _handle(self, item: Update) -> None:
        receipt = Receipt()
        try:
            await self.dispatcher.feed_update(
                self.bot, item, inbox_id=item.update_id, inbox_receipt=receipt
            )
        except Exception:
            # The dispatcher's error handler has logged it; the update is not retried forever.
            pass
        finally:
            self._slots.release()
        if receipt.marked:
            return
        with contextlib.suppress(Exception):
            # Handlers that only read never committed; a failed update is settled too.
            await transactions.retrying(functools.partial(self._mark, item.update_id),
                                        "inbox.mark")  # fmt: skip

    async def _mark(self, update_id: int) -> None:
        async with self.sessions() as session:
            await session.execute(MARK_HANDLED, handled(update_id, self.clock.now()))
            await session.commit()
