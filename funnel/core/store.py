"""Reads and writes of leads, the stage log and answers. Repositories never commit: the
caller owns the transaction (one per update, one per background batch)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.inputs import parse_lead_id, parse_username
from funnel.core.models import Answer, InboxUpdate, Lead, StageEvent, Touch


@dataclass(frozen=True)
class Profile:
    """Who wrote to us, as Telegram describes them."""

    user_id: int
    chat_id: int
    first_name: str | None = None
    last_name: str | None = None
    username: str | None = None
    language: str | None = None


# The reads every update makes, built once: building and keying a statement costs more than
# running it.
_LEAD_BY_USER = select(Lead).where(Lead.user_id == bindparam("user_id"))
_CURRENT_ANSWERS = (
    select(Answer)
    .where(Answer.lead_id == bindparam("lead_id"), Answer.superseded.is_(False))
    .order_by(Answer.id)
)


async def lead_by_user(session: AsyncSession, user_id: int) -> Lead | None:
    return (await session.scalars(_LEAD_BY_USER, {"user_id": user_id})).first()


async def lead_by_id(session: AsyncSession, lead_id: int) -> Lead | None:
    return await session.get(Lead, lead_id)


def new_lead(
    profile: Profile, *, source: str, stage: str, position: str | None, version: str, at: datetime
) -> Lead:
    return Lead(
        user_id=profile.user_id,
        chat_id=profile.chat_id,
        first_name=profile.first_name,
        last_name=profile.last_name,
        username=profile.username,
        language=profile.language,
        source=source,
        stage=stage,
        position=position,
        score=0,
        script_version=version,
        cycle=1,
        cycle_started_at=at,
        created_at=at,
        stage_changed_at=at,
        last_inbound_at=at,
    )


def refresh_profile(lead: Lead, profile: Profile) -> None:
    """Names change in Telegram; keep ours current (but never resurrect a forgotten lead)."""
    lead.chat_id = profile.chat_id
    lead.first_name = profile.first_name
    lead.last_name = profile.last_name
    lead.username = profile.username
    lead.language = profile.language


def log_entry(session: AsyncSession, lead: Lead, at: datetime) -> None:
    """The first event of a new lead: entering the funnel (from no stage)."""
    session.add(StageEvent(lead_id=lead.id, from_stage=None, to_stage=lead.stage, at=at,
                           cause=f"start:{lead.source}"))  # fmt: skip


def log_stage(session: AsyncSession, lead: Lead, to_stage: str, cause: str, at: datetime) -> None:
    """Moves the lead and appends the event in the same transaction."""
    session.add(
        StageEvent(lead_id=lead.id, from_stage=lead.stage, to_stage=to_stage, at=at, cause=cause)
    )
    lead.stage = to_stage
    lead.stage_changed_at = at
    start_cycle(lead, at)


def start_cycle(lead: Lead, at: datetime) -> None:
    """A new cycle makes every touch planned for the previous one obsolete."""
    lead.cycle += 1
    lead.cycle_started_at = at


def add_answer(session: AsyncSession, lead: Lead, question: str, option: str | None,
               value: str, score: int, at: datetime) -> None:  # fmt: skip
    session.add(
        Answer(lead_id=lead.id, question=question, option=option, value=value, score=score, at=at)
    )


async def current_answers(session: AsyncSession, lead_id: int) -> list[Answer]:
    """The answers of the lead's current attempt, oldest first."""
    return list((await session.scalars(_CURRENT_ANSWERS, {"lead_id": lead_id})).all())


async def supersede_answers(session: AsyncSession, lead_id: int) -> None:
    await session.execute(
        update(Answer)
        .where(Answer.lead_id == lead_id, Answer.superseded.is_(False))
        .values(superseded=True)
    )


async def cancel_pending_touches(
    session: AsyncSession, lead_id: int, reason: str, *, before_cycle: int | None = None
) -> int:
    """Cancels the lead's planned touches (only those of older cycles when given)."""
    query = update(Touch).where(Touch.lead_id == lead_id, Touch.status == "planned")
    if before_cycle is not None:
        query = query.where(Touch.cycle < before_cycle)
    result = await session.execute(query.values(status="cancelled", reason=reason))
    return int(getattr(result, "rowcount", 0) or 0)


# A touch in one of these may be on the lead's screen: "sending" is on the wire (the lead can
# tap it before the row says sent), "unknown" left with no answer.
MAY_HAVE_ARRIVED = ("sending", "sent", "unknown")


async def was_sent(session: AsyncSession, lead_id: int, steps: set[tuple[str, int]]) -> bool:
    """Whether the lead was sent a touch of one of these (campaign, step) pairs."""
    if not steps:
        return False
    matches = or_(*(and_(Touch.campaign == c, Touch.step == n) for c, n in sorted(steps)))
    query = select(
        exists().where(Touch.lead_id == lead_id, Touch.status.in_(MAY_HAVE_ARRIVED), matches)
    )
    return bool(await session.scalar(query))


async def mark_replied(session: AsyncSession, lead: Lead, at: datetime) -> None:
    """Credits the touches sent in the last day with the lead's reply (the campaign report).

    Every sent touch moves `last_outbound_at` in the same statement batch, so a lead with no
    touch in the last day has nothing to credit: no query on most answers of a dialogue."""
    since = at - timedelta(days=1)
    if lead.last_outbound_at is None or lead.last_outbound_at < since:
        return
    await session.execute(
        update(Touch)
        .where(
            Touch.lead_id == lead.id,
            Touch.status == "sent",
            Touch.replied_at.is_(None),
            Touch.sent_at >= since,
        )
        .values(replied_at=at)
    )


async def mark_blocked(session: AsyncSession, user_id: int, at: datetime) -> None:
    """The person blocked the bot: never send to that chat again (until they unblock it)."""
    lead = await lead_by_user(session, user_id)
    if lead is not None:
        lead.blocked_at = at
        await cancel_pending_touches(session, lead.id, "blocked")


# Where a person's data was before an erasure: their lead, answers and touches, the
# notifications about them, and the updates they sent (the inbox, emptied once handled).
# The session's info names them once an erasure is in its transaction, so that the storage
# can make the erasure reach the disk after the commit (old row versions, the SQLite log).
ERASED_TABLES = ("leads", "answers", "touches", "notifications", "inbox")
ERASURE = "leadbot.erased_tables"


async def forget_replies(session: AsyncSession, chat_id: int) -> None:
    """Replies kept for sending to a chat carry names and answers: on an erasure they go,
    sent or not (bot/replies.py keeps them in the updates' inbox rows)."""
    await session.execute(
        update(InboxUpdate)
        .where(InboxUpdate.chat_id == chat_id, InboxUpdate.replies.is_not(None))
        .values(
            replies=None,
            chat_id=None,
            reply_status=case(
                (InboxUpdate.reply_status == "planned", "forgotten"),
                else_=InboxUpdate.reply_status,
            ),
        )
    )


async def forget_lead(session: AsyncSession, lead: Lead, at: datetime) -> None:
    """Erases the person and their answers (typed texts and chosen options); the lead stays
    as an anonymous count in the stage log and the report's aggregates."""
    session.info[ERASURE] = ERASED_TABLES
    await session.execute(
        update(Answer).where(Answer.lead_id == lead.id).values(value=None, option=None)
    )
    await cancel_pending_touches(session, lead.id, "forgotten")
    lead.user_id = None
    lead.chat_id = None
    lead.first_name = lead.last_name = lead.username = lead.language = None
    lead.position = None
    lead.deleted_at = at


async def lead_by_reference(session: AsyncSession, reference: str) -> Lead | None:
    """A lead named by an admin: its number (#12 or 12) or the Telegram @username; None when
    there is no such lead, ValueError (with a reason to show) when it names neither."""
    reference = reference.strip()
    if reference.startswith("@"):
        username = parse_username(reference)
        query = select(Lead).where(func.lower(Lead.username) == username.lower())
        return (await session.scalars(query)).first()
    return await session.get(Lead, parse_lead_id(reference))
