"""Updates are never lost: each one fetched from Telegram is written to the `inbox` table
before the polling offset confirms it, handled, and marked handled in the commit of its
handling (bot/middlewares.py). After a crash the next start handles what is left, and an
update Telegram delivers again is recognised and skipped.

The poller and the webhook (bot/intake.py, bot/webhook.py) store through `Inbox` and hand
what is new to the fair intake."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from aiogram.types import Update
from sqlalchemy import Table, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from funnel.core.clock import Clock
from funnel.core.models import InboxUpdate, update_digest

log = logging.getLogger("leadbot.inbox")

# Telegram keeps an unconfirmed update for 24 hours; a handled row is kept twice as long so
# a delivery of it again is still recognised.
KEEP_HANDLED = timedelta(hours=48)
# Rows a purge deletes in one transaction: tens of milliseconds of the writer at most.
PURGE_BATCH = 5_000
INBOX = cast(Table, InboxUpdate.__table__)
WAITING = ("planned", "sending")


@dataclass
class Receipt:
    """Handed to the dispatcher with an update: its session sets `marked` when the commit that
    recorded the handling also marked the inbox row (bot/middlewares.py)."""

    marked: bool = False


class AlreadyHandled(Exception):
    """The update's inbox row was marked handled by another transaction first."""

    def __init__(self, row: int) -> None:
        super().__init__(f"inbox row {row} was handled already")
        self.row = row


# Marks an update handled; its payload (texts, names) goes. On the table, not the mapped
# class: the ORM's bulk-update path costs more than the statement, in every update's commit;
# and built once, with its values bound at each execution (`handled(...)`).
MARK_HANDLED = (
    update(INBOX)
    .where(INBOX.c.id == bindparam("marked_id"), INBOX.c.handled_at.is_(None))
    .values(handled_at=bindparam("marked_at"), payload="")
)


# The same, with the reply committed with the update (bot/replies.py): one statement where
# the mark is written anyway.
MARK_AND_PLAN = (
    update(INBOX)
    .where(INBOX.c.id == bindparam("marked_id"), INBOX.c.handled_at.is_(None))
    .values(
        handled_at=bindparam("marked_at"),
        payload="",
        chat_id=bindparam("chat"),
        replies=bindparam("requests"),
        reply_status=bindparam("status"),
        reply_next=0,
        reply_at=bindparam("marked_at"),
    )
)


def handled(row: int, now: datetime) -> dict[str, Any]:
    """MARK_HANDLED's parameters for one inbox row."""
    return {"marked_id": row, "marked_at": now}


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


@dataclass(frozen=True, slots=True)
class Stored:
    """An update written to the inbox, with its row's id (what marks it handled)."""

    row: int
    update: Update


async def store(
    session: AsyncSession, updates: Sequence[Update], now: datetime, bot_id: int = 0
) -> list[Stored]:
    """Writes the updates not seen before; returns those, in their order."""
    if not updates:
        return []
    rows = []
    for u in updates:
        payload = u.model_dump_json(exclude_unset=True, by_alias=True)
        rows.append(
            {
                "bot_id": bot_id,
                "update_id": u.update_id,
                "digest": update_digest(payload),
                "payload": payload,
                "received_at": now,
                "handled_at": None,
            }
        )
    # One statement for any number of rows, its parameters apart (the driver's "insert many
    # values" with RETURNING): compiled once and cached, where `.values(rows)` was compiled
    # again for every batch, half the cost of storing an update.
    statement = (
        _insert(session)(INBOX)
        .on_conflict_do_nothing(index_elements=["bot_id", "update_id", "digest"])
        .returning(INBOX.c.id, INBOX.c.update_id, INBOX.c.digest)
    )
    new = {(u, d): row for row, u, d in (await session.execute(statement, rows)).all()}
    stored = []
    for item, values in zip(updates, rows, strict=True):
        row = new.pop((item.update_id, values["digest"]), None)
        if row is not None:
            stored.append(Stored(row, item))
    return stored


async def pending(
    session: AsyncSession, limit: int, received_by: datetime | None = None
) -> list[tuple[int, str]]:
    """Rows received (by `received_by`) and not handled yet, oldest first: (row, payload)."""
    query = select(InboxUpdate.id, InboxUpdate.payload).where(InboxUpdate.handled_at.is_(None))
    if received_by is not None:
        query = query.where(InboxUpdate.received_at <= received_by)
    rows = await session.execute(query.order_by(InboxUpdate.id).limit(limit))
    return [(row, payload) for row, payload in rows.all()]


async def purge(session: AsyncSession, now: datetime, limit: int = PURGE_BATCH) -> int:
    """Deletes at most `limit` handled rows past KEEP_HANDLED; how many went. A row whose
    reply is still to send stays (bot/replies.py)."""
    expired = (
        select(INBOX.c.id)
        .where(
            INBOX.c.handled_at < now - KEEP_HANDLED,
            or_(INBOX.c.reply_status.is_(None), INBOX.c.reply_status.not_in(WAITING)),
        )
        .order_by(INBOX.c.handled_at)
        .limit(limit)
    )
    result = await session.execute(delete(INBOX).where(INBOX.c.id.in_(expired)))
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


class Inbox:
    """The inbox of one bot: stores what Telegram delivers, recognises what it delivers
    again, marks rows handled, and knows when the numbering began again.

    Updates are the same when the bot, the id and the contents are (funnel/core/models.py):
    a restarted Bot API server numbers from the start again, another token on the same
    database has ids of its own, and neither must meet a bot that drops what it "saw"."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], clock: Clock, bot_id: int
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.bot_id = bot_id
        # The highest update id stored for this bot: a new update at or below it means the
        # server numbers anew (logged once per run, it is worth knowing, not alarming).
        self.highest: int | None = None
        self._renumbering_logged = False
        # Rows from before ids were kept per bot carry no digest: a delivery again of one of
        # those is recognised by its id alone, until they are purged (48 hours).
        self._undigested = False

    async def open(self) -> None:
        """At the start: purge, take over the rows from before the bot's id was kept, and say
        when the database last belonged to another bot."""
        await self.purge()
        await transactions.retrying(self._open, "inbox.open")

    async def _open(self) -> None:
        async with self.sessions() as session:
            previous = await session.scalar(
                select(InboxUpdate.bot_id)
                .where(InboxUpdate.bot_id != 0)
                .order_by(InboxUpdate.id.desc())
                .limit(1)
            )
            if previous is not None and previous != self.bot_id:
                log.warning(
                    "inbox.new_bot: this database last received updates for another bot; "
                    "its update ids are this bot's own, none is taken for a delivery again",
                    extra={"event": "inbox.new_bot", "bot_id": self.bot_id,
                           "previous_bot_id": previous},
                )  # fmt: skip
            await session.execute(
                update(INBOX).where(INBOX.c.bot_id == 0).values(bot_id=self.bot_id)
            )
            self.highest = await session.scalar(
                select(func.max(InboxUpdate.update_id)).where(InboxUpdate.bot_id == self.bot_id)
            )
            self._undigested = (
                await session.scalar(
                    select(InboxUpdate.id).where(InboxUpdate.digest == "").limit(1)
                )
            ) is not None
            await session.commit()

    async def store(self, updates: Sequence[Update]) -> list[Stored]:
        """Writes what is new in one transaction (tried again while the database is busy);
        returns it."""
        return await transactions.retrying(
            functools.partial(self._store, updates), "inbox.store", budget=float("inf")
        )

    async def store_within(self, updates: Sequence[Update], seconds: float) -> list[Stored]:
        return await transactions.retrying(
            functools.partial(self._store, updates), "inbox.store", budget=seconds
        )

    async def _store(self, updates: Sequence[Update]) -> list[Stored]:
        async with self.sessions() as session:
            if self._undigested:
                updates = await self._without_undigested(session, updates)
            new = await store(session, updates, self.clock.now(), self.bot_id)
            await session.commit()
        self._watch_numbering(new)
        return new

    async def _without_undigested(
        self, session: AsyncSession, updates: Sequence[Update]
    ) -> Sequence[Update]:
        seen = set(
            (
                await session.scalars(
                    select(InboxUpdate.update_id).where(
                        InboxUpdate.digest == "",
                        InboxUpdate.bot_id == self.bot_id,
                        InboxUpdate.update_id.in_([u.update_id for u in updates]),
                    )
                )
            ).all()
        )
        return [u for u in updates if u.update_id not in seen]

    def _watch_numbering(self, new: Sequence[Stored]) -> None:
        if not new:
            return
        lowest = min(s.update.update_id for s in new)
        if self.highest is not None and lowest <= self.highest and not self._renumbering_logged:
            self._renumbering_logged = True
            log.warning(
                "inbox.renumbered: the Bot API server hands out update ids seen before (it "
                "was restarted, or a local server started anew); they are new updates and "
                "are handled",
                extra={"event": "inbox.renumbered", "update_id": lowest,
                       "highest_seen": self.highest},
            )  # fmt: skip
        top = max(s.update.update_id for s in new)
        self.highest = top if self.highest is None else max(self.highest, top)

    async def pending(self, received_by: datetime | None = None) -> list[tuple[int, str]]:
        async def read() -> list[tuple[int, str]]:
            async with self.sessions() as session:
                return await pending(session, 1_000_000, received_by)

        return await transactions.retrying(read, "inbox.pending", budget=float("inf"))

    async def mark(self, rows: Sequence[int]) -> None:
        """Marks rows handled whose handling committed nothing (it only read, it failed, or
        it was not handled on purpose)."""
        if rows:
            await transactions.retrying(functools.partial(self._mark, rows), "inbox.mark")

    async def _mark(self, rows: Sequence[int]) -> None:
        now = self.clock.now()
        async with self.sessions() as session:
            await session.execute(MARK_HANDLED, [handled(row, now) for row in rows])
            await session.commit()

    async def purge(self) -> int:
        return await purge_all(self.sessions, self.clock.now())
