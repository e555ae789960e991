"""Report periods parsed from what an owner types, relative to a given now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel.reports.periods import Period, parse_period

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", [None, "", "all", "ALL", " all "])
def test_all(text: str | None) -> None:
    period = parse_period(text, NOW)
    assert period.is_all and period.label == "all"
    assert period.contains(datetime(2000, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("text", "days"), [("7d", 7), ("30d", 30), ("7", 7), ("90 days", 90)])
def test_last_days(text: str, days: int) -> None:
    period = parse_period(text, NOW)
    assert period.label == f"{days}d"
    assert period.start == NOW - timedelta(days=days)
    assert period.contains(NOW) and period.contains(NOW - timedelta(days=days))
    assert not period.contains(NOW - timedelta(days=days, seconds=1))


def test_explicit_dates_include_the_last_day() -> None:
    period = parse_period("2026-01-01..2026-01-31", NOW)
    assert period.label == "2026-01-01..2026-01-31"
    assert period.start == datetime(2026, 1, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 2, 1, tzinfo=UTC)
    assert period.contains(datetime(2026, 1, 31, 23, 59, tzinfo=UTC))
    assert not period.contains(datetime(2026, 2, 1, tzinfo=UTC))


def test_single_day_in_the_school_zone() -> None:
    period = parse_period("2026-01-05", NOW, tz=ZoneInfo("Europe/Moscow"))
    assert period.start == datetime(2026, 1, 4, 21, 0, tzinfo=UTC)
    assert period.end == datetime(2026, 1, 5, 21, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["yesterday", "0d", "99999d", "2026-02-30", "2026-02-01..2026-01-01", "7x", "-7d"]
)
def test_errors_are_readable(text: str) -> None:
    with pytest.raises(ValueError, match="period"):
        parse_period(text, NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_period("7d", datetime(2026, 1, 1))


@given(st.integers(1, 3650))
def test_days_round_trip(days: int) -> None:
    period = parse_period(f"{days}d", NOW)
    assert period == parse_period(period.label, NOW)
    assert isinstance(period, Period) and period.to_json()["label"] == f"{days}d"
