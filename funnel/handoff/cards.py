"""The hot-lead card for the sales managers, as data: who the lead is, where they came from,
what they answered and for how many points, and who took them into work; and whether a card
the bot sent is where a manager's button says it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.models import Lead, Notification
from funnel.handoff.notifications import MANAGER_CARD
from funnel.script.schema import Script

# A card that went out, or may have (the answer was lost): either can carry buttons.
DELIVERED = ("sent", "unknown")


@dataclass(frozen=True)
class ManagerCardAnswer:
    """One answer on the card: the tapped option's label, or what the lead typed."""

    bant: str
    option: str | None
    typed: str | None
    score: int


@dataclass(frozen=True)
class ManagerCard:
    """What the managers' card shows (handlers/views/manager_card.py renders it). Names are
    as people wrote them: the view cleans and escapes them."""

    lead_id: int
    name: str
    user_id: int | None
    username: str | None
    source: str
    stage_title: str
    score: int
    temperature: str | None
    answers: tuple[ManagerCardAnswer, ...]
    manager_name: str | None
    taken: bool


async def manager_card(session: AsyncSession, script: Script, lead: Lead) -> ManagerCard:
    answers = []
    for answer in await store.current_answers(session, lead.id):
        question = script.question(answer.question)
        if question is None:
            continue
        option = question.option(answer.option or "")
        answers.append(
            ManagerCardAnswer(
                question.bant,
                option.label if option else None,
                None if option else answer.value,
                answer.score,
            )
        )
    return ManagerCard(
        lead_id=lead.id,
        name=" ".join(p for p in (lead.first_name, lead.last_name) if p),
        user_id=lead.user_id,
        username=lead.username,
        source=lead.source,
        stage_title=script.titles.get(lead.stage, lead.stage),
        score=lead.score,
        temperature=lead.temperature,
        answers=tuple(answers),
        manager_name=lead.manager_name,
        taken=lead.manager_id is not None,
    )


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


@dataclass(frozen=True)
class CardCall:
    """The card a manager's button was pressed on: its row and when it called the managers."""

    card_id: int | None
    called_at: datetime


async def card_call(
    session: AsyncSession, lead_id: int, chat_id: int, message_id: int, fallback: datetime
) -> CardCall:
    """Which of the lead's cards is the message `message_id` in `chat_id` (rows from before
    cards recorded where they landed match any message); the newest when several do, and
    `fallback` as the moment when none is known."""
    row = (
        await session.execute(
            select(Notification.id, Notification.created_at)
            .where(
                Notification.lead_id == lead_id,
                Notification.kind == MANAGER_CARD,
                Notification.status.in_(DELIVERED),
                or_(Notification.chat_id.is_(None), Notification.chat_id == chat_id),
                or_(Notification.message_id.is_(None), Notification.message_id == message_id),
            )
            .order_by(Notification.message_id.is_(None), Notification.id.desc())
            .limit(1)
        )
    ).first()
    if row is None:
        return CardCall(None, fallback)
    return CardCall(row[0], row[1])
