"""The outgoing rate limiter and the delivery middleware, on fake time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest
from aiogram import Bot
from aiogram.client.session.base import BaseSession
from aiogram.exceptions import (
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
)
from aiogram.methods import (
    AnswerCallbackQuery,
    EditMessageText,
    GetMe,
    SendChatAction,
    SendGift,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
    TelegramMethod,
)
from aiogram.methods.base import TelegramType
from aiogram.types import InputMediaPhoto

from bot.delivery_middleware import RateLimitMiddleware, limited_chat_id
from bot.ratelimit import RateLimiter

# -- fake time ---------------------------------------------------------------------------


class AutoTime:
    """Monotonic time that jumps forward whenever someone sleeps: whole minutes in no time.

    Only the limiter's dispatcher sleeps, so time moves exactly as far as it asks.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        # Let the waiters granted so far run (and note the time) before time moves on.
        await asyncio.sleep(0)
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class ManualTime:
    """Monotonic time that moves only when the test calls `advance`; sleepers wake in order."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._seq), future))
        await future

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():  # a cancelled sleep
                continue
            self.now = max(self.now, deadline)
            future.set_result(None)
            await settle()
        self.now = target
        await settle()


async def settle() -> None:
    """Let every runnable task run until it waits again."""
    for _ in range(20):
        await asyncio.sleep(0)


def limiter_on(clock: AutoTime | ManualTime, **options: Any) -> RateLimiter:
    return RateLimiter(**options, monotonic=clock.monotonic, sleep=clock.sleep)


async def send_all(
    limiter: RateLimiter, clock: AutoTime, chats: Sequence[int | str]
) -> list[tuple[float, int, int | str]]:
    """Acquire for every chat at once (in list order); (grant time, call index, chat) by grant."""
    granted: list[tuple[float, int, int | str]] = []

    async def one(index: int, chat: int | str) -> None:
        await limiter.acquire(chat)
        granted.append((clock.now, index, chat))

    await asyncio.gather(*(one(index, chat) for index, chat in enumerate(chats)))
    return granted


def lowest_bucket_level(arrivals: Sequence[float], rate: float) -> float:
    """Replay arrivals through the receiver's token bucket (capacity=rate, refill=rate)."""
    tokens, last, lowest = rate, arrivals[0], rate
    for at in sorted(arrivals):
        tokens = min(rate, tokens + (at - last) * rate) - 1
        last = at
        lowest = min(lowest, tokens)
    return lowest


def most_in_any_window(times: Sequence[float], window: float) -> int:
    """The most events in any half-open window [t, t + window)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - window + 1e-9:
            first += 1
        most = max(most, last - first + 1)
    return most


# -- overall rate ------------------------------------------------------------------------


async def test_a_single_send_does_not_wait() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock)
    await limiter.acquire(1)
    assert clock.sleeps == []


async def test_throughput_and_strict_spacing_over_2000_chats() -> None:
    clock = AutoTime()
    rate = 30.0
    limiter = limiter_on(clock, rate_per_second=rate)
    granted = await send_all(limiter, clock, range(1, 2001))
    times = [at for at, _, _ in granted]

    assert len(times) == 2000
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert achieved >= 0.95 * rate
    assert achieved <= rate * (1 + 1e-9)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= 1 / rate - 1e-9
    assert most_in_any_window(times, 1.0) <= rate
    assert lowest_bucket_level(times, rate) >= -1e-9
    # One dispatcher sleep per granted message: no busy waiting.
    assert len(clock.sleeps) <= len(times)
    # All 2,000 chats were idle long ago except the last second's worth.
    assert limiter.tracked_chats <= rate + 2
    assert limiter.waiting == 0


@pytest.mark.parametrize("rate", [30.0, 100.0])
async def test_receiver_bucket_holds_with_network_jitter(rate: float) -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, rate_per_second=rate)
    granted = await send_all(limiter, clock, range(1, 601))
    jitter = random.Random(42)
    arrivals = [at + jitter.uniform(0.0, 0.005) for at, _, _ in granted]
    assert lowest_bucket_level(arrivals, rate) >= 0


async def test_late_timers_do_not_cost_throughput() -> None:
    """A real event loop wakes the dispatcher a little late; the schedule absorbs it."""
    clock = AutoTime()

    async def late_sleep(seconds: float) -> None:
        await clock.sleep(seconds + 0.004)

    rate = 30.0
    limiter = RateLimiter(rate, monotonic=clock.monotonic, sleep=late_sleep)
    granted = await send_all(limiter, clock, range(1, 301))
    times = [at for at, _, _ in granted]
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.95 * rate
    assert lowest_bucket_level(times, rate) >= 0
    assert most_in_any_window(times, 1.0) <= rate + 1


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, rate_per_second=5)
    granted = await send_all(limiter, clock, [10, 20, 30, 40, 50, 60, 70, 80])
    assert [index for _, index, _ in granted] == list(range(8))


async def test_a_throttled_chat_does_not_hold_up_the_others() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, rate_per_second=10)
    granted = await send_all(limiter, clock, [1, 1, 1, 1, 2, 3])
    order = [(index, chat) for _, index, chat in granted]
    # Chat 1 spends its burst of two, then waits a second per message; chats 2 and 3 use the
    # slots meanwhile, and chat 1's messages keep their own order.
    assert order[:4] == [(0, 1), (1, 1), (4, 2), (5, 3)]
    assert [index for index, chat in order if chat == 1] == [0, 1, 2, 3]


# -- per-chat and per-group limits -------------------------------------------------------


async def test_private_chat_gets_a_short_burst_then_one_per_second() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, rate_per_second=30)
    granted = await send_all(limiter, clock, [7] * 6)
    start = granted[0][0]
    offsets = [at - start for at, _, _ in granted]
    assert offsets == pytest.approx([0, 1 / 30, 1, 2, 3, 4])
    assert most_in_any_window([at for at, _, _ in granted], 1.0) <= 2


async def test_chat_burst_and_rate_are_configurable() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, rate_per_second=100, chat_rate_per_second=0.5, chat_burst=1)
    granted = await send_all(limiter, clock, ["42"] * 3)  # a numeric string is the same chat
    start = granted[0][0]
    assert [at - start for at, _, _ in granted] == pytest.approx([0, 2, 4])


async def test_group_gets_twenty_per_minute() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock)
    granted = await send_all(limiter, clock, [-100123] * 45)
    times = [at for at, _, _ in granted]
    assert most_in_any_window(times, 60.0) <= 20
    assert most_in_any_window(times, 1.0) <= 2
    assert times[20] - times[0] >= 60
    assert times[40] - times[0] >= 120
    assert times[-1] - times[0] < 150  # but it does keep going at the allowed pace


async def test_channel_usernames_count_as_groups() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, group_per_minute=3)
    granted = await send_all(
        limiter, clock, ["@School_News", "@school_news ", "@school_news", "@SCHOOL_NEWS"]
    )
    times = [at for at, _, _ in granted]
    assert times[3] - times[0] >= 60


async def test_a_waiting_group_does_not_block_private_chats() -> None:
    clock = ManualTime()
    limiter = limiter_on(clock, group_per_minute=2)
    group = [asyncio.create_task(limiter.acquire(-5)) for _ in range(3)]
    await clock.advance(2)
    assert [task.done() for task in group] == [True, True, False]
    # Chat 9 spends its burst of two (spaced by the overall rate); its third message waits a
    # second. Both are much sooner than the group's turn, so the dispatcher, asleep until
    # then, has to wake early for them.
    burst = [asyncio.create_task(limiter.acquire(9)) for _ in range(3)]
    await clock.advance(0.5)
    assert [task.done() for task in burst] == [True, True, False]
    await clock.advance(0.6)
    assert burst[2].done()
    assert not group[2].done()
    await clock.advance(60)
    assert group[2].done()


# -- pause_all ---------------------------------------------------------------------------


async def test_pause_all_delays_everyone() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock)
    await limiter.acquire(1)
    paused_at = clock.now
    limiter.pause_all(10)
    granted = await send_all(limiter, clock, [2, 3, 4])
    offsets = [at - paused_at for at, _, _ in granted]
    assert offsets == pytest.approx([10, 10 + 1 / 30, 10 + 2 / 30])


async def test_a_shorter_pause_does_not_shorten_a_longer_one() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock)
    start = clock.now
    limiter.pause_all(10)
    limiter.pause_all(3)
    assert limiter.paused_until == start + 10
    limiter.pause_all(20)
    assert limiter.paused_until == start + 20
    await limiter.acquire(1)
    assert clock.now == pytest.approx(start + 20)


async def test_a_later_pause_extends_the_wait_of_those_already_waiting() -> None:
    clock = ManualTime()
    limiter = limiter_on(clock)
    await limiter.acquire(1)
    limiter.pause_all(10)
    waiting = [asyncio.create_task(limiter.acquire(chat)) for chat in (2, 3)]
    await clock.advance(5)
    assert not any(task.done() for task in waiting)
    limiter.pause_all(10)  # a second 429 at t=5: now until t=15
    await clock.advance(9.9)
    assert not any(task.done() for task in waiting)
    await clock.advance(0.11)
    assert [task.done() for task in waiting] == [True, False]  # and still spaced after
    await clock.advance(1 / 30)
    assert all(task.done() for task in waiting)


# -- cancellation and memory -------------------------------------------------------------


async def test_a_cancelled_waiter_gives_its_turn_away() -> None:
    clock = ManualTime()
    limiter = limiter_on(clock, rate_per_second=1)
    await limiter.acquire(1)
    first = asyncio.create_task(limiter.acquire(1))
    second = asyncio.create_task(limiter.acquire(1))
    other = asyncio.create_task(limiter.acquire(2))
    await settle()
    first.cancel()
    await clock.advance(1)
    assert first.cancelled()
    assert second.done()  # took over the cancelled head's turn in chat 1
    assert not other.done()
    await clock.advance(1)
    assert other.done()
    assert limiter.waiting == 0


async def test_idle_chats_are_forgotten() -> None:
    clock = AutoTime()
    limiter = limiter_on(clock, rate_per_second=1000)
    await send_all(limiter, clock, [*range(1, 301), -1, -2])
    assert limiter.tracked_chats > 300
    clock.now += 30  # private chats are idle after a second, groups keep their minute
    await limiter.acquire(9999)
    assert limiter.tracked_chats == 3
    clock.now += 31
    await limiter.acquire(9998)
    assert limiter.tracked_chats == 1  # the groups' minute is over, 9999 is idle too


@pytest.mark.parametrize(
    "options",
    [
        {"rate_per_second": 0},
        {"chat_rate_per_second": -1},
        {"chat_burst": 0},
        {"group_per_minute": 0},
    ],
)
def test_nonsense_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        RateLimiter(**options)


# -- the middleware ----------------------------------------------------------------------

MESSAGE = {"message_id": 1, "date": 0, "chat": {"id": 42, "type": "private"}, "text": "hi"}
OK_MESSAGE: dict[str, Any] = {"ok": True, "result": MESSAGE}
OK_TRUE: dict[str, Any] = {"ok": True, "result": True}
TOO_MANY = {
    "ok": False,
    "error_code": 429,
    "description": "Too Many Requests: retry after 3",
    "parameters": {"retry_after": 3},
}


class ScriptedSession(BaseSession):
    """Answers requests from a script and maps errors with aiogram's own `check_response`."""

    def __init__(self, clock: AutoTime, *outcomes: tuple[int, dict[str, Any]] | str) -> None:
        super().__init__()
        self.clock = clock
        self.outcomes = deque(outcomes)
        self.requests: list[tuple[float, str]] = []

    async def make_request(
        self,
        bot: Bot,
        method: TelegramMethod[TelegramType],
        timeout: int | None = None,  # noqa: ASYNC109 (aiogram's signature)
    ) -> TelegramType:
        self.requests.append((self.clock.now, method.__api_method__))
        outcome = self.outcomes.popleft() if self.outcomes else (200, OK_MESSAGE)
        if outcome == "timeout":
            raise TelegramNetworkError(method=method, message="Request timeout error")
        assert not isinstance(outcome, str)
        status, body = outcome
        response = self.check_response(bot, method, status, json.dumps(body))
        return response.result  # type: ignore[return-value]

    async def stream_content(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        timeout: int = 30,  # noqa: ASYNC109 (aiogram's signature)
        chunk_size: int = 65536,
        raise_for_status: bool = True,
    ) -> AsyncGenerator[bytes, None]:
        yield b""

    async def close(self) -> None:
        pass


class SpyLimiter(RateLimiter):
    def __init__(self, clock: AutoTime) -> None:
        super().__init__(monotonic=clock.monotonic, sleep=clock.sleep)
        self.acquired: list[int | str] = []
        self.pauses: list[float] = []

    async def acquire(self, chat_id: int | str) -> None:
        self.acquired.append(chat_id)
        await super().acquire(chat_id)

    def pause_all(self, seconds: float) -> None:
        self.pauses.append(seconds)
        super().pause_all(seconds)


def scripted_bot(
    *outcomes: tuple[int, dict[str, Any]] | str, max_retries: int = 5
) -> tuple[Bot, ScriptedSession, SpyLimiter]:
    clock = AutoTime()
    session = ScriptedSession(clock, *outcomes)
    limiter = SpyLimiter(clock)
    session.middleware(RateLimitMiddleware(limiter, max_retries=max_retries))
    return Bot(token="42:TEST", session=session), session, limiter


async def test_429_pauses_everyone_and_retries_once(caplog: pytest.LogCaptureFixture) -> None:
    bot, session, limiter = scripted_bot((429, TOO_MANY), (200, OK_MESSAGE))
    with caplog.at_level(logging.WARNING, logger="bot.delivery_middleware"):
        message = await bot.send_message(chat_id=42, text="secret offer text")
    assert message.message_id == 1
    assert limiter.pauses == [3]
    assert limiter.acquired == [42, 42]
    first, second = session.requests
    assert second[0] - first[0] == pytest.approx(3)  # the retry waited out retry_after
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.__dict__["event"] == "telegram_retry_after"
    assert record.__dict__["method"] == "sendMessage"
    assert record.__dict__["chat_id"] == 42
    assert record.__dict__["retry_after"] == 3
    assert "secret" not in record.getMessage()


async def test_429_gives_up_after_max_retries(caplog: pytest.LogCaptureFixture) -> None:
    bot, session, limiter = scripted_bot(*[(429, TOO_MANY)] * 5, max_retries=2)
    with pytest.raises(TelegramRetryAfter):
        await bot.send_message(chat_id=42, text="secret offer text")
    assert len(session.requests) == 3
    assert limiter.pauses == [3, 3, 3]
    assert [r.__dict__["event"] for r in caplog.records] == [
        "telegram_retry_after",
        "telegram_retry_after",
        "telegram_retry_after_gave_up",
    ]
    assert all("secret" not in r.getMessage() for r in caplog.records)


async def test_a_network_error_is_never_resent() -> None:
    bot, session, limiter = scripted_bot("timeout")
    with pytest.raises(TelegramNetworkError):
        await bot.send_message(chat_id=42, text="hi")
    assert len(session.requests) == 1
    assert limiter.pauses == []


async def test_other_telegram_errors_are_not_retried() -> None:
    forbidden = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"}
    bot, session, _ = scripted_bot((403, forbidden))
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(chat_id=42, text="hi")
    assert len(session.requests) == 1


async def test_non_send_methods_are_not_limited() -> None:
    me = {"ok": True, "result": {"id": 42, "is_bot": True, "first_name": "Leadbot"}}
    bot, session, limiter = scripted_bot((200, me), (200, OK_TRUE), (200, OK_TRUE))
    await bot.get_me()
    await bot.send_chat_action(chat_id=42, action="typing")
    await bot.answer_callback_query(callback_query_id="1")
    assert limiter.acquired == []
    assert [name for _, name in session.requests] == [
        "getMe",
        "sendChatAction",
        "answerCallbackQuery",
    ]


async def test_each_send_is_limited_per_chat() -> None:
    bot, session, limiter = scripted_bot()
    for _ in range(3):
        await bot.send_message(chat_id=42, text="hi")
    times = [at for at, _ in session.requests]
    assert [at - times[0] for at in times] == pytest.approx([0, 1 / 30, 1])
    assert limiter.acquired == [42, 42, 42]


def test_which_methods_are_limited() -> None:
    photo = InputMediaPhoto(media="file-id")
    assert limited_chat_id(SendMessage(chat_id=42, text="hi")) == 42
    assert limited_chat_id(SendPhoto(chat_id="@school", photo="file-id")) == "@school"
    assert limited_chat_id(SendMediaGroup(chat_id=-100, media=[photo, photo])) == -100
    assert limited_chat_id(SendGift(user_id=7, gift_id="g")) == 7
    assert limited_chat_id(SendChatAction(chat_id=42, action="typing")) is None
    assert limited_chat_id(GetMe()) is None
    assert limited_chat_id(AnswerCallbackQuery(callback_query_id="1")) is None
    assert limited_chat_id(EditMessageText(chat_id=42, message_id=1, text="hi")) is None


def test_negative_max_retries_is_refused() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RateLimitMiddleware(RateLimiter(), max_retries=-1)
