"""One lead as the admin sees it (/lead <id>): who, where in the funnel and how it got
there, what it answered and for how many points, what we sent, what it bought."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from html import escape

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Answer, Lead, Purchase, StageEvent, Touch
from funnel.core.telegram_text import plain_name
from funnel.script.schema import Script

__all__ = [
    "CardAnswer",
    "CardPurchase",
    "CardStage",
    "CardTouch",
    "LeadCard",
    "format_lead_card_html",
    "lead_card",
]

TELEGRAM_LIMIT = 4096
# Long histories are cut to their most recent entries so the card stays one message.
MAX_ROWS = 15


@dataclass(frozen=True)
class CardAnswer:
    question: str
    answer: str
    score: int
    at: datetime


@dataclass(frozen=True)
class CardStage:
    from_title: str | None
    to_title: str
    at: datetime
    cause: str


@dataclass(frozen=True)
class CardTouch:
    campaign: str
    step: int
    status: str
    sent_at: datetime | None


@dataclass(frozen=True)
class CardPurchase:
    amount: float
    currency: str
    at: datetime


@dataclass(frozen=True)
class LeadCard:
    id: int
    user_id: int | None
    name: str | None
    username: str | None
    source: str
    stage: str
    stage_title: str
    temperature: str | None
    score: int
    created_at: datetime
    opted_out_at: datetime | None
    blocked_at: datetime | None
    forgotten: bool
    answers: tuple[CardAnswer, ...]
    history: tuple[CardStage, ...]
    touches: tuple[CardTouch, ...]
    purchases: tuple[CardPurchase, ...]


async def lead_card(session: AsyncSession, script: Script, lead_id: int) -> LeadCard | None:
    lead = await session.get(Lead, lead_id)
    if lead is None:
        return None
    titles = script.titles
    answers = await session.scalars(
        select(Answer)
        .where(Answer.lead_id == lead_id, Answer.superseded.is_(False))
        .order_by(Answer.id)
    )
    card_answers = []
    for answer in answers:
        question = script.question(answer.question)
        option = question.option(answer.option) if question and answer.option else None
        text = option.label if option else (answer.value or "")
        card_answers.append(CardAnswer(answer.question, text, answer.score, answer.at))
    events = await session.scalars(
        select(StageEvent)
        .where(StageEvent.lead_id == lead_id)
        .order_by(StageEvent.at, StageEvent.id)
    )
    history = tuple(
        CardStage(
            titles.get(e.from_stage, e.from_stage) if e.from_stage else None,
            titles.get(e.to_stage, e.to_stage),
            e.at,
            e.cause,
        )
        for e in events
    )
    touches = await session.scalars(
        select(Touch).where(Touch.lead_id == lead_id).order_by(Touch.due_at, Touch.id)
    )
    purchases = await session.scalars(
        select(Purchase).where(Purchase.lead_id == lead_id).order_by(Purchase.at, Purchase.id)
    )
    name = " ".join(p for p in (lead.first_name, lead.last_name) if p) or None
    return LeadCard(
        id=lead.id,
        user_id=lead.user_id,
        name=name,
        username=lead.username,
        source=lead.source,
        stage=lead.stage,
        stage_title=titles.get(lead.stage, lead.stage),
        temperature=lead.temperature,
        score=lead.score,
        created_at=lead.created_at,
        opted_out_at=lead.opted_out_at,
        blocked_at=lead.blocked_at,
        forgotten=lead.deleted_at is not None,
        answers=tuple(card_answers),
        history=history,
        touches=tuple(CardTouch(t.campaign, t.step, t.status, t.sent_at) for t in touches),
        purchases=tuple(CardPurchase(float(p.amount), p.currency, p.at) for p in purchases),
    )


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
    text = ""
    for section in sections:
        candidate = f"{text}\n\n{section}" if text else section
        if len(candidate) <= TELEGRAM_LIMIT:
            text = candidate
    return text
