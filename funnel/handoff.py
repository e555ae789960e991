"""The hot-lead card for the sales managers: who the lead is, where they came from, what
they answered, their score and why, and who took them into work."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from sqlalchemy.ext.asyncio import AsyncSession

from funnel import store
from funnel.html_text import plain_name
from funnel.models import Lead
from funnel.script import Script


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
