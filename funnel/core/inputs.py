"""What admins and managers type, parsed in one place: lead and Telegram ids, amounts, and
how long a command's arguments may be. Each refusal is an InputError (a ValueError) with a
code and fields, which the presentation words in the reader's language; nothing else is
ever raised."""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from funnel.core.errors import InputError
from funnel.core.telegram_text import plain_name

__all__ = [
    "MAX_AMOUNT",
    "MAX_ARG",
    "MAX_ARGS",
    "MAX_LEAD_ID",
    "MAX_TELEGRAM_ID",
    "MAX_USERNAME",
    "InputError",
    "check_length",
    "parse_amount",
    "parse_id",
    "parse_lead_id",
    "parse_telegram_id",
    "parse_username",
    "quote",
    "split_args",
]

# Lead ids are Integer columns, Telegram ids BigInteger: a larger number never reaches the
# database (its driver raises OverflowError, not a "not found").
MAX_LEAD_ID = 2**31 - 1
MAX_TELEGRAM_ID = 2**63 - 1
MAX_USERNAME = 64  # leads.username; Telegram's own are at most 32
MAX_AMOUNT = Decimal("1000000000")  # exclusive; Numeric(14, 2) holds far more
CENT = Decimal("0.01")
# One argument, and everything after the command: far above any real use, far below a
# message Telegram would refuse when the value is quoted back.
MAX_ARG = 200
MAX_ARGS = 400
QUOTED = 20

# Not \d (it matches '٣') and not str.isdigit() (it accepts '²', which int() refuses).
_DIGITS = re.compile(r"[0-9]+")
_AMOUNT = re.compile(r"[0-9]+(?:[.,][0-9]+)?")
# Thousands separators people paste: "6 900", with a no-break or thin space too.
_SEPARATORS = str.maketrans("", "", " \u00a0\u2009\u202f")
_MINUS = ("-", "\u2212")


def quote(text: str, limit: int = QUOTED) -> str:
    """A refused value as it is quoted back: invisible characters out, cut short."""
    return f"«{plain_name(text, limit)}»"


def split_args(text: str | None) -> list[str]:
    """A command's arguments, each at most MAX_ARG characters and MAX_ARGS in all."""
    raw = text or ""
    if len(raw) > MAX_ARGS:
        raise InputError("arguments.too_long", limit=MAX_ARGS)
    args = raw.split()
    if any(len(arg) > MAX_ARG for arg in args):
        raise InputError("argument.too_long", limit=MAX_ARG)
    return args


def check_length(text: str, limit: int, what: str) -> str:
    """`text` when it fits a column of `limit` characters; `what` names the value in the
    refusal's code ("source" → "source.too_long")."""
    if len(text) > limit:
        raise InputError(f"{what}.too_long", limit=limit)
    return text


def parse_id(text: str, *, maximum: int = MAX_TELEGRAM_ID, what: str = "id") -> int:
    """'12' or '#12' → 12: ASCII digits only, from 1 to `maximum`. `what` ("id",
    "lead_id", "telegram_id") starts the refusal's code ("lead_id.not_digits")."""
    raw = text.strip()
    digits = raw[1:] if raw.startswith("#") else raw
    if not _DIGITS.fullmatch(digits):
        raise InputError(f"{what}.not_digits", value=quote(text))
    significant = digits.lstrip("0")
    # Compared as text first: int() of thousands of digits is slow, then refused anyway.
    if len(significant) > len(str(maximum)) or int(significant or "0") > maximum:
        raise InputError(f"{what}.too_large", value=quote(text), limit=maximum)
    if not significant:
        raise InputError(f"{what}.not_positive")
    return int(significant)


def parse_lead_id(text: str) -> int:
    return parse_id(text, maximum=MAX_LEAD_ID, what="lead_id")


def parse_telegram_id(text: str) -> int:
    return parse_id(text, maximum=MAX_TELEGRAM_ID, what="telegram_id")


def parse_username(text: str) -> str:
    """'@anna' → 'anna' (the @ is optional)."""
    name = text.strip().removeprefix("@")
    if not name:
        raise InputError("username.empty")
    return check_length(name, MAX_USERNAME, "username")


def parse_amount(text: str) -> Decimal:
    """'6900', '6 900', '6900,50' → Decimal, rounded half up to kopecks before it is checked:
    0.001 is refused (it would be recorded as 0.00), 0.005 is 0.01."""
    if len(text) > MAX_ARG:
        raise InputError("amount.too_long", limit=MAX_ARG)
    cleaned = text.strip().translate(_SEPARATORS)
    negative = cleaned.startswith(_MINUS)
    if negative:
        cleaned = cleaned[1:]
    if not _AMOUNT.fullmatch(cleaned):
        raise InputError("amount.not_a_number", value=quote(text))
    positive = InputError("amount.not_positive")
    if negative:
        raise positive
    amount = Decimal(cleaned.replace(",", "."))
    too_big = InputError("amount.too_large", limit=f"{MAX_AMOUNT:,}".replace(",", " "))
    # Checked before rounding as well: quantize() refuses a number of hundreds of digits.
    if amount >= MAX_AMOUNT:
        raise too_big
    amount = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if amount <= 0:
        raise positive
    if amount >= MAX_AMOUNT:
        raise too_big
    return amount
