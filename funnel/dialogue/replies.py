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
    # An offer of the script sent as a Telegram invoice right after the text.
    offer: str | None = None


def rows(buttons: list[Btn], columns: int | None = None) -> tuple[tuple[Btn, ...], ...]:
    """Buttons laid out in rows; by default one a row, or six a row when every label is
    as short as a score (an NPS scale of 0–10 fits a phone in two rows)."""
    if columns is None:
        columns = 6 if buttons and all(len(b.label) <= 3 for b in buttons) else 1
    return tuple(tuple(buttons[i : i + columns]) for i in range(0, len(buttons), columns))
