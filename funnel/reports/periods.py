"""Report periods: which leads a report covers, by the day they were created.

Parsed from what an owner types ("7d", "30d", "all", "2026-01-01..2026-01-31") relative to a
`now` that the caller passes in, so reports are reproducible and testable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from funnel.core.clock import as_utc
from funnel.core.errors import InputError
from funnel.core.inputs import quote
from funnel.core.records import JsonRecord

__all__ = ["Period", "parse_period"]

MAX_DAYS = 3650
_DAYS = re.compile(r"^(\d{1,4})\s*(d|д|days?|дн(?:ей|я)?)?$")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\s*(?:\.\.|—|–)\s*(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Period(JsonRecord):
    """Leads created in [start, end); an open side means "no limit"."""

    label: str
    start: datetime | None = None
    end: datetime | None = None

    @property
    def is_all(self) -> bool:
        return self.start is None and self.end is None

    def contains(self, moment: datetime) -> bool:
        moment = as_utc(moment)
        if self.start is not None and moment < self.start:
            return False
        return self.end is None or moment < self.end


def parse_period(text: str | None, now: datetime, *, tz: tzinfo = UTC) -> Period:
    """The period an owner asked for; dates are whole days in `tz` (the school's zone).

    Raises InputError (a ValueError) with a code ("period.days_out_of_range",
    "period.reversed", "period.not_understood") and the text as typed.
    """
    now = as_utc(now)
    raw = (text or "").strip().lower()
    if raw in ("", "all", "всё", "все", "*"):
        return Period("all")
    days = _DAYS.match(raw)
    if days:
        count = int(days.group(1))
        if not 1 <= count <= MAX_DAYS:
            raise InputError(
                "period.days_out_of_range", value=quote(text or "", 40), limit=MAX_DAYS
            )
        # The end is "just after now" so a lead created this very second is included.
        return Period(f"{count}d", now - timedelta(days=count), now + timedelta(microseconds=1))
    span = _RANGE.match(raw)
    first_text, last_text = span.groups() if span else (raw, raw)
    first, last = _date(first_text, text), _date(last_text, text)
    if last < first:
        raise InputError("period.reversed", value=quote(text or "", 40))
    label = first.isoformat() if first == last else f"{first.isoformat()}..{last.isoformat()}"
    return Period(label, _midnight(first, tz), _midnight(last + timedelta(days=1), tz))


def _date(value: str, original: str | None) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InputError("period.not_understood", value=quote(original or "", 40)) from None


def _midnight(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
