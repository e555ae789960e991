"""The managers' hot-lead card as Telegram HTML, in the school's language. Names and answers
are cleaned of invisible characters and escaped."""

from __future__ import annotations

from html import escape

from funnel.core.telegram_text import plain_name
from funnel.handoff.cards import ManagerCard
from handlers.i18n import t


def format_manager_card(card: ManagerCard, *, lang: str) -> str:
    name = plain_name(card.name, 128) or "—"
    lines = [t("manager_card.title", lang=lang, lead=card.lead_id, name=escape(name))]
    if card.user_id is not None:
        write = t("manager_card.write", lang=lang)
        link = f'<a href="tg://user?id={card.user_id}">{write}</a>'
        username = plain_name(card.username, 64)
        handle = f" @{escape(username)}" if username else ""
        lines.append(t("manager_card.chat", lang=lang, link=link, handle=handle))
    lines.append(t("manager_card.source", lang=lang, source=escape(card.source)))
    lines.append(t("manager_card.stage", lang=lang, stage=escape(card.stage_title)))
    temperature = f", {card.temperature}" if card.temperature else ""
    lines.append(t("manager_card.score", lang=lang, score=card.score, temperature=temperature))
    for answer in card.answers:
        said = answer.option if answer.option is not None else plain_name(answer.typed, 200) or "—"
        lines.append(f"• {escape(answer.bant)}: {escape(said[:200])} ({answer.score:+d})")
    if card.manager_name:
        manager = escape(plain_name(card.manager_name, 128))
        lines.append(t("manager_card.taken", lang=lang, manager=manager))
        # The managers' loop: say so, so nobody waits for the bot's reminders.
        lines.append(t("manager_card.paused", lang=lang))
    return "\n".join(lines)
