"""Script durations: parsing, the canonical spelling, and the pydantic field type."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from funnel.script.durations import Duration, DurationOrZero, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("1w", timedelta(weeks=1)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("  2H 30M ", timedelta(hours=2, minutes=30)),
        ("1 d 12 h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("30m1h", timedelta(hours=1, minutes=30)),
        ("007s", timedelta(seconds=7)),
    ],
)
def test_parse_examples(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["3x", "", "   ", "3", "d", "1.5h", "15min", "3д", "1d 2", "h2", "1d,2h", "1e3s"]
)
def test_parse_errors_name_the_bad_text(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "45s, 15m, 2h or 3d" in message


def test_the_documented_error_message() -> None:
    with pytest.raises(ValueError) as raised:
        parse_duration("3x")
    assert str(raised.value) == "'3x' is not a duration; write it like 45s, 15m, 2h or 3d"


def test_zero_needs_the_flag() -> None:
    with pytest.raises(ValueError, match="'0s' is zero"):
        parse_duration("0s")
    with pytest.raises(ValueError, match="is zero"):
        parse_duration("0d0h")
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    assert parse_duration("0m", allow_zero=True) == timedelta(0)


@pytest.mark.parametrize("text", ["-3d", " -1h", "-0s"])
def test_negative_is_always_refused(text: str) -> None:
    with pytest.raises(ValueError, match="negative"):
        parse_duration(text, allow_zero=True)


def test_a_unit_may_appear_once() -> None:
    with pytest.raises(ValueError, match="'1d1d' names 'd' twice"):
        parse_duration("1d1d")


def test_absurd_lengths_are_a_readable_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("999999999999999w")
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("9" * 5000 + "s")


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=15), "15m"),
        (timedelta(hours=2), "2h"),
        (timedelta(days=3), "3d"),
        (timedelta(weeks=1), "7d"),
        (timedelta(days=1, hours=12), "1d12h"),
        (timedelta(days=10, minutes=1, seconds=1), "10d1m1s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(0), "0s"),
        (timedelta(seconds=1, milliseconds=600), "2s"),
        (timedelta(seconds=1, milliseconds=400), "1s"),
    ],
)
def test_format_examples(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


def test_format_refuses_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


whole_seconds = st.integers(min_value=0, max_value=100 * 365 * 86_400).map(
    lambda seconds: timedelta(seconds=seconds)
)


@given(whole_seconds)
def test_format_then_parse_round_trips(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration), allow_zero=True) == duration


@given(
    st.dictionaries(
        st.sampled_from("wdhms"), st.integers(min_value=0, max_value=10_000), min_size=1
    ),
    st.sampled_from(["", " ", "  "]),
    st.booleans(),
)
def test_any_spelling_parses_to_its_sum(parts: dict[str, int], gap: str, upper: bool) -> None:
    seconds_per = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
    text = gap.join(
        f"{amount}{gap}{unit.upper() if upper else unit}" for unit, amount in parts.items()
    )
    expected = timedelta(seconds=sum(seconds_per[unit] * n for unit, n in parts.items()))
    parsed = parse_duration(f"{gap}{text}{gap}", allow_zero=True)
    assert parsed == expected
    # The canonical spelling is a fixed point.
    assert format_duration(parse_duration(format_duration(parsed), allow_zero=True)) == (
        format_duration(parsed)
    )


@given(st.text(max_size=20))
def test_parse_only_ever_raises_value_error(text: str) -> None:
    try:
        result = parse_duration(text, allow_zero=True)
    except ValueError as error:
        assert repr(text) in str(error)
    else:
        assert result >= timedelta(0)


class Touch(BaseModel):
    delay: Duration
    quiet: DurationOrZero = timedelta(0)


def test_pydantic_field_accepts_script_spellings_and_seconds() -> None:
    assert Touch(delay="3d").delay == timedelta(days=3)
    assert Touch(delay=" 1D12h ").delay == timedelta(days=1, hours=12)
    assert Touch(delay=90).delay == timedelta(seconds=90)
    assert Touch(delay=timedelta(hours=1)).delay == timedelta(hours=1)
    assert Touch(delay="2h", quiet="0s").quiet == timedelta(0)
    assert Touch(delay="2h", quiet=0).quiet == timedelta(0)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("3x", "'3x' is not a duration"),
        ("0s", "'0s' is zero"),
        (0, "0 is zero"),
        (-5, "-5 is negative"),
        ("-2h", "'-2h' is negative"),
        (True, "True is not a duration"),
        (1.5, "1.5 is not a duration"),
        (None, "None is not a duration"),
        ("P3D", "'P3D' is not a duration"),
    ],
)
def test_pydantic_field_reports_the_bad_value(value: object, fragment: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Touch.model_validate({"delay": value})
    assert fragment in str(raised.value)
    assert raised.value.errors()[0]["loc"] == ("delay",)


def test_pydantic_json_uses_the_script_spelling() -> None:
    touch = Touch(delay="1d12h")
    dumped = touch.model_dump_json()
    assert json.loads(dumped) == {"delay": "1d12h", "quiet": "0s"}
    assert Touch.model_validate_json(dumped) == touch
    # Python-mode dumps keep the timedelta for code that computes with it.
    assert touch.model_dump()["delay"] == timedelta(days=1, hours=12)
