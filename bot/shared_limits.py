"""Telegram's limits shared by every instance of one bot through Redis (`REDIS_URL`).

Each send asks one short Lua script, run atomically by Redis on Redis's own clock (so the
instances' clocks never matter), whether all the limits allow it now:
- overall: `rate_per_second`, one message per interval, no burst (as bot/ratelimit.py);
- per chat: `chat_rate_per_second` with bursts of `chat_burst` (a GCRA);
- per group (negative chat id or an `@username`): `group_per_minute` in any 60 s window (a
  log of the grants in a sorted set);
- a 429's pause (`pause_all`), held by every instance until it ends.
If every limit allows it, the script spends the slot in all of them and answers 0; otherwise
it answers how long to wait and spends nothing. Keys expire once idle, so Redis keeps nothing
per chat beyond its window.

In one process the waiters for the overall slot take turns (one asks Redis at a time, the
others wait in line locally), so a thousand queued touches cost one request per grant, not a
thousand; a waiter held only by its own chat steps out of the line and comes back when its
chat allows it, so it never holds up the others.

Redis unreachable at start: `connect()` raises `SharedLimitsUnavailable` with the reason.
Unreachable later: senders wait and try again (a warning once per outage), never sending
past a limit they cannot check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot.ratelimit import GROUP_WINDOW_SECONDS, _chat_key, check_limits

log = logging.getLogger("leadbot.limits")

__all__ = ["SharedLimitsUnavailable", "SharedRateLimiter"]

# KEYS: overall, chat, group log ("" for a private chat), pause.
# ARGV: overall interval, chat interval, chat tolerance, group limit, group window (seconds),
#       a unique member for the group log.
# Returns {wait_ms, why}: wait_ms 0 when granted (and spent); why: "overall", "pause", "chat".
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local chat_interval = tonumber(ARGV[2])
local chat_tolerance = tonumber(ARGV[3])
local group_limit = tonumber(ARGV[4])
local window = tonumber(ARGV[5])

local pause = tonumber(redis.call('GET', KEYS[4]) or '0')
if pause > now then
  return {math.ceil((pause - now) * 1000), 'pause'}
end
local overall = tonumber(redis.call('GET', KEYS[1]) or '0')
local chat = tonumber(redis.call('GET', KEYS[2]) or '0')
local wait_overall = overall - now
local wait_chat = chat - chat_tolerance - now
if KEYS[3] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
  if redis.call('ZCARD', KEYS[3]) >= group_limit then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    wait_chat = math.max(wait_chat, tonumber(oldest[2]) + window - now)
  end
end
if wait_chat > 0 then
  return {math.max(math.ceil(wait_chat * 1000), 1), 'chat'}
end
if wait_overall > 0 then
  return {math.max(math.ceil(wait_overall * 1000), 1), 'overall'}
end

-- Keep to the schedule when this grant comes a little late (timers, the round trip), so
-- small delays do not add up and cost throughput; after an idle gap it restarts from now.
local next_slot = now + interval
if overall > 0 and now - overall < math.max(interval, 0.02) then
  next_slot = overall + interval
end
redis.call('SET', KEYS[1], tostring(next_slot), 'PX', math.ceil(interval * 1000) + 1000)
local chat_tat = math.max(chat, now) + chat_interval
redis.call('SET', KEYS[2], tostring(chat_tat),
           'PX', math.ceil((chat_tat - now) * 1000) + 1000)
if KEYS[3] ~= '' then
  redis.call('ZADD', KEYS[3], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[3], math.ceil(window * 1000) + 1000)
end
return {0, 'granted'}
"""

# KEYS: pause. ARGV: seconds. Never shortens a longer pause already set.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if until_ > current then
  redis.call('SET', KEYS[1], tostring(until_), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return 1
"""

# Waiting for Redis to come back: first pause, longest pause.
_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 2.0


class SharedLimitsUnavailable(RuntimeError):
    """Redis could not be reached when the bot started."""


class SharedRateLimiter:
    """A `SendLimiter` (bot/ratelimit.py) whose limits hold across instances; see the doc.

    `prefix` names the bot: instances of one token must share it, another bot must not."""

    def __init__(
        self,
        redis: Any,
        prefix: str,
        rate_per_second: float = 30.0,
        chat_rate_per_second: float = 1.0,
        chat_burst: int = 2,
        group_per_minute: int = 20,
        *,
        group_window_seconds: float = GROUP_WINDOW_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        check_limits(rate_per_second, chat_rate_per_second, chat_burst, group_per_minute)
        self.redis = redis
        self.prefix = prefix
        self.rate_per_second = float(rate_per_second)
        self._interval = 1.0 / self.rate_per_second
        self._chat_interval = 1.0 / float(chat_rate_per_second)
        self._chat_tolerance = (chat_burst - 1) * self._chat_interval
        self.group_per_minute = int(group_per_minute)
        self.group_window_seconds = float(group_window_seconds)
        self._sleep = sleep
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)
        self._turn = asyncio.Lock()
        self._local_pause_until = -1.0
        self._grants = 0
        self._outage = False
        self._pausing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, prefix: str, **limits: Any) -> SharedRateLimiter:
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        return cls(client, prefix, **limits)

    async def connect(self) -> None:
        """Checks Redis answers; raises SharedLimitsUnavailable with the reason if not."""
        try:
            await self.redis.ping()
        except Exception as error:
            raise SharedLimitsUnavailable(
                f"REDIS_URL: Redis does not answer ({type(error).__name__}); the shared rate "
                "limits need it. Start Redis, fix REDIS_URL, or leave it empty to run one "
                "instance with the local limiter"
            ) from error

    async def close(self) -> None:
        for task in list(self._pausing):
            await asyncio.gather(task, return_exceptions=True)
        await self.redis.aclose()

    # -- SendLimiter ----------------------------------------------------------------------

    async def acquire(self, chat_id: int | str) -> None:
        """Waits until a message to `chat_id` may be sent by any instance; then send it."""
        key, is_group = _chat_key(chat_id)
        keys = [
            f"{self.prefix}overall",
            f"{self.prefix}chat:{key}",
            f"{self.prefix}group:{key}" if is_group else "",
            f"{self.prefix}pause",
        ]
        while True:
            await self._wait_local_pause()
            async with self._turn:
                while True:
                    wait, why = await self._ask(keys)
                    if wait <= 0:
                        return
                    if why == "chat":
                        break  # out of the line until the chat allows it
                    await self._sleep(wait)
            await self._sleep(wait)

    def pause_all(self, seconds: float) -> None:
        """Hold every sender of every instance for `seconds` (a 429's retry_after)."""
        seconds = max(float(seconds), 0.0)
        self._local_pause_until = max(self._local_pause_until, time.monotonic() + seconds)
        task = asyncio.get_running_loop().create_task(self._share_pause(seconds))
        self._pausing.add(task)
        task.add_done_callback(self._pausing.discard)

    @property
    def grants(self) -> int:
        """Sends this instance was allowed so far."""
        return self._grants

    # -- internals ------------------------------------------------------------------------

    async def _wait_local_pause(self) -> None:
        left = self._local_pause_until - time.monotonic()
        if left > 0:
            await self._sleep(left)

    async def _ask(self, keys: list[str]) -> tuple[float, str]:
        """(seconds to wait, why) from Redis; 0 means granted. Waits out an outage."""
        pause = _RETRY_FIRST_SECONDS
        while True:
            try:
                wait_ms, why = await self._acquire(
                    keys=keys,
                    args=[
                        repr(self._interval),
                        repr(self._chat_interval),
                        repr(self._chat_tolerance),
                        self.group_per_minute,
                        repr(self.group_window_seconds),
                        f"{time.time_ns()}:{id(self)}:{self._grants}",
                    ],
                )
            except Exception as error:
                if not _is_redis_failure(error):
                    raise
                if not self._outage:
                    self._outage = True
                    log.warning(
                        "limits.redis_unreachable: sends wait until Redis answers again; "
                        "check the Redis server",
                        extra={"event": "limits.redis_unreachable", "error": type(error).__name__},
                    )
                await self._sleep(pause)
                pause = min(pause * 2, _RETRY_MAX_SECONDS)
                continue
            if self._outage:
                self._outage = False
                log.warning(
                    "limits.redis_back: sending again", extra={"event": "limits.redis_back"}
                )
            wait = int(wait_ms) / 1000.0
            if wait <= 0:
                self._grants += 1
            reason = why.decode() if isinstance(why, bytes) else str(why)
            return wait, reason

    async def _share_pause(self, seconds: float) -> None:
        pause = _RETRY_FIRST_SECONDS
        deadline = time.monotonic() + seconds
        # Worth sharing only while the pause lasts; this instance holds its own meanwhile.
        while time.monotonic() < deadline:
            try:
                await self._pause(keys=[f"{self.prefix}pause"], args=[repr(seconds)])
                return
            except Exception as error:
                if not _is_redis_failure(error):
                    raise
                await self._sleep(pause)
                pause = min(pause * 2, _RETRY_MAX_SECONDS)


def _is_redis_failure(error: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(error, RedisConnectionError | RedisTimeoutError | OSError)
