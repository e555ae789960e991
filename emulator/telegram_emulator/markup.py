"""Validation of `reply_markup` (inline and reply keyboards) with Telegram's error wording."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, bad_request
from .state import Button

MAX_CALLBACK_DATA_BYTES = 64
MAX_INLINE_BUTTONS = 100
# Exactly one of these must accompany `text` in an InlineKeyboardButton.
_INLINE_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_URL_SCHEMES = ("http://", "https://", "tg://")


@dataclass
class ParsedMarkup:
    """A validated reply_markup: what goes into Message.reply_markup and what the user sees."""

    inline: dict[str, Any] | None = None  # only inline keyboards appear in a Message
    buttons: list[list[Button]] = field(default_factory=list)
    reply_keyboard: list[list[str]] | None = None
    remove_keyboard: bool = False


def _button_error(reason: str) -> ApiError:
    return bad_request(f"can't parse inline keyboard button: {reason}")


def _inline_button(raw: Any) -> Button:
    if not isinstance(raw, dict):
        raise _button_error("InlineKeyboardButton must be an Object")
    text = raw.get("text")
    if not isinstance(text, str):
        raise _button_error('Field "text" must be of type String')
    actions = [name for name in _INLINE_ACTIONS if name in raw]
    if not actions:
        raise _button_error("Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        raise _button_error(
            f"exactly one of the optional fields must be used, got {', '.join(actions)}"
        )
    if "callback_data" in raw:
        data = raw["callback_data"]
        if not isinstance(data, str) or not 1 <= len(data.encode("utf-8")) <= 64:
            raise bad_request("BUTTON_DATA_INVALID")
        return Button(text, callback_data=data)
    if "url" in raw:
        url = raw["url"]
        if not isinstance(url, str) or not url.lower().startswith(_URL_SCHEMES):
            raise bad_request("BUTTON_URL_INVALID")
        return Button(text, url=url)
    return Button(text)


def _rows(raw: Any, name: str) -> list[list[Any]]:
    if not isinstance(raw, list) or not all(isinstance(row, list) for row in raw):
        raise bad_request(f'field "{name}" must be an Array of Arrays')
    return raw


def _reply_button_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("text"), str):
        return str(raw["text"])
    raise bad_request('can\'t parse keyboard button: Field "text" must be of type String')


def parse_reply_markup(value: Any, *, inline_only: bool = False) -> ParsedMarkup:
    """Validate a reply_markup parameter (a JSON string on the wire or an already decoded
    object); raise ApiError(400) as Telegram would."""
    if value is None or value == "":
        return ParsedMarkup()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise bad_request("can't parse reply keyboard markup JSON object") from None
    if not isinstance(value, dict):
        raise bad_request("can't parse reply keyboard markup JSON object")
    if "inline_keyboard" in value:
        rows = _rows(value["inline_keyboard"], "inline_keyboard")
        buttons = [[_inline_button(raw) for raw in row] for row in rows]
        if sum(len(row) for row in buttons) > MAX_INLINE_BUTTONS:
            raise bad_request("reply markup is too long")
        return ParsedMarkup(inline={"inline_keyboard": rows}, buttons=buttons)
    if inline_only:
        raise bad_request("inline keyboard expected")
    if "keyboard" in value:
        rows = _rows(value["keyboard"], "keyboard")
        return ParsedMarkup(reply_keyboard=[[_reply_button_text(b) for b in row] for row in rows])
    if value.get("remove_keyboard") is True:
        return ParsedMarkup(remove_keyboard=True)
    if value.get("force_reply") is True:
        return ParsedMarkup()
    raise bad_request(
        'can\'t find field "inline_keyboard", "keyboard", "remove_keyboard" '
        'or "force_reply" in reply markup'
    )
