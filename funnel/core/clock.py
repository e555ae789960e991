"""Funnel time: the one Clock every decision and job is given instead of reading the wall clock.

Real time in production, scaled time in the demo, fake time in tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "ScaledClock", "SystemClock", "as_utc"]


@runtime_checkable
class Clock(Protocol):
    """Where funnel code gets "now" from and how it waits in funnel time."""

    def now(self) -> datetime:
        """The current funnel time, timezone-aware, in UTC."""
        ...

    async def sleep(self, funnel_seconds: float) -> None:
        """Wait until `funnel_seconds` of funnel time have passed."""
        ...


def as_utc(moment: datetime) -> datetime:
    """`moment` converted to UTC; naive datetimes are refused because their zone is a guess."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no timezone; pass an aware datetime (UTC)")
    return moment.astimezone(UTC)


class SystemClock:
    """The real wall clock: one funnel second is one second."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, funnel_seconds: float) -> None:
        await asyncio.sleep(max(funnel_seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


class ScaledClock:
    """Funnel time running `scale` times faster than the wall clock, starting at `origin`.

    `scale=3600` turns one wall second into one funnel hour, so the demo shows days of
    nurture in a minute. Time is measured with a monotonic counter, so funnel time never
    goes backwards even when the system clock is adjusted.
    """

    def __init__(
        self,
        scale: float,
        origin: datetime | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not scale > 0:  # also rejects NaN
            raise ValueError(f"time scale must be a positive number, got {scale!r}")
        self.scale = float(scale)
        self.origin = as_utc(origin) if origin is not None else datetime.now(UTC)
        self._monotonic = monotonic
        self._sleep = sleep
        self._started = monotonic()
        # A monotonic source should never step back, but an injected one might; holding the
        # last answer keeps the promise that funnel time only moves forward.
        self._last = self.origin

    def now(self) -> datetime:
        elapsed = max(self._monotonic() - self._started, 0.0)
        moment = self.origin + timedelta(seconds=elapsed * self.scale)
        if moment < self._last:
            return self._last
        self._last = moment
        return moment

    async def sleep(self, funnel_seconds: float) -> None:
        await self._sleep(max(funnel_seconds, 0.0) / self.scale)

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self.scale!r}, origin={self.origin.isoformat()!r})"


class FakeClock:
    """A clock for tests: it moves only when told to, and `sleep` moves it instantly."""

    def __init__(self, start: datetime) -> None:
        self._now = as_utc(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move time forward by a timedelta or a number of seconds; returns the new now."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError(f"a clock does not go backwards (advance by {step})")
        self._now += step
        return self._now

    def set(self, moment: datetime) -> datetime:
        """Jump to `moment` (not earlier than now); returns the new now."""
        target = as_utc(moment)
        if target < self._now:
            raise ValueError(
                f"a clock does not go backwards ({target.isoformat()} is before "
                f"{self._now.isoformat()}); start a new FakeClock instead"
            )
        self._now = target
        return self._now

    async def sleep(self, funnel_seconds: float) -> None:
        self.advance(max(funnel_seconds, 0.0))
        # Yield once so a sleeping loop still lets other tasks run, as a real sleep would.
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()!r})"
