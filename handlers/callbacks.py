"""Typed callback data, all prefixes in one place, and the signature every emitted value
carries. Ids in scripts are short ASCII (at most 24 characters, the script loader checks
it), so the longest value, `a:<question>:<option>` (51 bytes), stays within Telegram's 64
bytes with its signature (12 more)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from aiogram.filters.callback_data import CallbackData

from funnel.dialogue.replies import Btn

# Telegram refuses a button whose callback data is longer than this, in bytes.
TELEGRAM_MAX_BYTES = 64
# 8 bytes of HMAC-SHA256: a forger's odds are 2^-64 a try, and Telegram lets a client send
# a few callback queries a second, never millions.
TAG_BYTES = 8
# ":" and the tag in base64url without padding.
SIGNATURE_CHARS = 1 + len(base64.urlsafe_b64encode(bytes(TAG_BYTES)).rstrip(b"="))
MAX_PAYLOAD_BYTES = TELEGRAM_MAX_BYTES - SIGNATURE_CHARS
# A new version makes every button sent before it stale, e.g. after a leak of the key.
KEY_PURPOSE = b"leadbot callback v1"


@dataclass(frozen=True)
class Signer:
    """Signs a button's data for the chat it is sent to, and checks a press against the
    chat it came from: data the bot never sent there (forged, copied from another chat, or
    from before buttons were signed) does not verify. The key is derived from the bot's
    token, so every instance of one bot agrees and a new token retires every old button."""

    key: bytes

    @classmethod
    def from_token(cls, token: str) -> Signer:
        return cls(hmac.new(token.encode(), KEY_PURPOSE, hashlib.sha256).digest())

    def _tag(self, data: str, chat_id: int | str) -> str:
        # The chat id first and a separator it never contains: (12, "3:x") and (123, ":x")
        # sign different messages.
        message = f"{chat_id}\n{data}".encode()
        digest = hmac.new(self.key, message, hashlib.sha256).digest()[:TAG_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, data: str, chat_id: int | str) -> str:
        if len(data.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"callback data of {len(data.encode())} bytes leaves no room for its "
                f"signature (at most {MAX_PAYLOAD_BYTES})"
            )
        return f"{data}:{self._tag(data, chat_id)}"

    def verify(self, signed: str | None, chat_id: int | str) -> str | None:
        """The data the bot signed for this chat, or None."""
        if not signed:
            return None
        data, colon, tag = signed.rpartition(":")
        if not colon or len(tag) != SIGNATURE_CHARS - 1:
            return None
        if not hmac.compare_digest(tag, self._tag(data, chat_id)):
            return None
        return data


class StaleCb(CallbackData, prefix="stale"):
    """What a press whose signature does not verify becomes before any handler sees it:
    `of` keeps the family its data claimed (a, b, m, bc...), so each router answers it
    exactly as it answers a stale button of that family, and nothing else acts on it."""

    of: str


class AnswerCb(CallbackData, prefix="a"):
    """An answer button: which question it answers and with which option."""

    q: str
    o: str


class ButtonCb(CallbackData, prefix="b"):
    """A call-to-action button of the script (book, stop, NPS score...)."""

    id: str


class SystemCb(CallbackData, prefix="s"):
    """The dialogue's own operations: continue, restart, forget_yes, forget_no."""

    op: str


class CardCb(CallbackData, prefix="m"):
    """A button on a hot-lead card in the managers' chat: take, release, paid, unfit."""

    act: str
    lead: int


def pack(button: Btn) -> str:
    if button.kind == "answer":
        return AnswerCb(q=button.key, o=button.value).pack()
    if button.kind == "button":
        return ButtonCb(id=button.key).pack()
    return SystemCb(op=button.key).pack()


# -- broadcasts


class BroadcastCb(CallbackData, prefix="bc"):
    """A button of an admin's broadcast flow: which broadcast, at which revision of its draft
    (an older one is stale), and what it does (skip, nosplit, now, send, cancel)."""

    b: int
    r: int
    act: str


class BroadcastReplyCb(CallbackData, prefix="bq"):
    """A broadcast's quick reply button, as the lead taps it."""

    b: int


# The prefixes the bot issues: a press claiming another one is stale of no family.
FAMILIES = frozenset(
    cls.__prefix__ for cls in (AnswerCb, ButtonCb, SystemCb, CardCb, BroadcastCb, BroadcastReplyCb)
)
