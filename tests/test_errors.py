"""The domain's refusals are codes with fields, said in the reader's language at the edge:
every code the domain raises has its words in Russian and in English, with its values."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from funnel.core import inputs
from funnel.core.errors import InputError
from funnel.handoff.purchases import parse_currency
from funnel.reports.periods import parse_period
from handlers.errors import KEYS, explain
from handlers.i18n import t

CYRILLIC = re.compile("[\u0400-\u04ff]")
NOW = datetime(2026, 3, 1, tzinfo=UTC)

# One input for every refusal the domain makes, and the code it is refused with.
REFUSALS: list[tuple[str, Callable[[], Any]]] = [
    ("arguments.too_long", lambda: inputs.split_args("x " * 300)),
    ("argument.too_long", lambda: inputs.split_args("x" * 201)),
    ("source.too_long", lambda: inputs.check_length("s" * 65, 64, "source")),
    ("username.too_long", lambda: inputs.parse_username("@" + "a" * 65)),
    ("username.empty", lambda: inputs.parse_username("@")),
    ("id.not_digits", lambda: inputs.parse_id("x")),
    ("id.too_large", lambda: inputs.parse_id("9" * 30)),
    ("id.not_positive", lambda: inputs.parse_id("0")),
    ("lead_id.not_digits", lambda: inputs.parse_lead_id("abc")),
    ("lead_id.too_large", lambda: inputs.parse_lead_id("2147483648")),
    ("lead_id.not_positive", lambda: inputs.parse_lead_id("#0")),
    ("telegram_id.not_digits", lambda: inputs.parse_telegram_id("²")),
    ("telegram_id.too_large", lambda: inputs.parse_telegram_id("9" * 30)),
    ("telegram_id.not_positive", lambda: inputs.parse_telegram_id("000")),
    ("amount.too_long", lambda: inputs.parse_amount("1" * 201)),
    ("amount.not_a_number", lambda: inputs.parse_amount("5 rub")),
    ("amount.not_positive", lambda: inputs.parse_amount("-5")),
    ("amount.too_large", lambda: inputs.parse_amount("1000000000")),
    ("currency.not_a_code", lambda: parse_currency("rubles")),
    ("period.days_out_of_range", lambda: parse_period("0d", NOW)),
    ("period.reversed", lambda: parse_period("2026-02-01..2026-01-01", NOW)),
    ("period.not_understood", lambda: parse_period("yesterday", NOW)),
]


@pytest.mark.parametrize(("code", "refuse"), REFUSALS, ids=[code for code, _ in REFUSALS])
def test_each_refusal_has_its_code_and_words_in_both_languages(
    code: str, refuse: Callable[[], Any]
) -> None:
    with pytest.raises(InputError) as raised:
        refuse()
    error = raised.value
    assert isinstance(error, ValueError) and error.code == code
    russian, english = explain(error, "ru"), explain(error, "en")
    assert russian != t("error.unknown", lang="ru") and CYRILLIC.search(russian)
    assert english != t("error.unknown", lang="en") and not CYRILLIC.search(english), english
    for value in error.fields.values():
        assert str(value) in english and str(value) in russian


def test_every_code_with_words_is_raised_somewhere() -> None:
    raised = {code for code, _ in REFUSALS} | {"period.out_of_range"}  # the handler's own
    assert set(KEYS) == raised


def test_the_handlers_own_code_has_words() -> None:
    error = InputError("period.out_of_range")
    assert CYRILLIC.search(explain(error, "ru"))
    assert not CYRILLIC.search(explain(error, "en"))


def test_an_unknown_refusal_is_said_generically_never_as_a_code() -> None:
    assert explain(InputError("no.such.code", limit=1), "en") == "Not understood."
    assert explain(ValueError("raw text"), "ru") == t("error.unknown", lang="ru")
