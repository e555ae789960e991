"""The reply outbox: what the bot answers to an update is committed with the update.

A dialogue's reply (the next question, the outcome and its invoice) is written to the
update's own inbox row in the transaction that records the answer, as the Bot API requests
to make. So a reply is as durable as the answer it follows: a kill -9 after the commit leaves
the reply in the database, and the next start sends it (`recover`). The row goes the delivery
engine's way (bot/delivery.py): `planned` while it waits, `sending` only while its request is
on the wire, then `sent` (its texts dropped), `failed` or `unknown` (never sent twice).

The usual case costs nothing more than the mark the row gets anyway: when the chat has
nothing queued and the rate limiter grants a slot at once (`try_acquire`), the row is
committed as `sending` and its requests go right after the commit; their outcome is recorded
a moment later, together with the others' of the same moment. Otherwise the row is committed
`planned` and a chat's rows leave in order, each message taking its slot, its claim and its
record like any outbox row; the handler does not wait for them, so a slow chat never holds a
handler slot."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from aiogram import Bot
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import SendInvoice, SendMessage, TelegramMethod
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from bot.delivery import PACED, Attempt, Claims, Courier, classify
from bot.middlewares import INBOX_ROW, stage_with_mark
from bot.ratelimit import SendLimiter
from funnel.core.clock import Clock
from funnel.core.models import InboxUpdate

log = logging.getLogger("leadbot.replies")

INBOX = cast(Table, InboxUpdate.__table__)
# Outcomes of replies sent at once are recorded together, at most this often.
RECORD_SECONDS = 0.1
# On PostgreSQL a `sending` row this old belongs to an instance that died with it on the wire.
STALE_SENDING = timedelta(minutes=2)
REPLY_STALE_SLOT_SECONDS = 0.1
METHODS: dict[str, type[TelegramMethod[Any]]] = {
    "sendMessage": SendMessage,
    "sendInvoice": SendInvoice,
}

PLAN = (
    update(INBOX)
    .where(INBOX.c.id == bindparam("row"))
    .values(
        chat_id=bindparam("chat"),
        replies=bindparam("requests"),
        reply_status=bindparam("status"),
        reply_next=0,
        reply_at=bindparam("at"),
    )
)
# A settled reply keeps neither its texts nor its chat: nothing of the person stays.
SETTLE = (
    update(INBOX)
    .where(INBOX.c.id == bindparam("row"))
    .values(
        reply_status=bindparam("status"),
        reply_next=bindparam("next"),
        replies=None,
        chat_id=None,
        reply_at=bindparam("at"),
    )
)

Blocked = Callable[[AsyncSession, int], Awaitable[None]]
# A reply is a few messages; this bounds them so a (row, message) pair packs into one key.
MAX_REQUESTS = 1000


def claim_key(row: int, index: int) -> int:
    return row * MAX_REQUESTS + index


def encode(requests: Sequence[TelegramMethod[Any]]) -> str:
    """The requests as the row keeps them: every parameter explicit (parse mode, previews),
    so a reply sent after an upgrade or a settings change still reads as it was written."""
    return json.dumps(
        [
            {
                "method": r.__api_method__,
                "params": r.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
            }
            for r in requests
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode(text: str) -> list[TelegramMethod[Any]]:
    return [METHODS[item["method"]].model_validate(item["params"]) for item in json.loads(text)]


@dataclass
class Planned:
    """A reply staged in the update's transaction; `deliver` it after the commit."""

    row: int | None
    chat_id: int
    requests: list[TelegramMethod[Any]]
    at_once: bool


class Replies:
    """The reply outbox of one bot (see the module's docstring)."""

    def __init__(
        self,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        limiter: SendLimiter | None,
        blocked: Blocked,
        *,
        multi_instance: bool = False,
    ) -> None:
        self.bot = bot
        self.sessions = sessions
        self.clock = clock
        self.limiter = limiter
        self.blocked = blocked
        self.multi_instance = multi_instance
        # Replies are most of what a busy bot sends: a claim's commit that stalls longer than
        # a few messages' worth at 30/s takes a fresh slot, so stalled claims never leave
        # together above the rate.
        self.courier = Courier(limiter, "replies", stale_slot_seconds=REPLY_STALE_SLOT_SECONDS)
        self._claims = Claims(self._claim_many, "replies.claim")
        self._chats: dict[int, deque[int]] = {}
        self._records: list[dict[str, Any]] = []
        self._recording: asyncio.Task[None] | None = None
        self._at_once: set[asyncio.Task[Any]] = set()
        # The requests of queued rows this process planned, and the first one left.
        self._known: dict[int, tuple[list[TelegramMethod[Any]], int]] = {}

    # --- inside the update's transaction ------------------------------------------------

    async def stage(
        self, session: AsyncSession, chat_id: int, requests: Sequence[TelegramMethod[Any]]
    ) -> Planned:
        """Writes the reply to the update's inbox row, in the update's transaction; `deliver`
        it after the commit. Without a row (an update fed by hand) it is sent as is then."""
        row = session.sync_session.info.get(INBOX_ROW)
        listed = list(requests)
        if row is None or not listed:
            return Planned(None, chat_id, listed, at_once=True)
        at_once = self._slots_now(chat_id, len(listed))
        reply = {"chat": chat_id, "requests": encode(listed),
                 "status": "sending" if at_once else "planned"}  # fmt: skip
        if not stage_with_mark(session, reply):
            # The handler committed before: the reply goes in this transaction on its own.
            await session.execute(PLAN, {"row": row, **reply, "at": self.clock.now()})
        return Planned(row, chat_id, listed, at_once)

    def _slots_now(self, chat_id: int, count: int) -> bool:
        """Whether every message may go right after the commit: nothing of the chat's is
        queued before them and the limiter grants their slots now (taken here)."""
        if chat_id in self._chats or self.courier.stopping:
            return False
        if self.limiter is None:
            return True
        take = getattr(self.limiter, "try_acquire", None)
        if take is None:
            return False  # a limiter that cannot answer at once (the shared one): queued
        return all(take(chat_id) for _ in range(count))

    # --- after the commit ---------------------------------------------------------------

    async def deliver(self, planned: Planned) -> None:
        if planned.row is None:
            await self._send_unrecorded(planned)
        elif planned.at_once:
            task = asyncio.current_task()
            if task is not None:
                self._at_once.add(task)
            try:
                await self._send_at_once(planned)
            finally:
                if task is not None:
                    self._at_once.discard(task)
        else:
            self._enqueue(planned.chat_id, planned.row, planned.requests)

    async def _send_unrecorded(self, planned: Planned) -> None:
        for request in planned.requests:
            try:
                await self.bot(request)
            except Exception as error:
                if classify(error).verdict == "blocked":
                    await self._note_blocked(planned.chat_id)
                    return
                log.warning("reply.not_sent", extra={"event": "reply.not_sent",
                                                     "error": type(error).__name__})  # fmt: skip

    async def _send_at_once(self, planned: Planned) -> None:
        assert planned.row is not None
        token = PACED.set(self.limiter is not None)
        try:
            for index, request in enumerate(planned.requests):
                try:
                    await self.bot(request)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    attempt = classify(error)
                    if isinstance(error, TelegramRetryAfter) and self.limiter is not None:
                        self.limiter.pause_all(error.retry_after)
                    await self._after_failure(planned, index, attempt)
                    return
        finally:
            PACED.reset(token)
        self._record_later(planned.row, "sent", len(planned.requests))

    async def _after_failure(self, planned: Planned, index: int, attempt: Attempt) -> None:
        """A reply sent at once that failed: refused before delivery (a 429) goes back to
        planned from the message that failed; anything else is settled like an outbox row."""
        assert planned.row is not None
        row, chat_id = planned.row, planned.chat_id
        if attempt.verdict == "retry":
            await self._record(row, "planned", index, keep=True)
            self._enqueue(chat_id, row, planned.requests, index)
        elif attempt.verdict == "blocked":
            await self._record(row, "failed", index)
            await self._note_blocked(chat_id)
        elif attempt.verdict == "refused":
            _refused(row, attempt)
            if index + 1 < len(planned.requests):
                await self._record(row, "planned", index + 1, keep=True)
                self._enqueue(chat_id, row, planned.requests, index + 1)
            else:
                await self._record(row, "failed", index)
        else:
            await self._record(row, "unknown", index)

    # --- a chat's queue -----------------------------------------------------------------

    def _enqueue(
        self,
        chat_id: int,
        row: int,
        requests: list[TelegramMethod[Any]] | None = None,
        index: int = 0,
    ) -> None:
        """Queues a row behind the chat's others; `requests`, when known, spare reading them
        back (a row recovered at the start is read)."""
        if requests is not None:
            self._known[row] = (requests, index)
        queue = self._chats.get(chat_id)
        if queue is None:
            queue = self._chats[chat_id] = deque()
            queue.append(row)
            self.courier.spawn(self._drain_chat(chat_id, queue))
        elif row not in queue:
            queue.append(row)

    async def _drain_chat(self, chat_id: int, queue: deque[int]) -> None:
        try:
            while queue and not self.courier.stopping:
                row = queue[0]
                try:
                    done = await self._send_queued(chat_id, row)
                except Exception as error:
                    log.warning("reply.queue_failed: trying again later",
                                extra={"event": "reply.queue_failed",
                                       "error": type(error).__name__})  # fmt: skip
                    await asyncio.sleep(1.0)
                    continue
                if done:
                    queue.popleft()
                    self._known.pop(row, None)
        finally:
            if self._chats.get(chat_id) is queue:
                del self._chats[chat_id]

    async def _send_queued(self, chat_id: int, row: int) -> bool:
        """Sends what is left of one row, message by message; True once it is settled (or
        another instance owns it), False to be tried again."""
        known = self._known.get(row)
        if known is not None:
            requests, index = known
        else:
            work = functools.partial(self._load, row)
            state = await transactions.retrying(work, "replies.read")
            if state is None:
                return True
            status, index, text = state
            if status != "planned" or text is None:
                return True
            requests = decode(text)
        while index < len(requests):
            request = requests[index]
            attempt = await self.courier.deliver(
                chat_id,
                functools.partial(self._claims.claim, claim_key(row, index)),
                functools.partial(self.bot, request),
            )
            if attempt.verdict == "skipped":
                return self.courier.stopping is False  # claimed elsewhere, or stopping
            if attempt.verdict == "sent":
                index += 1
                if index == len(requests):
                    # Nothing claims this row again: recorded with the others of the moment.
                    self._record_later(row, "sent", index)
                else:
                    await self._record(row, "planned", index, keep=True)
                    self._known[row] = (requests, index)
                continue
            if attempt.verdict == "retry":
                await self._record(row, "planned", index, keep=True)
                self._known[row] = (requests, index)
                if attempt.retry_after:
                    await asyncio.sleep(attempt.retry_after)
                continue
            if attempt.verdict == "blocked":
                await self._record(row, "failed", index)
                await self._note_blocked(chat_id)
                return True
            if attempt.verdict == "refused":
                _refused(row, attempt)
                index += 1
                last = index == len(requests)
                await self._record(row, "failed" if last else "planned", index, keep=not last)
                self._known[row] = (requests, index)
                continue
            await self._record(row, "unknown", index)
            return True
        return True

    async def _load(self, row: int) -> tuple[str | None, int, str | None] | None:
        async with self.sessions() as session:
            found = (
                await session.execute(
                    select(INBOX.c.reply_status, INBOX.c.reply_next, INBOX.c.replies).where(
                        INBOX.c.id == row
                    )
                )
            ).first()
        if found is None:
            return None
        return found[0], int(found[1] or 0), found[2]

    async def _claim_many(self, claims: list[int]) -> list[int]:
        """Claims (row, message) pairs, packed as Claims' keys (`claim_key`): the message
        is claimed only if the row still waits for it, so two instances never both send it."""
        now = self.clock.now()
        won = []
        async with self.sessions() as session:
            for key in claims:
                row, index = divmod(key, MAX_REQUESTS)
                result = await session.execute(
                    update(INBOX)
                    .where(
                        INBOX.c.id == row,
                        INBOX.c.reply_status == "planned",
                        INBOX.c.reply_next == index,
                    )
                    .values(reply_status="sending", reply_at=now)
                )
                if getattr(result, "rowcount", 0) == 1:
                    won.append(key)
            await session.commit()
        return won

    # --- records ------------------------------------------------------------------------

    async def _record(self, row: int, status: str, index: int, *, keep: bool = False) -> None:
        """Writes a row's outcome now (the queued path: its next claim needs it)."""
        values = self._values(row, status, index, keep)
        await transactions.retrying(functools.partial(self._write, [values]), "replies.record")

    def _values(self, row: int, status: str, index: int, keep: bool) -> dict[str, Any]:
        """A record's parameters; `keep`: the row still has requests to send (its texts and
        chat stay), else it is settled (they go)."""
        return {"row": row, "status": status, "next": index, "at": self.clock.now(),
                "keep": keep}  # fmt: skip

    def _record_later(self, row: int, status: str, index: int) -> None:
        self._records.append(self._values(row, status, index, keep=False))
        if self._recording is None or self._recording.done():
            self._recording = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(RECORD_SECONDS)
        await self.flush()

    async def flush(self) -> None:
        records, self._records = self._records, []
        if not records:
            return
        try:
            await transactions.retrying(functools.partial(self._write, records), "replies.record")
        except Exception as error:
            # Left `sending`: settled as unknown at the next start (they went, nothing resends).
            log.warning("reply.record_failed", extra={"event": "reply.record_failed",
                                                      "error": type(error).__name__})  # fmt: skip

    async def _write(self, records: list[dict[str, Any]]) -> None:
        kept = [r for r in records if r["keep"]]
        settled = [r for r in records if not r["keep"]]
        async with self.sessions() as session:
            if settled:
                await session.execute(SETTLE, settled)
            for record in kept:
                await session.execute(
                    update(INBOX)
                    .where(INBOX.c.id == record["row"])
                    .values(reply_status=record["status"], reply_next=record["next"],
                            reply_at=record["at"])
                )  # fmt: skip
            await session.commit()

    async def _note_blocked(self, chat_id: int) -> None:
        async def work() -> None:
            async with self.sessions() as session:
                await self.blocked(session, chat_id)
                await session.commit()

        with contextlib.suppress(Exception):
            await transactions.retrying(work, "replies.blocked")
        log.info("reply.blocked", extra={"event": "reply.blocked"})

    # --- start and stop -----------------------------------------------------------------

    async def recover(self, *, orphans_only: bool = False) -> int:
        """At the start: replies a stopped process left `sending` are `unknown` (they may
        have gone; never twice), `planned` ones are queued again in their order.
        `orphans_only` (the sweep of several instances): only rows untouched for a while,
        which an instance that died left."""

        async def work() -> list[tuple[int, int]]:
            now = self.clock.now()
            async with self.sessions() as session:
                stale = INBOX.c.reply_status == "sending"
                if self.multi_instance:
                    stale = stale & (INBOX.c.reply_at < now - STALE_SENDING)
                waiting = INBOX.c.reply_status == "planned"
                if orphans_only:
                    waiting = waiting & (INBOX.c.reply_at < now - STALE_SENDING)
                await session.execute(
                    update(INBOX)
                    .where(stale)
                    .values(reply_status="unknown", replies=None, chat_id=None)
                )
                left = (
                    await session.execute(
                        select(INBOX.c.id, INBOX.c.chat_id).where(waiting).order_by(INBOX.c.id)
                    )
                ).all()
                await session.commit()
            return [(int(row), int(chat)) for row, chat in left]

        left = await transactions.retrying(work, "replies.recover", budget=float("inf"))
        for row, chat in left:
            self._enqueue(chat, row)
        if left:
            log.warning(
                "replies.resumed: sending replies a stopped process had committed",
                extra={"event": "replies.resumed", "replies": len(left)},
            )
        return len(left)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Replies waiting stay planned; those on the wire finish and are recorded."""
        await self.courier.drain(grace_seconds)
        if self._at_once:
            await asyncio.wait(set(self._at_once), timeout=grace_seconds)
        if self._recording is not None:
            self._recording.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recording
        await self.flush()

    async def settle(self) -> None:
        """Returns once every reply handed over has been sent and recorded (tests, the demo)."""
        while self.courier.tasks or self._at_once:
            await asyncio.gather(*self.courier.tasks, *self._at_once, return_exceptions=True)
        await self.flush()

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._chats.values())


def _refused(row: int, attempt: Attempt) -> None:
    # Telegram's reason (a bad entity, a chat gone), never the text: the rest still goes.
    log.warning(
        "reply.refused: Telegram refused a reply; the next messages of it still go",
        extra={"event": "reply.refused", "row": row, "error": (attempt.error or "")[:120]},
    )
