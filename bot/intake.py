"""Fair intake: stored updates handled so that nobody waits for somebody else.

Both the poller (bot/inbox.py) and the webhook (bot/webhook.py) hand their stored updates
here. What it promises:

- **One user, one slot.** Each user's updates wait in that user's own queue, without a
  handler slot; users whose turn it is take the free slots round robin, one update each. A
  user who forwards 200 messages at once holds one slot of `concurrency`, and everybody else
  is answered meanwhile (the queue also keeps one user's updates in order).
- **Money first.** A pre-checkout query (Telegram refuses an answer after 10 s) and a
  successful payment skip every queue, their user's own included, on slots of their own.
- **The user's own word first.** `/stop`, `/forget`, their confirmations and the bot being
  blocked or unblocked go to the front of that user's queue and are never quieted.
- **A flood is recorded, not answered.** Past `InboundLimit` a user's updates are marked
  handled without the dispatcher (nothing is dropped unrecorded: the inbox holds the row),
  and the user gets one "please slow down" per flood.

The `Poller` here replaces aiogram's polling loop, which confirms updates as soon as it
fetched them (an update fetched just before `kill -9` was lost): it confirms them only once
the inbox holds them. The webhook (bot/webhook.py) stores each POST the same way.

Nothing here must survive a restart: the inbox rows are the state, and what was queued and
not handled is handled at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError
from aiogram.methods import GetUpdates
from aiogram.types import Update

from bot.inbox import Inbox, Receipt, Stored

log = logging.getLogger("leadbot.intake")

DEFAULT_CONCURRENCY = 64
POLL_TIMEOUT_SECONDS = 10
MAX_BACKOFF_SECONDS = 30.0
# Payments are rare and quick (a read and a commit): a few slots of their own are plenty.
EXPRESS_CONCURRENCY = 16
# Quieted updates are marked handled together, at most this often.
QUIET_FLUSH_SECONDS = 0.2

SlowDown = Callable[[int], Awaitable[None]]


class Gauge(Protocol):
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


class Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


def user_of(update: Update) -> int | None:
    """The person an update comes from, or None for updates of nobody in particular."""
    event = (
        update.message
        or update.edited_message
        or update.callback_query
        or update.my_chat_member
        or update.chat_member
        or update.pre_checkout_query
    )
    user = getattr(event, "from_user", None)
    return user.id if user is not None else None


def is_express(update: Update) -> bool:
    """Money: answered ahead of every queue."""
    return update.pre_checkout_query is not None or (
        update.message is not None and update.message.successful_payment is not None
    )


# What a person says to stop or to be forgotten: never behind their own backlog, never
# quieted. Callback data is matched by its prefix (the buttons' own data, signed or not).
_FIRST_COMMANDS = ("/stop", "/forget")
_FIRST_BUTTONS = ("s:forget", "b:stop")


def goes_first(update: Update) -> bool:
    if update.my_chat_member is not None:
        return True
    if update.message is not None:
        text = update.message.text or ""
        command = text.split(maxsplit=1)[0].split("@", 1)[0] if text.startswith("/") else ""
        return command in _FIRST_COMMANDS
    if update.callback_query is not None:
        return (update.callback_query.data or "").startswith(_FIRST_BUTTONS)
    return False


def chat_id_of(update: Update) -> int | None:
    message = update.message or update.edited_message
    if message is None and update.callback_query is not None:
        message = update.callback_query.message  # type: ignore[assignment]
    chat = getattr(message, "chat", None)
    return int(chat.id) if chat is not None else None


def chat_of(update: Update) -> int | None:
    """The private chat to tell about a flood, if the update came from one."""
    message = update.message or update.edited_message
    if message is None and update.callback_query is not None:
        message = update.callback_query.message  # type: ignore[assignment]
    chat = getattr(message, "chat", None)
    if chat is None or getattr(chat, "type", None) != "private":
        return None
    return int(chat.id)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    warned: bool = False


class InboundLimit:
    """How much one person may send before the bot stops answering for a while: a token
    bucket of `burst` updates refilled at `per_minute`. A person answering buttons or typing
    never meets it; a forwarded pile of messages or a script does.

    Judged when the update is taken (a backlog left by a stop counts as sent at the start):
    the state lives in memory, as it may, since losing it only forgives a flood. At most
    `remember` people are kept, the least recent forgotten first."""

    def __init__(self, per_minute: float, burst: int, *, remember: int = 100_000) -> None:
        if per_minute <= 0 or burst < 1:
            raise ValueError("the inbound limit needs a positive rate and a burst of at least 1")
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.remember = remember
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()

    def admit(self, user: int, at: float) -> tuple[bool, bool]:
        """(admitted, warn): `warn` is True for the first update quieted in a flood."""
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = _Bucket(self.burst, at)
            self._buckets[user] = bucket
            if len(self._buckets) > self.remember:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user)
            elapsed = max(0.0, at - bucket.stamp)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = max(bucket.stamp, at)
            if bucket.tokens >= self.burst:
                bucket.warned = False  # quiet long enough: the flood is over
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True, False
        warn = not bucket.warned
        bucket.warned = True
        return False, warn

    def seconds_to_full(self, user: int) -> float:
        bucket = self._buckets.get(user)
        if bucket is None:
            return 0.0
        return max(0.0, (self.burst - bucket.tokens) / self.rate) if self.rate else math.inf


@dataclass(slots=True)
class _Queue:
    items: deque[Stored] = field(default_factory=deque)
    running: bool = False


class Intake:
    """Handles stored updates fairly (see the module's docstring); `drain()` is the graceful
    stop (what does not finish stays in the inbox for the next start)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        inbox: Inbox,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        express: int = EXPRESS_CONCURRENCY,
        limit: InboundLimit | None = None,
        staff: frozenset[int] = frozenset(),
        staff_chat: int | None = None,
        slow_down: SlowDown | None = None,
        inflight: Gauge | None = None,
        quieted: Counter | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self.inbox = inbox
        self.concurrency = concurrency
        self.limit = limit
        # The school's own people (admins, and anyone in the managers' chat) are never quieted:
        # a broadcast wizard or a busy hour of cards is not a flood.
        self.staff = staff
        self.staff_chat = staff_chat
        self.slow_down = slow_down
        self.inflight = inflight
        self.quieted = quieted
        self._express = asyncio.Semaphore(express)
        self._queues: dict[object, _Queue] = {}
        self._ready: deque[object] = deque()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._rows: set[int] = set()
        self._quiet: list[int] = []
        self._flushing: asyncio.Task[None] | None = None
        self._space = asyncio.Event()
        self._space.set()

    # --- what the poller and the webhook see -------------------------------------------

    @property
    def count(self) -> int:
        """Updates taken and not finished: queued, being handled, or waiting to be marked."""
        return len(self._rows)

    def holds(self, row: int) -> bool:
        return row in self._rows

    def busy(self) -> bool:
        """Every handler slot is taken (the poller waits before fetching more)."""
        return self._running >= self.concurrency

    async def wait_for_space(self) -> None:
        while self.busy():
            self._space.clear()
            await self._space.wait()

    def submit(self, stored: Stored) -> None:
        """Takes a stored update; never waits."""
        if stored.row in self._rows:
            return
        update = stored.update
        self._rows.add(stored.row)
        if self.inflight is not None:
            self.inflight.inc()
        if is_express(update):
            self._start(self._express_lane(stored))
            return
        user = user_of(update)
        first = goes_first(update)
        if (
            user is not None
            and not first
            and self.limit is not None
            and user not in self.staff
            and (self.staff_chat is None or chat_id_of(update) != self.staff_chat)
        ):
            admitted, warn = self.limit.admit(user, time.monotonic())
            if not admitted:
                self._quieten(stored, warn)
                return
        key: object = user if user is not None else ("row", stored.row)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
        if first:
            queue.items.appendleft(stored)
        else:
            queue.items.append(stored)
        if not queue.running and len(queue.items) == 1:
            self._ready.append(key)
        self._pump()

    async def drain(self, grace_seconds: float) -> int:
        """Lets what is being handled finish, for a while; returns how many were left."""
        # What waits in the queues is not started any more: it stays in the inbox.
        self._ready.clear()
        for queue in self._queues.values():
            for item in queue.items:
                self._release(item.row)
            queue.items.clear()
        await self._flush_quiet()
        tasks = set(self._tasks)
        if not tasks:
            return 0
        _, late = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    # --- inside --------------------------------------------------------------------------

    def _start(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _pump(self) -> None:
        while self._running < self.concurrency and self._ready:
            key = self._ready.popleft()
            queue = self._queues.get(key)
            if queue is None or not queue.items:
                continue
            queue.running = True
            self._running += 1
            self._start(self._turn(key, queue, queue.items.popleft()))

    async def _turn(self, key: object, queue: _Queue, stored: Stored) -> None:
        try:
            await self._handle(stored, express=False)
        finally:
            self._running -= 1
            queue.running = False
            if queue.items:
                self._ready.append(key)  # to the back: the others' turn first
            elif self._queues.get(key) is queue:
                del self._queues[key]
            if not self.busy():
                self._space.set()
            self._pump()

    async def _express_lane(self, stored: Stored) -> None:
        async with self._express:
            await self._handle(stored, express=True)

    async def _handle(self, stored: Stored, *, express: bool) -> None:
        receipt = Receipt()
        # The dispatcher's error handler has logged a failure; it is not retried forever.
        with contextlib.suppress(Exception):
            await self.dispatcher.feed_update(
                self.bot, stored.update, inbox_id=stored.row, inbox_receipt=receipt,
                inbox_express=express,
            )  # fmt: skip
        try:
            if not receipt.marked:
                # Handlers that only read never committed; a failed update is settled too.
                with contextlib.suppress(Exception):
                    await self.inbox.mark([stored.row])
        finally:
            self._release(stored.row)

    def _release(self, row: int) -> None:
        if row in self._rows:
            self._rows.discard(row)
            if self.inflight is not None:
                self.inflight.dec()

    def _quieten(self, stored: Stored, warn: bool) -> None:
        if self.quieted is not None:
            self.quieted.inc()
        self._quiet.append(stored.row)
        if warn:
            chat = chat_of(stored.update)
            log.info(
                "intake.quieted: a person sends faster than the inbound limit; their updates "
                "are recorded and not answered for a while",
                extra={"event": "intake.quieted", "user_id": user_of(stored.update)},
            )
            if chat is not None and self.slow_down is not None:
                self._start(self._tell(chat))
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush_later())

    async def _tell(self, chat: int) -> None:
        assert self.slow_down is not None
        try:
            await self.slow_down(chat)
        except Exception as error:
            log.info("intake.slow_down_not_sent",
                     extra={"event": "intake.slow_down_not_sent",
                            "error": type(error).__name__})  # fmt: skip

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(QUIET_FLUSH_SECONDS)
            await self._flush_quiet()
        finally:
            self._flushing = None
            if self._quiet:
                self._flushing = asyncio.ensure_future(self._flush_later())

    async def _flush_quiet(self) -> None:
        rows, self._quiet = self._quiet, []
        if not rows:
            return
        try:
            await self.inbox.mark(rows)
        except Exception as error:
            # Left unhandled in the inbox: the next start (or the sweep) handles them.
            log.warning("intake.mark_failed", extra={"event": "intake.mark_failed",
                                                     "error": type(error).__name__})  # fmt: skip
        finally:
            for row in rows:
                self._release(row)


class Poller:
    """Long polling through the inbox: fetch, store, confirm, hand to the intake
    (bot/intake.py), which handles them fairly.

    `stop()` ends fetching and lets the updates being handled finish (for a while); what is
    left stays in the inbox for the next start."""

    def __init__(
        self,
        bot: Bot,
        inbox: Inbox,
        intake: Intake,
        allowed: list[str],
        *,
        poll_timeout: int = POLL_TIMEOUT_SECONDS,
    ) -> None:
        self.bot = bot
        self.inbox = inbox
        self.intake = intake
        self.allowed = allowed
        self.poll_timeout = poll_timeout
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Handles what a previous run left, then polls until `stop()`."""
        await self.inbox.open()
        await resume(self.inbox, self.intake)
        offset: int | None = None
        backoff = 1.0
        while not self._stopping.is_set():
            await self.intake.wait_for_space()  # fetch only while a handler slot is free
            try:
                updates = await self._fetch(offset)
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
                # The server may be a new one (a restarted local Bot API server numbers from
                # the start): ask for what is unconfirmed, not past our old offset. What
                # was fetched before is recognised in the inbox.
                offset = None
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            backoff = 1.0
            if not updates:
                continue
            try:
                new = await self.inbox.store(updates)
            except Exception:
                # Not stored, so not confirmed: Telegram hands the same updates out again.
                log.exception("inbox.store_failed", extra={"event": "inbox.store_failed"})
                await self._pause(backoff)
                continue
            offset = updates[-1].update_id + 1  # confirmed by the next getUpdates
            for stored in new:
                self.intake.submit(stored)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        self._stopping.set()
        await self.intake.drain(grace_seconds)

    @property
    def handling(self) -> int:
        return self.intake.count

    async def _fetch(self, offset: int | None) -> list[Update]:
        fetch = asyncio.ensure_future(
            self.bot(GetUpdates(offset=offset, timeout=self.poll_timeout,
                                allowed_updates=self.allowed))
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


async def resume(
    inbox: Inbox, intake: Intake, received_by: datetime | None = None, bot: Bot | None = None
) -> int:
    """Hands the intake the stored updates nobody handled (received by `received_by`);
    returns how many."""
    left = [(row, payload) for row, payload in await inbox.pending(received_by)
            if not intake.holds(row)]  # fmt: skip
    unreadable = []
    for row, payload in left:
        try:
            item = Update.model_validate_json(payload, context={"bot": bot} if bot else None)
        except ValueError:
            log.error("inbox.unreadable", extra={"event": "inbox.unreadable", "row": row})
            unreadable.append(row)
            continue
        intake.submit(Stored(row, item))
    await inbox.mark(unreadable)
    spawned = len(left) - len(unreadable)
    if spawned:
        log.warning(
            "inbox.resumed: handling updates a stopped process had received",
            extra={"event": "inbox.resumed", "updates": spawned},
        )
    return spawned
