"""Numbers as the owner reads them, the same in every view: counts `1 234`, money
`1 028 100 ₽` (whole units, the sign after), percents rounded half up (34.5% → 35%) and
durations. Digit groups and the decimal mark follow the school's language (Babel's symbols:
a narrow no-break space in Russian, a comma in English); a number never wraps."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache

from babel.core import UnknownLocaleError
from babel.numbers import get_decimal_symbol, get_group_symbol

from handlers.i18n import t

__all__ = [
    "NBSP",
    "NNBSP",
    "SYMBOLS",
    "Number",
    "format_duration",
    "format_money",
    "format_number",
    "format_percent",
    "plain",
    "round_half_up",
]

SYMBOLS = {"RUB": "₽", "USD": "$", "EUR": "€", "KZT": "₸", "UAH": "₴", "BYN": "Br", "XTR": "⭐"}
# Between a number and its unit or currency sign.
NBSP = "\u00a0"
# Between digit groups where the language separates them with a space (Russian): narrow, so
# `1 028 100` reads as one number, and unbreakable, so it never wraps.
NNBSP = "\u202f"
NO_VALUE = "—"
Number = Decimal | float | int


def round_half_up(value: Number, digits: int = 0) -> Decimal:
    """`value` rounded to `digits` decimals, halves away from zero (34.5 → 35, 0.125 → 0.13).

    Python's round() and format() round halves to even and work on binary floats, so 34.5%
    would read 34% and 0.125 would read 0.12; a float is read as the decimal it prints as.
    """
    exact = value if isinstance(value, Decimal) else Decimal(str(value))
    return exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)


@cache
def _symbols(lang: str) -> tuple[str, str]:
    """(digit group separator, decimal mark) of `lang`; any space becomes a narrow one."""
    try:
        group, mark = get_group_symbol(lang), get_decimal_symbol(lang)
    except (UnknownLocaleError, ValueError, LookupError):
        group, mark = get_group_symbol("en"), get_decimal_symbol("en")
    return (NNBSP if group.isspace() else group), mark


def _finite(value: Number | None) -> Decimal | None:
    if value is None:
        return None
    try:
        exact = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return None
    return exact if exact.is_finite() else None


def _digits(value: Decimal, digits: int, lang: str, *, keep_zeros: bool = False) -> str:
    """`value` half-up to `digits` decimals, grouped in `lang`; trailing zeros dropped unless
    `keep_zeros`."""
    group, mark = _symbols(lang)
    rounded = round_half_up(value, digits)
    sign = "-" if rounded < 0 else ""
    whole, _, fraction = f"{abs(rounded):f}".partition(".")
    if not keep_zeros:
        fraction = fraction.rstrip("0")
    grouped = f"{int(whole):,}".replace(",", group)
    return sign + grouped + (mark + fraction if fraction else "")


def format_number(value: Number, *, lang: str = "ru", digits: int = 0) -> str:
    """1234567 → "1 234 567" (Russian) or "1,234,567" (English); up to `digits` decimals."""
    exact = _finite(value)
    return NO_VALUE if exact is None else _digits(exact, digits, lang)


def format_percent(value: Number | None, *, lang: str = "ru") -> str:
    """A share in percent: whole percents from 10% up, one decimal below (7.5%), halves
    rounded up; "—" when there is no share (nothing to divide by)."""
    exact = _finite(value)
    if exact is None:
        return NO_VALUE
    digits = 0 if abs(round_half_up(exact, 1)) >= 10 else 1
    return _digits(exact, digits, lang) + "%"


def format_money(
    amount: Number | None, currency: str, *, lang: str = "ru", cents: bool = False
) -> str:
    """A sum with its currency's sign after it: "1 028 100 ₽". Whole units (rounded half up)
    for report figures; `cents` keeps kopecks when there are any ("6 900,50 ₽")."""
    exact = _finite(amount)
    if exact is None:
        return NO_VALUE
    whole = round_half_up(exact, 2) == round_half_up(exact, 0)
    text = _digits(exact, 2, lang, keep_zeros=True) if cents and not whole else None
    number = text or _digits(exact, 0, lang)
    return f"{number}{NBSP}{SYMBOLS.get(currency, currency)}"


def format_duration(seconds: float | None, *, lang: str) -> str:
    """Seconds as the largest unit that reads well, with the unit's short word in `lang`."""
    if seconds is None:
        return NO_VALUE
    if seconds < 60:
        return _digits(Decimal(str(seconds)), 0, lang) + NBSP + t("unit.seconds", lang=lang)
    if seconds < 3600:
        return _digits(Decimal(str(seconds / 60)), 0, lang) + NBSP + t("unit.minutes", lang=lang)
    if seconds < 86400:
        return _digits(Decimal(str(seconds / 3600)), 1, lang) + NBSP + t("unit.hours", lang=lang)
    return _digits(Decimal(str(seconds / 86400)), 1, lang) + NBSP + t("unit.days", lang=lang)


def plain(text: str) -> str:
    """The text with ordinary spaces for a terminal, where no-break spaces buy nothing and
    some fonts draw the narrow one oddly."""
    return text.replace(NNBSP, " ").replace(NBSP, " ")
