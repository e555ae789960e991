"""Outgoing rate limiting for one bot token: Telegram's overall, per-chat and per-group limits.

Every send waits in `RateLimiter.acquire` first; a 429 pauses everyone through `pause_all`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Protocol

__all__ = ["RateLimiter", "SendLimiter"]

GROUP_WINDOW_SECONDS = 60.0
# A loop timer may fire a hair before its deadline; without this slack the dispatcher would
# go round once more just to sleep for a few nanoseconds.
_EPSILON = 1e-6
# How far behind a strictly spaced schedule the overall limit may fall and still catch up
# (see `RateLimiter._take`). Timer wake-ups are late by a millisecond or so; without catching
# up, high rates would lose a good share of their throughput to that lateness.
_MAX_CATCH_UP_SECONDS = 0.02

ChatKey = int | str


class SendLimiter(Protocol):
    """What delivery needs from a limiter; a limiter shared through Redis fits the same shape."""

    async def acquire(self, chat_id: int | str) -> None: ...

    def pause_all(self, seconds: float) -> None: ...


class _Waiter:
    __slots__ = ("chat", "future", "seq", "withdrawn")

    def __init__(self, seq: int, chat: _Chat, future: asyncio.Future[None]) -> None:
        self.seq = seq
        self.chat = chat
        self.future = future
        self.withdrawn = False

    @property
    def live(self) -> bool:
        return not self.withdrawn and not self.future.done()


class _Chat:
    """Per-chat state: a GCRA for "about one per second", a window log for groups' 20/min."""

    __slots__ = ("key", "queue", "recent", "tat")

    def __init__(self, key: ChatKey, group_limit: int | None) -> None:
        self.key = key
        # GCRA theoretical arrival time; -inf means "never sent", the same as idle long enough.
        self.tat = -math.inf
        self.recent: deque[float] | None = (
            deque(maxlen=group_limit) if group_limit is not None else None
        )
        self.queue: deque[_Waiter] = deque()


class RateLimiter:
    """Paces outgoing messages of one bot token.

    - overall: at most `rate_per_second`, one message per interval on a fixed schedule (no
      burst), so a receiver measuring with a token bucket never sees the rate exceeded, even
      with a little network jitter;
    - per chat: `chat_rate_per_second` with bursts of `chat_burst`;
    - per group (negative chat id or an `@username`): `group_per_minute` in any 60 s window;
    - `pause_all` (after a 429) holds everyone until the pause ends.

    Waiters are served first come, first served among those whose chat limit allows sending.
    One dispatcher task wakes once per granted message, so thousands of waiters cost only a
    heap entry each. Chats idle longer than their window are forgotten.
    """

    def __init__(
        self,
        rate_per_second: float = 30.0,
        chat_rate_per_second: float = 1.0,
        chat_burst: int = 2,
        group_per_minute: int = 20,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        check_limits(rate_per_second, chat_rate_per_second, chat_burst, group_per_minute)
        self.rate_per_second = float(rate_per_second)
        self.chat_rate_per_second = float(chat_rate_per_second)
        self.chat_burst = int(chat_burst)
        self.group_per_minute = int(group_per_minute)
        self._monotonic = monotonic
        self._sleep = sleep

        self._interval = 1.0 / self.rate_per_second
        self._catch_up = max(self._interval, _MAX_CATCH_UP_SECONDS)
        self._chat_interval = 1.0 / self.chat_rate_per_second
        self._chat_tolerance = (self.chat_burst - 1) * self._chat_interval

        self._global_tat = -math.inf
        self._paused_until = -math.inf
        # Least recently granted first, so idle chats are evicted from the front in O(1).
        self._chats: OrderedDict[ChatKey, _Chat] = OrderedDict()
        self._seq = itertools.count()
        # Heads of chat queues: those their chat already allows, by arrival order (FIFO) ...
        self._ready: list[tuple[int, _Waiter]] = []
        # ... and those that must first wait for their chat, by the time it will allow them.
        self._timed: list[tuple[float, int, _Waiter]] = []

        self._dispatcher: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._wake_at = math.inf

    # -- public API ---------------------------------------------------------------------

    async def acquire(self, chat_id: int | str) -> None:
        """Wait until a message to `chat_id` may be sent; the caller then sends it at once."""
        chat, now = self._settle(chat_id)
        if self._free_now(chat, now):
            self._take(chat, now)
            return

        waiter = _Waiter(next(self._seq), chat, asyncio.get_running_loop().create_future())
        chat.queue.append(waiter)
        if len(chat.queue) == 1:
            self._schedule_head(chat, now)
        self._ensure_dispatcher()
        try:
            await waiter.future
        except asyncio.CancelledError:
            # Granted-then-cancelled keeps its slot spent (the safe side); otherwise leave.
            if waiter.future.cancelled():
                self._withdraw(waiter)
            raise

    def try_acquire(self, chat_id: int | str) -> bool:
        """Takes a slot to `chat_id` if one is free right now (nobody waits before it), else
        nothing: True when the caller may send at once."""
        chat, now = self._settle(chat_id)
        if self._free_now(chat, now):
            self._take(chat, now)
            return True
        return False

    def _settle(self, chat_id: int | str) -> tuple[_Chat, float]:
        """The chat's state (made on first use) and now, the queues brought up to now."""
        key, is_group = _chat_key(chat_id)
        now = self._monotonic()
        chat = self._chats.get(key)
        if chat is None:
            chat = _Chat(key, self.group_per_minute if is_group else None)
            self._chats[key] = chat
        self._promote(now)
        self._drop_dead_ready()
        return chat, now

    def _free_now(self, chat: _Chat, now: float) -> bool:
        return (
            not chat.queue
            and not self._ready
            and now >= self._start() - _EPSILON
            and self._chat_ready_at(chat) <= now
        )

    def pause_all(self, seconds: float) -> None:
        """Hold every sender for `seconds` from now; never shortens an earlier, longer pause."""
        until = self._monotonic() + max(float(seconds), 0.0)
        self._paused_until = max(self._paused_until, until)

    @property
    def paused_until(self) -> float:
        """The monotonic time until which sending is paused (-inf when never paused)."""
        return self._paused_until

    @property
    def tracked_chats(self) -> int:
        """How many chats the limiter currently remembers (idle ones are evicted)."""
        return len(self._chats)

    @property
    def waiting(self) -> int:
        """How many acquisitions are currently waiting."""
        return sum(len(chat.queue) for chat in self._chats.values())

    # -- limits -------------------------------------------------------------------------

    def _start(self) -> float:
        """Earliest moment the overall limit and any pause allow the next message."""
        return max(self._global_tat, self._paused_until)

    def _chat_ready_at(self, chat: _Chat) -> float:
        ready_at = chat.tat - self._chat_tolerance
        recent = chat.recent
        if recent is not None and len(recent) == recent.maxlen:
            ready_at = max(ready_at, recent[0] + GROUP_WINDOW_SECONDS)
        return ready_at

    def _take(self, chat: _Chat, now: float) -> None:
        """Spend one message of every limit at `now`."""
        start = self._start()
        # Keep to the schedule when the timer fired a little late, so small wake-up delays do
        # not add up and cost throughput: grants never run ahead of the schedule, and fall
        # behind it by less than the catch-up allowance. After an idle gap the schedule
        # restarts from now.
        if now - start < self._catch_up:
            self._global_tat = start + self._interval
        else:
            self._global_tat = now + self._interval
        chat.tat = max(chat.tat, now) + self._chat_interval
        if chat.recent is not None:
            chat.recent.append(now)
        self._chats.move_to_end(chat.key)
        self._evict_idle(now)

    def _is_idle(self, chat: _Chat, now: float) -> bool:
        if chat.queue or chat.tat > now:
            return False
        return not chat.recent or chat.recent[-1] + GROUP_WINDOW_SECONDS <= now

    def _evict_idle(self, now: float) -> None:
        # Front-only scan: amortised O(1); a busy chat at the front delays eviction of the
        # ones behind it by at most one window, which still bounds memory.
        while self._chats:
            chat = next(iter(self._chats.values()))
            if not self._is_idle(chat, now):
                return
            del self._chats[chat.key]

    # -- queueing -----------------------------------------------------------------------

    def _schedule_head(self, chat: _Chat, now: float) -> None:
        head = chat.queue[0]
        ready_at = self._chat_ready_at(chat)
        if ready_at <= now:
            heapq.heappush(self._ready, (head.seq, head))
            self._nudge(max(now, self._start()))
        else:
            heapq.heappush(self._timed, (ready_at, head.seq, head))
            self._nudge(max(ready_at, self._start()))

    def _promote(self, now: float) -> None:
        """Move heads whose chat now allows them into the FIFO of ready heads."""
        timed = self._timed
        while timed and (timed[0][0] <= now or not timed[0][2].live):
            _, _, waiter = heapq.heappop(timed)
            if self._settle_dead(waiter):
                heapq.heappush(self._ready, (waiter.seq, waiter))

    def _drop_dead_ready(self) -> None:
        ready = self._ready
        while ready and not self._settle_dead(ready[0][1]):
            heapq.heappop(ready)

    def _settle_dead(self, waiter: _Waiter) -> bool:
        """True if `waiter` still waits; a cancelled one is withdrawn from its chat."""
        if waiter.live:
            return True
        self._withdraw(waiter)
        return False

    def _withdraw(self, waiter: _Waiter) -> None:
        if waiter.withdrawn:
            return
        waiter.withdrawn = True
        queue = waiter.chat.queue
        if queue and queue[0] is waiter:
            queue.popleft()
            if queue:
                self._schedule_head(waiter.chat, self._monotonic())
        else:
            queue.remove(waiter)

    # -- dispatcher ---------------------------------------------------------------------

    def _ensure_dispatcher(self) -> None:
        loop = asyncio.get_running_loop()
        dispatcher = self._dispatcher
        # A task left behind by a loop that has since closed never finishes; start afresh.
        if dispatcher is None or dispatcher.done() or dispatcher.get_loop() is not loop:
            self._dispatcher = loop.create_task(self._dispatch(), name="rate-limiter-dispatcher")

    async def _dispatch(self) -> None:
        """Grant one waiter per overall slot, oldest ready first; exit when nobody waits."""
        while True:
            now = self._monotonic()
            self._promote(now)
            self._drop_dead_ready()
            start = self._start()
            if self._ready:
                if now >= start - _EPSILON:
                    _, waiter = heapq.heappop(self._ready)
                    self._grant(waiter, now)
                    continue
                # Only the overall limit or a pause holds the next one; a newcomer cannot go
                # earlier than that, so no need to listen for newcomers here.
                await self._sleep(start - now)
            elif self._timed:
                await self._sleep_unless_nudged(max(start, self._timed[0][0]), now)
            else:
                return

    def _grant(self, waiter: _Waiter, now: float) -> None:
        chat = waiter.chat
        chat.queue.popleft()  # only a chat's head is ever ready
        waiter.withdrawn = True
        self._take(chat, now)
        waiter.future.set_result(None)
        if chat.queue:
            self._schedule_head(chat, now)

    async def _sleep_unless_nudged(self, wake_at: float, now: float) -> None:
        """Sleep until `wake_at`, or less if a newcomer can go sooner (see `_nudge`)."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._wake, self._wake_at = wake, wake_at
        sleeper = asyncio.ensure_future(self._sleep(max(wake_at - now, 0.0)))
        try:
            await asyncio.wait((sleeper, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            self._wake, self._wake_at = None, math.inf

    def _nudge(self, could_go_at: float) -> None:
        if self._wake is not None and not self._wake.done() and could_go_at < self._wake_at:
            self._wake.set_result(None)


def check_limits(
    rate_per_second: float, chat_rate_per_second: float, chat_burst: int, group_per_minute: int
) -> None:
    """Refuses limits no limiter can keep, the same for the local and the shared one."""
    if not rate_per_second > 0:
        raise ValueError(f"rate_per_second must be positive, got {rate_per_second!r}")
    if not chat_rate_per_second > 0:
        raise ValueError(f"chat_rate_per_second must be positive, got {chat_rate_per_second!r}")
    if chat_burst < 1:
        raise ValueError(f"chat_burst must be at least 1, got {chat_burst!r}")
    if group_per_minute < 1:
        raise ValueError(f"group_per_minute must be at least 1, got {group_per_minute!r}")


def _chat_key(chat_id: int | str) -> tuple[ChatKey, bool]:
    """Normalise a chat id; returns the key and whether the chat is a group or channel."""
    if isinstance(chat_id, int):
        return chat_id, chat_id < 0
    text = chat_id.strip()
    try:
        number = int(text)
    except ValueError:
        # "@username" addresses a channel or a public supergroup, never a private chat.
        return text.lower(), True
    return number, number < 0
