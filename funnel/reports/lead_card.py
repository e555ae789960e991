"""One lead as the admin sees it (/lead <id>), as data: who, where in the funnel and how it
got there, what it answered and for how many points, what we sent, what it bought
(handlers/views/lead_card.py renders it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Answer, Lead, Purchase, StageEvent, Touch
from funnel.script.schema import Script

__all__ = [
    "CardAnswer",
    "CardPurchase",
    "CardStage",
    "CardTouch",
    "LeadCard",
    "lead_card",
]


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
    amount: Decimal
    currency: str
    at: datetime
    refunded: bool = False


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
        purchases=tuple(
            CardPurchase(p.amount, p.currency, p.at, p.refunded_at is not None) for p in purchases
        ),
    )
