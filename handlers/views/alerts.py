"""The managers' note after a follow-up round: which leads a campaign step went to, as
Telegram HTML, split into messages that stay well under Telegram's limit."""

from __future__ import annotations

from html import escape

from funnel.core.telegram_text import plain_name
from handlers.i18n import t, tn

# Below TELEGRAM_LIMIT with room for the heading of a continued message.
ALERT_LIMIT = 3900


def lead_label(lead_id: int, first_name: str | None, username: str | None) -> str:
    name = escape(plain_name(first_name, 64))
    handle = f" @{escape(plain_name(username, 64))}" if username else ""
    return f"#{lead_id} {name}{handle}".strip()


def alert_texts(campaign_title: str, step: int, labels: list[str], language: str) -> list[str]:
    """One message per ALERT_LIMIT characters of lead labels, each under the campaign's title,
    in the school's language."""
    title = escape(campaign_title)
    head = tn("alert.touches_sent", len(labels), lang=language, title=title, step=step)
    continued = head + " " + t("alert.continued", lang=language)
    texts: list[str] = []
    current = head
    for label in labels:
        if len(current) + len(label) + 1 > ALERT_LIMIT:
            texts.append(current)
            current = continued
        current += "\n" + label
    texts.append(current)
    return texts
