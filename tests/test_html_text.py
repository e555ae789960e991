"""Names as managers and admins see them: no bidi overrides, zero-width or control
characters, one line, cut to a limit."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel.core.telegram_text import plain_name

INVISIBLE = (
    ["\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d",
     "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\ufeff", "\u00ad", "\x00", "\x07",
     "\x7f", "\ue000", "\udc00"]
)  # fmt: skip


@pytest.mark.parametrize("mark", INVISIBLE)
def test_invisible_characters_are_removed(mark: str) -> None:
    assert plain_name(f"Ан{mark}на{mark}") == "Анна"


def test_a_right_to_left_override_cannot_reverse_the_rest() -> None:
    assert plain_name("Иван\u202eвонавИ\u202c Петров") == "ИванвонавИ Петров"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("  Анна \n\t Смирнова  ", "Анна Смирнова"), ("Анна\u2028Смирнова", "Анна Смирнова"),
     ("Анна\u00a0\u3000Смирнова", "Анна Смирнова"), ("\u200b\u202e", ""), (None, ""),
     ("", ""), ("José Ñoño 李雷 😀", "José Ñoño 李雷 😀")],
)  # fmt: skip
def test_whitespace_is_one_space(text: str | None, expected: str) -> None:
    assert plain_name(text) == expected


def test_a_long_name_is_cut_with_an_ellipsis() -> None:
    assert plain_name("а" * 100, 10) == "а" * 9 + "…"
    assert plain_name("а" * 10, 10) == "а" * 10


@given(st.text(), st.integers(min_value=1, max_value=200))
def test_nothing_invisible_is_left_and_the_limit_holds(text: str, limit: int) -> None:
    name = plain_name(text, limit)
    assert len(name) <= limit
    assert all(unicodedata.category(ch) not in ("Cf", "Cc", "Co", "Cs") for ch in name)
    assert name == name.strip() and "  " not in name
    assert not any(ch.isspace() and ch != " " for ch in name)
