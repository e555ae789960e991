"""What admins and managers type: ids, amounts and argument lengths are parsed from ASCII
digits only, within the database's ranges, and every refusal is an InputError (a ValueError)
whose code has its words (checked here in Russian; tests/test_errors.py holds both languages)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from funnel.core.errors import InputError
from funnel.core.inputs import (
    MAX_AMOUNT,
    MAX_ARG,
    MAX_ARGS,
    MAX_LEAD_ID,
    MAX_TELEGRAM_ID,
    parse_amount,
    parse_id,
    parse_lead_id,
    parse_telegram_id,
    parse_username,
    split_args,
)
from funnel.handoff import purchases
from handlers.errors import KEYS, explain

ASCII_DIGITS = "0123456789"


@contextmanager
def says_ru(reason: str) -> Iterator[None]:
    """The block is refused with an InputError whose Russian words contain `reason`."""
    with pytest.raises(InputError) as raised:
        yield
    assert reason in explain(raised.value, "ru")


# Whitespace around the value is stripped, so it is no odd character in the middle.
NOT_ASCII_DIGIT = st.characters(blacklist_characters=ASCII_DIGITS + "#").filter(
    lambda ch: not ch.isspace()
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12", 12), ("#12", 12), (" #7 ", 7), ("007", 7), ("2147483647", MAX_LEAD_ID),
     ("0" * 300 + "1", 1)],
)  # fmt: skip
def test_a_lead_number(text: str, expected: int) -> None:
    assert parse_lead_id(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [("²", "цифры 0–9"), ("٣", "цифры 0–9"), ("１２", "цифры 0–9"), ("-5", "цифры 0–9"),
     ("+5", "цифры 0–9"), ("1 2", "цифры 0–9"), ("#", "цифры 0–9"), ("", "цифры 0–9"),
     ("##1", "цифры 0–9"), ("12#", "цифры 0–9"), ("0", "больше 0"), ("#000", "больше 0"),
     ("2147483648", "слишком большой"), ("99999999999999999999", "слишком большой"),
     ("9" * 5000, "слишком большой")],
)  # fmt: skip
def test_a_bad_lead_number_says_why(text: str, reason: str) -> None:
    with says_ru(reason):
        parse_lead_id(text)


def test_telegram_ids_reach_the_bigint_limit() -> None:
    assert parse_telegram_id(str(MAX_TELEGRAM_ID)) == MAX_TELEGRAM_ID
    assert parse_telegram_id("2147483648") == 2147483648
    with says_ru("слишком большой"):
        parse_telegram_id(str(MAX_TELEGRAM_ID + 1))


@given(st.text())
@example("²")
@example("9" * 5000)
@example("0" * 5000)
def test_any_text_is_a_number_in_range_or_a_value_error(text: str) -> None:
    try:
        value = parse_lead_id(text)
    except ValueError as e:
        # A reason to show, nothing else raised.
        assert isinstance(e, InputError) and e.code in KEYS
        return
    digits = text.strip().removeprefix("#")
    assert digits and set(digits) <= set(ASCII_DIGITS)
    assert 1 <= value <= MAX_LEAD_ID


@given(st.integers(min_value=1, max_value=MAX_LEAD_ID), st.booleans())
def test_every_lead_number_reads_back(number: int, hashed: bool) -> None:
    assert parse_lead_id(f"#{number}" if hashed else str(number)) == number


@given(st.integers(min_value=MAX_LEAD_ID + 1))
def test_beyond_the_integer_column_is_refused(number: int) -> None:
    with says_ru("слишком большой"):
        parse_lead_id(str(number))


@given(st.text(ASCII_DIGITS, max_size=12), NOT_ASCII_DIGIT, st.text(ASCII_DIGITS, max_size=12))
def test_one_character_that_is_not_an_ascii_digit_is_refused(
    head: str, odd: str, tail: str
) -> None:
    with pytest.raises(ValueError):
        parse_id(head + odd + tail)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6900", "6900.00"), ("6 900", "6900.00"), ("6\u00a0900,50", "6900.50"),
     ("6900.5", "6900.50"), ("0.005", "0.01"), ("1.005", "1.01"), ("2.675", "2.68"),
     ("0.0149", "0.01"), ("999999999.994", "999999999.99"), ("00012", "12.00")],
)  # fmt: skip
def test_an_amount_is_rounded_half_up_to_kopecks(text: str, expected: str) -> None:
    amount = parse_amount(text)
    assert amount == Decimal(expected) and str(amount) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [("0.001", "больше 0"), ("0,004", "больше 0"), ("0", "больше 0"), ("-5", "больше 0"),
     ("−5", "больше 0"), ("-0.001", "больше 0"), ("-" + "9" * 150, "больше 0"),
     ("999999999.995", "меньше 1 000 000 000"), ("1000000000", "меньше 1 000 000 000"),
     ("9" * 150, "меньше 1 000 000 000"), ("²", "не сумма"), ("１００", "не сумма"),
     ("٣", "не сумма"), ("1e3", "не сумма"), ("NaN", "не сумма"), ("Infinity", "не сумма"),
     ("6,900.50", "не сумма"), ("", "не сумма"), (".5", "не сумма"), ("5 руб", "не сумма"),
     ("1" * (MAX_ARG + 1), "слишком длинная")],
)  # fmt: skip
def test_a_bad_amount_says_why(text: str, reason: str) -> None:
    with says_ru(reason):
        parse_amount(text)


@given(st.text())
@example("0." + "0" * 150 + "1")
@example("9" * 200)
def test_any_text_is_an_amount_in_range_or_a_value_error(text: str) -> None:
    try:
        amount = parse_amount(text)
    except ValueError as e:
        assert isinstance(e, InputError) and e.code in KEYS
        return
    assert 0 < amount < MAX_AMOUNT
    assert amount == amount.quantize(Decimal("0.01"))
    assert set(text.strip()) <= set(ASCII_DIGITS + ".,- \u00a0\u2009\u202f\u2212")


@given(st.decimals(min_value=Decimal("-10"), max_value=Decimal("10"), places=3))
def test_an_amount_is_checked_after_rounding(value: Decimal) -> None:
    rounded = abs(value).quantize(Decimal("0.01"), rounding="ROUND_HALF_UP")
    text = f"{abs(value)}"
    if value < 0 or rounded == 0:
        with says_ru("больше 0"):
            parse_amount(f"-{text}" if value < 0 else text)
    else:
        assert parse_amount(text) == rounded


def test_the_purchases_module_still_offers_the_parser() -> None:
    assert purchases.parse_amount is parse_amount
    assert purchases.parse_currency("usd") == "USD"
    with says_ru("не код валюты"):
        purchases.parse_currency("RUB\n")


def test_arguments_are_bounded() -> None:
    assert split_args(None) == []
    assert split_args("  7d   vk_ads ") == ["7d", "vk_ads"]
    assert split_args("x" * MAX_ARG) == ["x" * MAX_ARG]
    with says_ru("Слишком длинно"):
        split_args("all " + "x" * (MAX_ARG + 1))
    words = " ".join(["x" * 99] * 4)  # 399 characters
    assert split_args(words) == ["x" * 99] * 4
    assert len(split_args(words.ljust(MAX_ARGS))) == 4
    with says_ru("Слишком длинно"):
        split_args(words.ljust(MAX_ARGS + 1))


def test_a_username() -> None:
    assert parse_username("@Anna_K") == "Anna_K"
    with says_ru("username"):
        parse_username("@")
    with says_ru("не длиннее 64"):
        parse_username("@" + "a" * 65)
