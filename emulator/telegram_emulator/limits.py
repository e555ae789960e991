"""Telegram's flood limits as token buckets: one per bot, one per private chat, one per group."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`capacity` tokens, refilled continuously at `rate` tokens per second."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: float, rate: float, now: float) -> TokenBucket:
        return cls(capacity=capacity, rate=rate, tokens=capacity, updated=now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 if one is available now)."""
        self._refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1.0


@dataclass(frozen=True)
class RateLimitConfig:
    rate_per_second: float = 30.0
    chat_rate_per_second: float = 1.0
    chat_burst: int = 5
    group_per_minute: int = 20


class RateLimiter:
    """Decides whether a sending request passes; a refused request consumes no tokens."""

    def __init__(self, config: RateLimitConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._global: dict[int, TokenBucket] = {}
        self._chats: dict[int, TokenBucket] = {}

    def _bot_bucket(self, bot_id: int, now: float) -> TokenBucket:
        if bot_id not in self._global:
            rate = self.config.rate_per_second
            self._global[bot_id] = TokenBucket.full(rate, rate, now)
        return self._global[bot_id]

    def _chat_bucket(self, chat_id: int, is_group: bool, now: float) -> TokenBucket:
        if chat_id not in self._chats:
            if is_group:
                per_minute = self.config.group_per_minute
                bucket = TokenBucket.full(per_minute, per_minute / 60.0, now)
            else:
                bucket = TokenBucket.full(
                    self.config.chat_burst, self.config.chat_rate_per_second, now
                )
            self._chats[chat_id] = bucket
        return self._chats[chat_id]

    def acquire(self, bot_id: int, chat_id: int, is_group: bool) -> int | None:
        """Take a token from every bucket involved, or return the `retry_after` (whole seconds,
        at least 1, as Telegram sends it) without taking any."""
        now = self._clock()
        buckets = (self._bot_bucket(bot_id, now), self._chat_bucket(chat_id, is_group, now))
        wait = max(bucket.wait_time(now) for bucket in buckets)
        if wait > 0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.take(now)
        return None

    def reset(self) -> None:
        self._global.clear()
        self._chats.clear()
