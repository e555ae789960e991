"""The hot-lead card for the sales managers: who the lead is, where they came from, what
they answered, their score and why, and who took them into work; and whether a card the
bot sent is where a manager's button says it is."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.models import Lead, Notification
from funnel.core.telegram_text import plain_name
from funnel.handoff.notifications import MANAGER_CARD
from funnel.script.schema import Script

# A card that went out, or may have (the answer was lost): either can carry buttons.
DELIVERED = ("sent", "unknown")


@dataclass(frozen=True)
class Card:
    lead_id: int
    text: str
    taken: bool


async def lead_card(session: AsyncSession, script: Script, lead: Lead) -> Card:
    answers = await store.current_answers(session, lead.id)
    name = plain_name(" ".join(p for p in (lead.first_name, lead.last_name) if p), 128) or "—"
    lines = [f"🔥 <b>Лид #{lead.id}</b>: {escape(name)}"]
    if lead.user_id is not None:
        link = f'<a href="tg://user?id={lead.user_id}">написать</a>'
        username = plain_name(lead.username, 64)
        handle = f" @{escape(username)}" if username else ""
        lines.append(f"Чат: {link}{handle}")
    lines.append(f"Источник: {escape(lead.source)}")
    lines.append(f"Этап: {escape(script.titles.get(lead.stage, lead.stage))}")
    temperature = f", {lead.temperature}" if lead.temperature else ""
    lines.append(f"Баллы: <b>{lead.score}</b>{temperature}")
    for answer in answers:
        question = script.question(answer.question)
        if question is None:
            continue
        option = question.option(answer.option or "")
        said = option.label if option else plain_name(answer.value, 200) or "—"
        lines.append(f"• {escape(question.bant)}: {escape(said[:200])} ({answer.score:+d})")
    if lead.manager_name:
        lines.append(f"✅ В работе у {escape(plain_name(lead.manager_name, 128))}")
    return Card(lead.id, "\n".join(lines), lead.manager_id is not None)


async def has_card(
    session: AsyncSession, lead_id: int, chat_id: int, message_id: int | None
) -> bool:
    """Whether the bot sent (or may have sent) a card of this lead to `chat_id`, as the
    message `message_id` when given. Rows written before cards recorded where they landed
    have no chat and message: they count for any."""
    query = select(Notification.id).where(
        Notification.lead_id == lead_id,
        Notification.kind == MANAGER_CARD,
        Notification.status.in_(DELIVERED),
        or_(Notification.chat_id.is_(None), Notification.chat_id == chat_id),
    )
    if message_id is not None:
        query = query.where(
            or_(Notification.message_id.is_(None), Notification.message_id == message_id)
        )
    return await session.scalar(query.limit(1)) is not None
