"""The managers' hot-lead card as Telegram HTML. Names and answers are cleaned of invisible
characters and escaped."""

from __future__ import annotations

from html import escape

from funnel.core.telegram_text import plain_name
from funnel.handoff.cards import ManagerCard


def format_manager_card(card: ManagerCard) -> str:
    name = plain_name(card.name, 128) or "—"
    lines = [f"🔥 <b>Лид #{card.lead_id}</b>: {escape(name)}"]
    if card.user_id is not None:
        link = f'<a href="tg://user?id={card.user_id}">написать</a>'
        username = plain_name(card.username, 64)
        handle = f" @{escape(username)}" if username else ""
        lines.append(f"Чат: {link}{handle}")
    lines.append(f"Источник: {escape(card.source)}")
    lines.append(f"Этап: {escape(card.stage_title)}")
    temperature = f", {card.temperature}" if card.temperature else ""
    lines.append(f"Баллы: <b>{card.score}</b>{temperature}")
    for answer in card.answers:
        said = answer.option if answer.option is not None else plain_name(answer.typed, 200) or "—"
        lines.append(f"• {escape(answer.bant)}: {escape(said[:200])} ({answer.score:+d})")
    if card.manager_name:
        lines.append(f"✅ В работе у {escape(plain_name(card.manager_name, 128))}")
    return "\n".join(lines)
