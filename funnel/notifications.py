"""The hand-off outbox: which notifications a lead's hot moment makes (the managers' card,
the CRM webhook), the key that gives one moment one row of each kind, claiming rows for
delivery, retries with backoff, and what a crash leaves behind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.models import Answer, Lead, Notification, StageEvent

Kind = Literal["manager_card", "crm_webhook"]
MANAGER_CARD: Kind = "manager_card"
CRM_WEBHOOK: Kind = "crm_webhook"
Status = Literal["sent", "planned", "failed", "cancelled", "unknown"]

# Retries wait 15 s, 30 s, 1 min, ... and at most an hour; a day after the moment the row
# fails (a card that late is no use to a manager, and a CRM down for a day needs a person).
RETRY_BASE = timedelta(seconds=15)
RETRY_CAP = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(hours=24)
MAX_ERROR = 250


def kinds_for(*, hot: bool, qualified: bool, cards: bool, crm: bool) -> list[Kind]:
    """A hot moment (a hot verdict, a booking, a detractor's score) makes a managers' card;
    hot and qualified leads go to the CRM. Only destinations that are set up get rows."""
    kinds: list[Kind] = []
    if hot and cards:
        kinds.append(MANAGER_CARD)
    if (hot or qualified) and crm:
        kinds.append(CRM_WEBHOOK)
    return kinds


async def occasion(session: AsyncSession, lead: Lead) -> str:
    """Names the lead's current moment: the stage it stands at, the attempt at the questions
    (its first answer that still counts) and the stage-log row that put it there.

    A double tap, or a second booking button, changes none of the three: the same moment,
    one card. Starting over and qualifying again is a new attempt; coming back into a stage
    (e.g. booking again after a manager marked the lead unfit) is a new log row.
    """
    attempt = await session.scalar(
        select(func.min(Answer.id)).where(Answer.lead_id == lead.id, Answer.superseded.is_(False))
    )
    entered = await session.scalar(
        select(func.max(StageEvent.id)).where(StageEvent.lead_id == lead.id)
    )
    return f"{lead.stage}:a{attempt or 0}:e{entered or 0}"


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def plan(session: AsyncSession, lead: Lead, kinds: Sequence[Kind], now: datetime) -> int:
    """Inserts one planned row per kind for the lead's current moment, due at once, in the
    caller's transaction (the one that makes the lead hot); a moment already planned is left
    alone. Returns how many rows are new."""
    if not kinds:
        return 0
    moment = await occasion(session, lead)
    rows = [
        {"lead_id": lead.id, "kind": kind, "occasion": moment, "status": "planned",
         "attempts": 0, "due_at": now, "created_at": now}
        for kind in kinds
    ]  # fmt: skip
    statement = (
        _insert(session)(Notification)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["lead_id", "kind", "occasion"])
        .returning(Notification.id)
    )
    return len((await session.scalars(statement)).all())


@dataclass(frozen=True)
class Claimed:
    """A row marked "sending": what delivery needs to know about it."""

    id: int
    lead_id: int
    kind: str
    occasion: str
    attempts: int  # this one included
    created_at: datetime


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[Claimed]:
    """Marks up to `limit` due planned rows "sending" (attempts + 1) and returns them. Commit
    before the request leaves: from then on a crash leaves "sending" behind, which
    `recover_interrupted` settles. Several instances never claim the same row."""
    due = (
        select(Notification.id)
        .where(Notification.status == "planned", Notification.due_at <= now)
        .order_by(Notification.due_at, Notification.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Notification)
        .where(Notification.id.in_(due.scalar_subquery()), Notification.status == "planned")
        .values(status="sending", attempts=Notification.attempts + 1)
        .returning(
            Notification.id,
            Notification.lead_id,
            Notification.kind,
            Notification.occasion,
            Notification.attempts,
            Notification.created_at,
        )
        .execution_options(synchronize_session=False)
    )
    rows = (await session.execute(statement)).all()
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to: sent; planned again (retry_at); failed for good;
    cancelled (nothing to deliver any more); unknown (a card that may have arrived)."""

    id: int
    status: Status
    error: str | None = None
    retry_at: datetime | None = None


def retry_delay(attempts: int) -> timedelta:
    """The pause after the `attempts`-th failed try: doubling from RETRY_BASE up to RETRY_CAP."""
    if attempts < 1:
        return RETRY_BASE
    doublings = min(attempts - 1, 20)  # 2**20 base periods is far past the cap
    return min(RETRY_BASE * 2**doublings, RETRY_CAP)


def retry_or_give_up(
    row: Claimed, now: datetime, error: str, *, not_before: datetime | None = None
) -> Outcome:
    """Another try after the backoff (or when the server asked, if later), unless that would
    be more than GIVE_UP_AFTER past the moment: then failed."""
    at = now + retry_delay(row.attempts)
    if not_before is not None:
        at = max(at, not_before)
    if at - row.created_at > GIVE_UP_AFTER:
        given_up = f"gave up after {row.attempts} tries: {error}"
        return Outcome(row.id, "failed", given_up[:MAX_ERROR])
    return Outcome(row.id, "planned", error[:MAX_ERROR], retry_at=at)


async def record(session: AsyncSession, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Writes what each attempt came to, for rows still "sending" (a row recovery settled
    meanwhile keeps what recovery decided)."""
    for outcome in outcomes:
        values: dict[str, Any] = {"status": outcome.status, "error": outcome.error}
        if outcome.status == "sent":
            values["sent_at"] = now
        elif outcome.status == "planned":
            values["due_at"] = outcome.retry_at or now
        await session.execute(
            update(Notification)
            .where(Notification.id == outcome.id, Notification.status == "sending")
            .values(**values)
            .execution_options(synchronize_session=False)
        )


@dataclass(frozen=True)
class Recovered:
    """Rows a stopped process left "sending": cards that may have reached the managers
    (now "unknown", never resent) and webhooks planned again (the CRM dedupes them)."""

    unknown_cards: list[tuple[int, int]]  # (notification id, lead id)
    replanned_webhooks: int


async def recover_interrupted(session: AsyncSession, now: datetime) -> Recovered:
    """At start-up, before any delivery: settles what a crash left "sending"."""
    cards = await session.execute(
        update(Notification)
        .where(Notification.status == "sending", Notification.kind == MANAGER_CARD)
        .values(status="unknown", error="interrupted: the process stopped while sending")
        .returning(Notification.id, Notification.lead_id)
        .execution_options(synchronize_session=False)
    )
    unknown = sorted((row_id, lead_id) for row_id, lead_id in cards.all())
    webhooks = await session.execute(
        update(Notification)
        .where(Notification.status == "sending", Notification.kind == CRM_WEBHOOK)
        .values(status="planned", due_at=now, error="interrupted: sent again")
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    return Recovered(unknown, len(webhooks.all()))
