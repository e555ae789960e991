"""Funnel clocks: real, scaled (demo) and fake (tests)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from funnel.core.clock import Clock, FakeClock, ScaledClock, SystemClock

START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


class ManualMonotonic:
    """A wall-clock counter the test moves by hand, and a sleep that records its argument."""

    def __init__(self) -> None:
        self.value = 500.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.value

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.value += seconds


def test_every_clock_satisfies_the_protocol() -> None:
    for clock in (SystemClock(), ScaledClock(60), FakeClock(START)):
        assert isinstance(clock, Clock)


async def test_system_clock_is_utc_and_current() -> None:
    clock = SystemClock()
    before = datetime.now(UTC)
    now = clock.now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert before <= now <= datetime.now(UTC)
    await clock.sleep(0)
    await clock.sleep(-5)  # a due time in the past means "don't wait", not an error


def test_scaled_clock_maps_wall_seconds_to_funnel_time() -> None:
    wall = ManualMonotonic()
    clock = ScaledClock(3600, origin=START, monotonic=wall)
    assert clock.now() == START
    wall.value += 1.0
    assert clock.now() == START + timedelta(hours=1)
    wall.value += 23.5
    assert clock.now() == START + timedelta(hours=24, minutes=30)


async def test_scaled_clock_sleep_divides_by_the_scale() -> None:
    wall = ManualMonotonic()
    clock = ScaledClock(3600, origin=START, monotonic=wall, sleep=wall.sleep)
    await clock.sleep(2 * 3600)
    assert wall.slept == [2.0]
    assert clock.now() == START + timedelta(hours=2)
    await clock.sleep(-1)
    assert wall.slept[-1] == 0.0


def test_scaled_clock_never_goes_backwards() -> None:
    wall = ManualMonotonic()
    clock = ScaledClock(10, origin=START, monotonic=wall)
    wall.value += 5
    later = clock.now()
    wall.value -= 3  # a misbehaving counter must not drag funnel time back
    assert clock.now() == later
    wall.value += 10
    assert clock.now() > later


def test_scaled_clock_origin_is_normalised_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    clock = ScaledClock(1, origin=datetime(2025, 3, 1, 12, 0, tzinfo=moscow), monotonic=lambda: 0)
    assert clock.now() == START + timedelta(hours=0)
    assert clock.now().utcoffset() == timedelta(0)


def test_scaled_clock_defaults_to_now() -> None:
    before = datetime.now(UTC)
    clock = ScaledClock(3600)
    assert before <= clock.origin <= datetime.now(UTC)
    assert clock.now() >= clock.origin


async def test_scaled_clock_runs_fast_in_real_time() -> None:
    clock = ScaledClock(3600)
    first = clock.now()
    started = time.monotonic()
    await clock.sleep(36)  # 36 funnel seconds = 10 ms at this scale
    assert time.monotonic() - started < 1.0
    assert clock.now() - first >= timedelta(seconds=30)


@pytest.mark.parametrize("scale", [0, -1, float("nan")])
def test_scaled_clock_rejects_a_non_positive_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="time scale"):
        ScaledClock(scale)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        ScaledClock(1, origin=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="no timezone"):
        FakeClock(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="no timezone"):
        FakeClock(START).set(datetime(2026, 1, 1))


def test_fake_clock_advances_only_when_told() -> None:
    clock = FakeClock(START)
    assert clock.now() == clock.now() == START
    assert clock.advance(timedelta(days=3)) == START + timedelta(days=3)
    assert clock.advance(90) == START + timedelta(days=3, seconds=90)
    assert clock.advance(0.5) == START + timedelta(days=3, seconds=90.5)
    target = START + timedelta(days=10)
    assert clock.set(target) == target
    assert clock.now() == target


def test_fake_clock_never_goes_backwards() -> None:
    clock = FakeClock(START)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="backwards"):
        clock.set(START - timedelta(seconds=1))
    assert clock.now() == START


async def test_fake_clock_sleep_advances_instantly() -> None:
    clock = FakeClock(START)
    started = time.monotonic()
    await clock.sleep(3 * 86_400)
    assert clock.now() == START + timedelta(days=3)
    await clock.sleep(-10)
    assert clock.now() == START + timedelta(days=3)
    assert time.monotonic() - started < 1.0


def test_fake_clock_converts_start_to_utc() -> None:
    clock = FakeClock(datetime(2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=3))))
    assert clock.now() == START
    assert clock.now().tzinfo == UTC
