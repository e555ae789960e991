"""The domain's refusals (funnel.core.errors.InputError: a code and fields) in words, in
the reader's language. Every code has its own literal key here, so the catalog test sees
each one; a code missing from the table is said as a generic refusal, never in raw form."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from funnel.core.errors import InputError
from handlers.i18n import t

Text = Callable[..., str]

TEXTS: dict[str, Text] = {
    "arguments.too_long": lambda lang, **f: t("error.arguments.too_long", lang=lang, **f),
    "argument.too_long": lambda lang, **f: t("error.argument.too_long", lang=lang, **f),
    "source.too_long": lambda lang, **f: t("error.source.too_long", lang=lang, **f),
    "username.too_long": lambda lang, **f: t("error.username.too_long", lang=lang, **f),
    "username.empty": lambda lang, **f: t("error.username.empty", lang=lang, **f),
    "id.not_digits": lambda lang, **f: t("error.id.not_digits", lang=lang, **f),
    "id.too_large": lambda lang, **f: t("error.id.too_large", lang=lang, **f),
    "id.not_positive": lambda lang, **f: t("error.id.not_positive", lang=lang, **f),
    "lead_id.not_digits": lambda lang, **f: t("error.lead_id.not_digits", lang=lang, **f),
    "lead_id.too_large": lambda lang, **f: t("error.lead_id.too_large", lang=lang, **f),
    "lead_id.not_positive": lambda lang, **f: t("error.lead_id.not_positive", lang=lang, **f),
    "telegram_id.not_digits": lambda lang, **f: t("error.telegram_id.not_digits", lang=lang, **f),
    "telegram_id.too_large": lambda lang, **f: t("error.telegram_id.too_large", lang=lang, **f),
    "telegram_id.not_positive": lambda lang, **f: t(
        "error.telegram_id.not_positive", lang=lang, **f
    ),
    "amount.too_long": lambda lang, **f: t("error.amount.too_long", lang=lang, **f),
    "amount.not_a_number": lambda lang, **f: t("error.amount.not_a_number", lang=lang, **f),
    "amount.not_positive": lambda lang, **f: t("error.amount.not_positive", lang=lang, **f),
    "amount.too_large": lambda lang, **f: t("error.amount.too_large", lang=lang, **f),
    "currency.not_a_code": lambda lang, **f: t("error.currency.not_a_code", lang=lang, **f),
    "period.days_out_of_range": lambda lang, **f: t(
        "error.period.days_out_of_range", lang=lang, **f
    ),
    "period.reversed": lambda lang, **f: t("error.period.reversed", lang=lang, **f),
    "period.not_understood": lambda lang, **f: t("error.period.not_understood", lang=lang, **f),
    "period.out_of_range": lambda lang, **f: t("error.period.out_of_range", lang=lang, **f),
}


def explain(error: ValueError, lang: str) -> str:
    """What was wrong, in `lang` (plain text: the caller escapes it for HTML)."""
    if isinstance(error, InputError):
        text = TEXTS.get(error.code)
        if text is not None:
            fields: dict[str, Any] = error.fields
            return text(lang, **fields)
    return t("error.unknown", lang=lang)
