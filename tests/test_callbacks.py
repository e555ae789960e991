"""Signed callback data: what the bot signs for a chat verifies only for that chat, and
the signed value fits Telegram's 64 bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.callbacks import (
    MAX_PAYLOAD_BYTES,
    SIGNATURE_CHARS,
    TELEGRAM_MAX_BYTES,
    Signer,
)

SIGNER = Signer.from_token("123:secret")
DATA = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=51
)
CHATS = st.integers(min_value=-(10**13), max_value=10**13)


@given(data=DATA, chat=CHATS)
def test_what_is_signed_for_a_chat_verifies_there_and_fits(data: str, chat: int) -> None:
    signed = SIGNER.sign(data, chat)
    assert len(signed.encode()) == len(data.encode()) + SIGNATURE_CHARS
    assert len(signed.encode()) <= TELEGRAM_MAX_BYTES
    assert SIGNER.verify(signed, chat) == data


@given(data=DATA, chat=CHATS, other=CHATS)
def test_it_verifies_nowhere_else(data: str, chat: int, other: int) -> None:
    signed = SIGNER.sign(data, chat)
    if other != chat:
        assert SIGNER.verify(signed, other) is None
    assert Signer.from_token("123:other").verify(signed, chat) is None


def test_unsigned_tampered_and_empty_data_do_not_verify() -> None:
    signed = SIGNER.sign("b:book", 42)
    tag = signed.rpartition(":")[2]
    for forged in ("b:book", "b:nps_10:" + tag, signed[:-1], signed + "A", "", None, ":" + tag):
        assert SIGNER.verify(forged, 42) is None


def test_data_without_room_for_its_signature_is_refused() -> None:
    SIGNER.sign("x" * MAX_PAYLOAD_BYTES, 1)
    with pytest.raises(ValueError, match="no room"):
        SIGNER.sign("x" * (MAX_PAYLOAD_BYTES + 1), 1)
