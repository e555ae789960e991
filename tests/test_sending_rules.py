"""The send window (DST-safe, in the school's time zone) and the frequency cap."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel.followups.sending_rules import cap_release, in_window, next_opening, send_allowed_at
from funnel.script.schema import FrequencyCap, SendWindow

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
ZONES = [MOSCOW, BERLIN, ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]
DAY = SendWindow(start=time(10), end=time(21))

moments = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
)
clock_times = st.times().map(lambda t: t.replace(second=0, microsecond=0))
windows = st.builds(SendWindow, start=clock_times, end=clock_times)


def test_inside_and_outside_the_window() -> None:
    assert in_window(datetime(2026, 3, 3, 7, 0, tzinfo=UTC), DAY, MOSCOW)  # 10:00
    assert not in_window(datetime(2026, 3, 3, 18, 0, tzinfo=UTC), DAY, MOSCOW)  # 21:00
    assert not in_window(datetime(2026, 3, 3, 6, 59, tzinfo=UTC), DAY, MOSCOW)


def test_overnight_window() -> None:
    night = SendWindow(start=time(22), end=time(6))
    assert in_window(datetime(2026, 3, 3, 20, 0, tzinfo=UTC), night, MOSCOW)  # 23:00
    assert in_window(datetime(2026, 3, 3, 2, 0, tzinfo=UTC), night, MOSCOW)  # 05:00
    assert not in_window(datetime(2026, 3, 3, 9, 0, tzinfo=UTC), night, MOSCOW)


def test_next_opening_is_tomorrow_morning() -> None:
    late = datetime(2026, 3, 3, 19, 30, tzinfo=UTC)  # 22:30 Moscow
    assert next_opening(late, DAY, MOSCOW) == datetime(2026, 3, 4, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # Berlin springs forward on 2026-03-29 at 02:00 → 03:00 (UTC+1 → UTC+2).
        (datetime(2026, 3, 28, 21, 0, tzinfo=UTC), datetime(2026, 3, 29, 8, 0, tzinfo=UTC)),
        # ... and falls back on 2026-10-25 at 03:00 → 02:00 (UTC+2 → UTC+1).
        (datetime(2026, 10, 24, 21, 0, tzinfo=UTC), datetime(2026, 10, 25, 9, 0, tzinfo=UTC)),
    ],
)
def test_dst_days_open_at_ten_local(moment: datetime, expected: datetime) -> None:
    opened = next_opening(moment, DAY, BERLIN)
    assert opened == expected
    assert opened.astimezone(BERLIN).time() == time(10)


def test_a_window_starting_in_the_spring_gap_opens_right_after_it() -> None:
    window = SendWindow(start=time(2, 30), end=time(6))
    opened = next_opening(datetime(2026, 3, 28, 23, 0, tzinfo=UTC), window, BERLIN)
    assert opened.astimezone(BERLIN).time() >= time(3)
    assert in_window(opened, window, BERLIN)


@given(moment=moments, window=windows, zone=st.sampled_from(ZONES))
def test_property_next_opening_is_the_first_open_moment(
    moment: datetime, window: SendWindow, zone: ZoneInfo
) -> None:
    opened = next_opening(moment, window, zone)
    assert opened >= moment
    assert in_window(opened, window, zone)
    # Nothing open in between (checked on a 5-minute grid).
    probe = moment + timedelta(minutes=5)
    while probe < opened - timedelta(minutes=5):
        assert not in_window(probe, window, zone)
        probe += timedelta(minutes=5)


def test_cap_counts_only_the_recent_sends() -> None:
    cap = FrequencyCap(messages=2, per=timedelta(days=1))
    now = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    assert cap_release([now - timedelta(days=2)] * 5, now, cap) is None
    assert cap_release([now - timedelta(hours=1)], now, cap) is None
    sends = [now - timedelta(hours=3), now - timedelta(hours=1)]
    assert cap_release(sends, now, cap) == now + timedelta(hours=21)


@given(
    offsets=st.lists(st.integers(min_value=0, max_value=3 * 24 * 60), max_size=12),
    messages=st.integers(min_value=1, max_value=4),
    per_hours=st.integers(min_value=1, max_value=48),
    start=moments,
    zone=st.sampled_from(ZONES),
    window=windows,
)
def test_property_scheduling_sends_one_by_one_keeps_window_and_cap(
    offsets: list[int],
    messages: int,
    per_hours: int,
    start: datetime,
    zone: ZoneInfo,
    window: SendWindow,
) -> None:
    """Touches becoming due at arbitrary times, each sent at `send_allowed_at`: every send is
    inside the window and no cap period ever holds more than `messages` sends."""
    cap = FrequencyCap(messages=messages, per=timedelta(hours=per_hours))
    sent: list[datetime] = []
    for due in sorted(start + timedelta(minutes=m) for m in offsets):
        moment = max([due, *sent])
        at = send_allowed_at(moment, sent, window, cap, zone)
        assert at >= moment
        assert in_window(at, window, zone)
        sent.append(at)
    for s in sent:
        inside = [x for x in sent if s - cap.per < x <= s]
        assert len(inside) <= messages
