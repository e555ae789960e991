"""The managers' loop's notices as Telegram HTML, in the school's language: the reminder on a
card nobody took, the escalation to the admins. The lead's name is cleaned and escaped."""

from __future__ import annotations

from datetime import timedelta
from html import escape

from funnel.core.telegram_text import plain_name
from handlers.i18n import t
from handlers.views.numbers import format_duration


def format_reminder(lead_id: int, waited: timedelta, *, lang: str) -> str:
    waiting = format_duration(max(waited.total_seconds(), 0.0), lang=lang)
    return t("sla.reminder", lang=lang, lead=lead_id, waited=waiting)


def format_escalation(lead_id: int, name: str | None, waited: timedelta, *, lang: str) -> str:
    waiting = format_duration(max(waited.total_seconds(), 0.0), lang=lang)
    shown = escape(plain_name(name, 64)) or "—"
    return t("sla.escalation", lang=lang, lead=lead_id, name=shown, waited=waiting)
