"""What the bot says, as plain data: a text (Telegram HTML) and rows of buttons.

`funnel/` decides replies; `handlers/` turns them into Telegram keyboards and sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ButtonKind = Literal["answer", "button", "system"]


@dataclass(frozen=True)
class Btn:
    """A button. answer: (question id, option id); button: a script button id;
    system: one of the dialogue's own operations (continue, restart, forget...)."""

    label: str
    kind: ButtonKind
    key: str
    value: str = ""


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: tuple[tuple[Btn, ...], ...] = ()


def rows(buttons: list[Btn], columns: int = 1) -> tuple[tuple[Btn, ...], ...]:
    return tuple(tuple(buttons[i : i + columns]) for i in range(0, len(buttons), columns))
