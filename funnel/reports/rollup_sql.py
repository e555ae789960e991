"""What the rollups and the report share: SQL for whole seconds between two times, the
histogram bucket of a number of seconds and the UTC day of a time, per dialect; and how a
report period splits into the whole days the daily rollups answer and the rest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from funnel.reports.periods import Period

__all__ = ["DaySpan", "bucket_sql", "day_sql", "seconds_sql"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def seconds_sql(dialect: str, earlier: str, later: str) -> str:
    """Whole seconds between two timestamp expressions, as an integer."""
    if dialect.startswith("postgres"):
        return f"CAST(round(EXTRACT(EPOCH FROM ({later} - {earlier}))) AS BIGINT)"
    return f"CAST(round((julianday({later}) - julianday({earlier})) * 86400.0) AS INTEGER)"


def bucket_sql(seconds: str) -> str:
    """The histogram bucket of a number of seconds: exact under an hour, to the minute under
    two days, to ten minutes beyond; a few thousand buckets at most, whatever the leads."""
    return (
        f"CASE WHEN {seconds} < 3600 THEN {seconds} WHEN {seconds} < 172800 "
        f"THEN {seconds} - {seconds} % 60 ELSE {seconds} - {seconds} % 600 END"
    )


def day_sql(dialect: str, moment: str) -> str:
    """The UTC day of a timestamp expression, as days since 1970-01-01 (an integer).

    On SQLite the stored text starts with the date ("2026-03-01 09:00:00.000000"): the day
    comes from those ten characters, never from julianday() of the whole value, which keeps
    milliseconds only and would round 23:59:59.9999 into the next day."""
    if dialect.startswith("postgres"):
        return f"(CAST(({moment}) AT TIME ZONE 'UTC' AS DATE) - DATE '1970-01-01')"
    return f"CAST(julianday(substr({moment}, 1, 10)) - 2440587.5 AS INTEGER)"


def day_of(moment: datetime) -> int:
    """The UTC day of a time, as day_sql computes it."""
    return (moment.astimezone(UTC) - EPOCH) // DAY


def day_start(day: int) -> datetime:
    return EPOCH + day * DAY


@dataclass(frozen=True)
class DaySpan:
    """A report period as the daily rollups see it: the whole UTC days [first, end) they
    answer (None: no limit on that side) and the rest of the period, at most a part of a
    day at either end, which the report reads from the log.

    Days are UTC, not the school's, on purpose: the rollups stay right when TIMEZONE
    changes, and a period that starts at a local midnight (or at "now − 30 days") simply
    leaves a few hours at its ends to the log."""

    first: int | None
    end: int | None
    rest: tuple[Period, ...]

    @classmethod
    def of(cls, period: Period) -> DaySpan:
        start, stop = period.start, period.end
        first = None if start is None else -((EPOCH - start) // DAY)  # rounded up
        end = None if stop is None else day_of(stop)  # rounded down
        if first is not None and end is not None and first >= end:
            return cls(0, 0, (period,))  # not one whole day: all from the log
        rest = []
        if start is not None and first is not None and start < day_start(first):
            rest.append(Period(period.label, start, day_start(first)))
        if stop is not None and end is not None and day_start(end) < stop:
            rest.append(Period(period.label, day_start(end), stop))
        return cls(first, end, tuple(rest))

    @property
    def all_time(self) -> bool:
        return self.first is None and self.end is None

    @property
    def no_days(self) -> bool:
        return self.first is not None and self.end is not None and self.first >= self.end

    def where(self) -> tuple[str, dict[str, Any]]:
        """SQL conditions on a rollup's `day` column (each starts with AND) and their
        parameters."""
        conditions, params = "", {}
        if self.first is not None:
            conditions += " AND day >= :first_day"
            params["first_day"] = self.first
        if self.end is not None:
            conditions += " AND day < :end_day"
            params["end_day"] = self.end
        return conditions, params
