"""Typed callback data, all prefixes in one place. Ids in scripts are short ASCII, so a
packed value stays far below Telegram's 64 bytes (the script loader checks it)."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData

from funnel.dialogue.replies import Btn


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
