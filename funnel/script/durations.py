"""Durations as marketers write them in scripts (`45s`, `15m`, `2h`, `3d`, `1w`, `1d12h`).

Parsing with readable errors, the canonical compact spelling, and a pydantic field type.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import partial
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

__all__ = [
    "Duration",
    "DurationOrZero",
    "format_duration",
    "parse_duration",
]

_UNIT_SECONDS: dict[str, int] = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
# Weeks parse but are never written back: "10d" reads better to a marketer than "1w3d".
_FORMAT_UNITS: tuple[str, ...] = ("d", "h", "m", "s")

# Bounded digit count: Python refuses to parse absurdly long ints with an unreadable error.
_PART = re.compile(r"\s*([0-9]{1,15})\s*([a-z])\s*")
_EXAMPLES = "write it like 45s, 15m, 2h or 3d"


def parse_duration(text: str, *, allow_zero: bool = False) -> timedelta:
    """Parse `3d`, `1d12h`, `2H 30m` and the like into a timedelta.

    Raises ValueError naming the bad text. Zero is refused unless `allow_zero`; negative
    durations are always refused.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a duration; {_EXAMPLES}")
    spelled = text.strip().lower()
    if spelled.startswith("-"):
        raise ValueError(f"{text!r} is negative; a duration must be positive ({_EXAMPLES})")
    total = 0
    seen: set[str] = set()
    position = 0
    while position < len(spelled):
        part = _PART.match(spelled, position)
        if part is None or part.group(2) not in _UNIT_SECONDS:
            raise ValueError(f"{text!r} is not a duration; {_EXAMPLES}")
        amount, unit = int(part.group(1)), part.group(2)
        if unit in seen:
            raise ValueError(f"{text!r} names {unit!r} twice; {_EXAMPLES}")
        seen.add(unit)
        total += amount * _UNIT_SECONDS[unit]
        position = part.end()
    if not seen:
        raise ValueError(f"{text!r} is not a duration; {_EXAMPLES}")
    if total == 0 and not allow_zero:
        raise ValueError(f"{text!r} is zero; a duration must be positive ({_EXAMPLES})")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"{text!r} is too long to be a duration") from None


def format_duration(duration: timedelta) -> str:
    """The canonical compact spelling: largest unit first, days at most (`1d12h`, `45s`, `0s`).

    Sub-second parts are rounded to the nearest second, so `parse_duration` reads back
    exactly what was formatted for any whole number of seconds.
    """
    if duration < timedelta(0):
        raise ValueError(f"{duration} is negative; durations are positive")
    half_up = 1 if duration.microseconds >= 500_000 else 0
    remaining = duration.days * 86_400 + duration.seconds + half_up
    if remaining == 0:
        return "0s"
    parts: list[str] = []
    for unit in _FORMAT_UNITS:
        amount, remaining = divmod(remaining, _UNIT_SECONDS[unit])
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def _coerce_duration(value: object, *, allow_zero: bool) -> object:
    """Turn script spellings into a timedelta before pydantic checks the type."""
    if isinstance(value, str):
        return parse_duration(value, allow_zero=allow_zero)
    if isinstance(value, bool):
        # bool is an int subclass; `delay: yes` in YAML is a typo, not one second.
        raise ValueError(f"{value!r} is not a duration; {_EXAMPLES}")
    if isinstance(value, int):
        try:
            seconds = timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"{value!r} seconds is too long to be a duration") from None
        return _checked(seconds, repr(value), allow_zero=allow_zero)
    if isinstance(value, timedelta):
        return _checked(value, str(value), allow_zero=allow_zero)
    raise ValueError(f"{value!r} is not a duration; {_EXAMPLES}")


def _checked(duration: timedelta, shown: str, *, allow_zero: bool) -> timedelta:
    if duration < timedelta(0):
        raise ValueError(f"{shown} is negative; a duration must be positive ({_EXAMPLES})")
    if duration == timedelta(0) and not allow_zero:
        raise ValueError(f"{shown} is zero; a duration must be positive ({_EXAMPLES})")
    return duration


# In JSON a Duration is written back the way a marketer would write it, not as ISO 8601.
_AS_SCRIPT_TEXT = PlainSerializer(format_duration, return_type=str, when_used="json")

Duration = Annotated[
    timedelta,
    BeforeValidator(partial(_coerce_duration, allow_zero=False)),
    _AS_SCRIPT_TEXT,
]
"""A positive duration field: accepts `"3d"`-style text, int seconds or a timedelta."""

DurationOrZero = Annotated[
    timedelta,
    BeforeValidator(partial(_coerce_duration, allow_zero=True)),
    _AS_SCRIPT_TEXT,
]
"""Like Duration, but `0s` / `0` is allowed (e.g. "send the first touch right away")."""
