"""The domain's refusals (funnel.core.errors.InputError: a code and fields) in words, in
the reader's language. Every code has its own key here, marked with N_ so the catalog test
and `pybabel extract` see each one; a code missing from the table is said as a generic
refusal, never in raw form."""

from __future__ import annotations

from typing import Any

from funnel.core.errors import InputError
from handlers.i18n import N_, t

KEYS: dict[str, str] = {
    "arguments.too_long": N_("error.arguments.too_long"),
    "argument.too_long": N_("error.argument.too_long"),
    "source.too_long": N_("error.source.too_long"),
    "username.too_long": N_("error.username.too_long"),
    "username.empty": N_("error.username.empty"),
    "id.not_digits": N_("error.id.not_digits"),
    "id.too_large": N_("error.id.too_large"),
    "id.not_positive": N_("error.id.not_positive"),
    "lead_id.not_digits": N_("error.lead_id.not_digits"),
    "lead_id.too_large": N_("error.lead_id.too_large"),
    "lead_id.not_positive": N_("error.lead_id.not_positive"),
    "telegram_id.not_digits": N_("error.telegram_id.not_digits"),
    "telegram_id.too_large": N_("error.telegram_id.too_large"),
    "telegram_id.not_positive": N_("error.telegram_id.not_positive"),
    "amount.too_long": N_("error.amount.too_long"),
    "amount.not_a_number": N_("error.amount.not_a_number"),
    "amount.not_positive": N_("error.amount.not_positive"),
    "amount.too_large": N_("error.amount.too_large"),
    "currency.not_a_code": N_("error.currency.not_a_code"),
    "period.days_out_of_range": N_("error.period.days_out_of_range"),
    "period.reversed": N_("error.period.reversed"),
    "period.not_understood": N_("error.period.not_understood"),
    "period.out_of_range": N_("error.period.out_of_range"),
}


def explain(error: ValueError, lang: str) -> str:
    """What was wrong, in `lang` (plain text: the caller escapes it for HTML)."""
    if isinstance(error, InputError):
        key = KEYS.get(error.code)
        if key is not None:
            fields: dict[str, Any] = error.fields
            return t(key, lang=lang, **fields)
    return t("error.unknown", lang=lang)
