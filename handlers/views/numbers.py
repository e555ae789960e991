"""Numbers as the owner reads them: thousands apart with spaces that never wrap, percents,
durations and money with its currency's symbol."""

from __future__ import annotations

from decimal import Decimal

from handlers.i18n import t

SYMBOLS = {"RUB": "₽", "USD": "$", "EUR": "€", "KZT": "₸", "UAH": "₴", "BYN": "Br"}
NBSP = "\u00a0"


def format_number(value: Decimal | float | int) -> str:
    """1234567 → "1 234 567" with non-breaking spaces, so a number never wraps."""
    if isinstance(value, float) and not value.is_integer():
        whole = f"{value:,.2f}".rstrip("0").rstrip(".")
    else:
        whole = f"{int(value):,}"
    return whole.replace(",", NBSP)


def format_percent(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 10 or float(value).is_integer():
        return f"{value:.0f}%"
    return f"{value:.1f}%"


def format_duration(seconds: float | None, *, lang: str) -> str:
    """Seconds as the largest unit that reads well, with the unit's short word in `lang`."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f}{NBSP}" + t("unit.seconds", lang=lang)
    if seconds < 3600:
        return f"{seconds / 60:.0f}{NBSP}" + t("unit.minutes", lang=lang)
    if seconds < 86400:
        return f"{seconds / 3600:.1f}".rstrip("0").rstrip(".") + NBSP + t("unit.hours", lang=lang)
    return f"{seconds / 86400:.1f}".rstrip("0").rstrip(".") + NBSP + t("unit.days", lang=lang)


def format_money(amount: Decimal | float | None, currency: str) -> str:
    if amount is None:
        return "—"
    return f"{format_number(round(amount))}{NBSP}{SYMBOLS.get(currency, currency)}"
