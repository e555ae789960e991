"""One lead's card for the admin (/lead <id>) as Telegram HTML: every value from the lead is
escaped, and what people typed themselves is shown without invisible characters."""

from __future__ import annotations

from datetime import datetime
from html import escape

from funnel.core.telegram_text import fit_to_telegram, plain_name
from funnel.reports.lead_card import LeadCard

__all__ = ["format_lead_card_html"]

# Long histories are cut to their most recent entries so the card stays one message.
MAX_ROWS = 15


def _when(moment: datetime | None) -> str:
    return moment.strftime("%d.%m.%Y %H:%M") if moment else "—"


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _recent(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_ROWS:
        return lines
    return [f"…ещё {len(lines) - MAX_ROWS} раньше", *lines[-MAX_ROWS:]]


def format_lead_card_html(card: LeadCard) -> str:
    """The card as Telegram HTML (times in UTC); every value from the lead is escaped, and
    what people typed themselves is shown without invisible characters."""
    temperature = {"hot": "🔥 горячий", "warm": "🌤 тёплый", "cold": "❄️ холодный"}
    name = plain_name(card.name, 128) or "без имени"
    who = "данные удалены по просьбе лида" if card.forgotten else escape(name)
    username = plain_name(card.username, 64)
    if username and not card.forgotten:
        who += f" (@{escape(username)})"
    lines = [
        f"<b>Лид #{card.id}</b> · {who}",
        f"Этап: <b>{escape(card.stage_title)}</b> · {temperature.get(card.temperature or '', '—')}"
        f" · баллы: <b>{card.score}</b>",
        f"Источник: <code>{escape(card.source)}</code> · создан {_when(card.created_at)}",
    ]
    if card.user_id is not None:
        lines.append(f'<a href="tg://user?id={card.user_id}">Написать в Telegram</a>')
    if card.opted_out_at:
        lines.append(f"🔕 Отписался {_when(card.opted_out_at)}")
    if card.blocked_at:
        lines.append(f"⛔ Заблокировал бота {_when(card.blocked_at)}")
    sections = ["\n".join(lines)]
    if card.answers:
        rows = ["<b>Ответы</b> (баллы за ответ):"]
        rows += [
            f"• {escape(a.question)}: {escape(plain_name(a.answer, 200))} — {a.score:+d}"
            for a in card.answers
        ]
        rows.append(f"Итого: {sum(a.score for a in card.answers)}")
        sections.append("\n".join(rows))
    if card.history:
        rows = [
            f"{_when(h.at)} {escape(h.from_title or '∅')} → {escape(h.to_title)}"
            f" <i>{escape(_cut(h.cause, 40))}</i>"
            for h in card.history
        ]
        sections.append("\n".join(["<b>Этапы</b>:", *_recent(rows)]))
    if card.touches:
        rows = [
            f"{escape(t.campaign)} #{t.step}: {escape(t.status)} {_when(t.sent_at)}"
            for t in card.touches
        ]
        sections.append("\n".join(["<b>Рассылки</b>:", *_recent(rows)]))
    if card.purchases:
        rows = [f"{_when(p.at)}: {p.amount:.2f} {escape(p.currency)}" for p in card.purchases]
        sections.append("\n".join(["<b>Покупки</b>:", *_recent(rows)]))
    return fit_to_telegram(*sections)
