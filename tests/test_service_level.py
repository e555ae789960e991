"""Working hours and the service level's clock: time outside the school's hours does not
count, in its time zone, across weekends and daylight saving changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from funnel.handoff.service_level import add_working_time, parse_working_hours

MOSCOW = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = parse_working_hours("Mon-Fri 10:00-19:00")
QUARTER = timedelta(minutes=15)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (utc(2026, 3, 3, 9, 0), utc(2026, 3, 3, 9, 15)),  # Tue 12:00 → 12:15
        (utc(2026, 3, 3, 15, 50), utc(2026, 3, 4, 7, 5)),  # Tue 18:50 → Wed 10:05
        (utc(2026, 3, 3, 20, 0), utc(2026, 3, 4, 7, 15)),  # Tue 23:00 → Wed 10:15
        (utc(2026, 3, 3, 3, 0), utc(2026, 3, 3, 7, 15)),  # Tue 06:00 → Tue 10:15
        (utc(2026, 3, 6, 18, 0), utc(2026, 3, 9, 7, 15)),  # Fri 21:00 → Mon 10:15
        (utc(2026, 3, 7, 12, 0), utc(2026, 3, 9, 7, 15)),  # Saturday → Mon 10:15
        (utc(2026, 3, 6, 15, 55), utc(2026, 3, 9, 7, 10)),  # Fri 18:55 → Mon 10:10
    ],
)
def test_a_quarter_of_working_time(start: datetime, expected: datetime) -> None:
    assert add_working_time(start, QUARTER, WEEKDAYS, MOSCOW) == expected


def test_several_spans_a_day_and_a_weekend_day() -> None:
    hours = parse_working_hours("Mon-Fri 10:00-13:00; Mon-Fri 14:00-19:00, Sat 11:00-15:00")
    # Monday 12:50 Moscow: 10 min before lunch, 5 after.
    assert add_working_time(utc(2026, 3, 2, 9, 50), QUARTER, hours, MOSCOW) == utc(
        2026, 3, 2, 11, 5
    )
    # Saturday 14:50: 10 min, then Monday 10:05.
    assert add_working_time(utc(2026, 3, 7, 11, 50), QUARTER, hours, MOSCOW) == utc(
        2026, 3, 9, 7, 5
    )


def test_always_open_is_plain_time() -> None:
    always = parse_working_hours("24/7")
    start = utc(2026, 3, 7, 23, 55)
    assert add_working_time(start, QUARTER, always, MOSCOW) == start + QUARTER


def test_daylight_saving_day_in_berlin() -> None:
    # Sunday 29 March 2026 clocks go forward; Monday 10:00 is 08:00 UTC (was 09:00 UTC).
    friday_late = utc(2026, 3, 27, 18, 0)  # Fri 19:00 CET: closed
    assert add_working_time(friday_late, QUARTER, WEEKDAYS, BERLIN) == utc(2026, 3, 30, 8, 15)


@pytest.mark.parametrize(
    "text",
    ["", "Mon-Fri", "10:00-19:00", "Mon-Fri 10:00", "Mon-Fri 10:00-10:00", "Fri-Mon 9:00-8:00",
     "Mon-Fri 10:00-19:60", "Mon-Fri 24:30-25:00", "Mon-Fri 10:00-19:00," , "x" * 500,
     "Mon 10:00-12:00, Mon 11:00-13:00"],
)  # fmt: skip
def test_bad_hours_are_refused_with_the_example(text: str) -> None:
    with pytest.raises(ValueError, match="Mon-Fri 10:00-19:00"):
        parse_working_hours(text)


def test_a_week_wraps_around_sunday() -> None:
    hours = parse_working_hours("Fri-Mon 12:00-24:00")
    assert [bool(hours.on(d)) for d in range(7)] == [True, False, False, False, True, True, True]


@given(
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31)),
    minutes=st.integers(min_value=0, max_value=3000),
)
@example(start=datetime(2026, 1, 1, 11, 0, 0, 1), minutes=300)  # carried over to 10:00:00.000001
def test_the_deadline_is_open_time_and_never_early(start: datetime, minutes: int) -> None:
    begin = start.replace(tzinfo=UTC)
    due = add_working_time(begin, timedelta(minutes=minutes), WEEKDAYS, MOSCOW)
    assert due >= begin + timedelta(minutes=minutes)
    local = due.astimezone(MOSCOW)
    if minutes:
        # A deadline falls inside the hours, or right at closing time (compared to the
        # microsecond: a start a microsecond past the hour carries that microsecond over).
        assert local.weekday() < 5 and time(10, 0) < local.time() <= time(19, 0)
