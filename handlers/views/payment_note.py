"""The managers' note about a payment in the bot or its refund, in the school's language."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from handlers.i18n import N_, t
from handlers.views.numbers import format_money


def format_amount(amount: Decimal, currency: str, *, lang: str = "ru") -> str:
    """49900 → "49 900 ₽", 84.15 → "84,15 $": exact, kopecks shown when there are any."""
    return format_money(amount, currency, lang=lang, cents=True)


def format_payment_note(
    lead_id: int, amount: Decimal, currency: str, offer: str | None, event: str, *, lang: str
) -> str:
    key = N_("payment.note.paid") if event == "paid" else N_("payment.note.refunded")
    return t(
        key,
        lang=lang,
        lead=lead_id,
        amount=escape(format_amount(amount, currency, lang=lang)),
        offer=escape(offer or "—"),
    )
