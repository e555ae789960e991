"""The hand-off outbox: which notifications a lead's hot moment makes (the managers' card,
the CRM webhook), the key that gives one moment one row of each kind, claiming rows for
delivery, retries with backoff, and what a crash leaves behind."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Answer, Lead, Notification, StageEvent

Kind = Literal[
    "manager_card", "crm_webhook", "card_erasure", "crm_forgotten",
    "sla_reminder", "sla_escalation", "card_update", "payment_note", "crm_purchase",
]  # fmt: skip
MANAGER_CARD: Kind = "manager_card"
CRM_WEBHOOK: Kind = "crm_webhook"
# After /forget: each card the managers got is edited to say so, and the CRM is told.
CARD_ERASURE: Kind = "card_erasure"
CRM_FORGOTTEN: Kind = "crm_forgotten"
# The managers' loop (funnel/handoff/service_level.py, ownership.py): a reply to a card nobody
# took, a word to each admin when it is still untaken, and a card edited after a release.
SLA_REMINDER: Kind = "sla_reminder"
SLA_ESCALATION: Kind = "sla_escalation"
CARD_UPDATE: Kind = "card_update"
# A payment in the bot (or its refund): a note in the managers' chat, an event for the CRM.
# Their occasion names the purchase: "paid:<purchase id>" or "refunded:<purchase id>".
PAYMENT_NOTE: Kind = "payment_note"
CRM_PURCHASE: Kind = "crm_purchase"
WEBHOOK_KINDS = frozenset({CRM_WEBHOOK, CRM_FORGOTTEN, CRM_PURCHASE})
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


async def _insert_new(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Inserts the rows whose (lead, kind, occasion) is not there yet; returns how many."""
    statement = (
        _insert(session)(Notification)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["lead_id", "kind", "occasion"])
        .returning(Notification.id)
    )
    return len((await session.scalars(statement)).all())


insert_new = _insert_new


async def plan(session: AsyncSession, lead: Lead, kinds: Sequence[Kind], now: datetime) -> int:
    """Inserts one planned row per kind for the lead's current moment, due at once, in the
    caller's transaction (the one that makes the lead hot); a moment already planned is left
    alone. Returns how many rows are new."""
    if lead.is_test:
        # A test run (/test_funnel) is no lead of the CRM's.
        kinds = [kind for kind in kinds if kind != CRM_WEBHOOK]
    if not kinds:
        return 0
    moment = await occasion(session, lead)
    rows = [
        {"lead_id": lead.id, "kind": kind, "occasion": moment, "status": "planned",
         "attempts": 0, "due_at": now, "created_at": now}
        for kind in kinds
    ]  # fmt: skip
    return await _insert_new(session, rows)


async def plan_payment(
    session: AsyncSession,
    lead_id: int,
    purchase_id: int,
    event: Literal["paid", "refunded"],
    now: datetime,
    *,
    cards: bool,
    crm: bool,
) -> int:
    """In the transaction that records a payment or its refund: the managers' note and the
    CRM's event, once per purchase and event. Returns how many rows are new."""
    kinds = [kind for kind, wanted in ((PAYMENT_NOTE, cards), (CRM_PURCHASE, crm)) if wanted]
    rows = [
        {"lead_id": lead_id, "kind": kind, "occasion": f"{event}:{purchase_id}",
         "status": "planned", "attempts": 0, "due_at": now, "created_at": now}
        for kind in kinds
    ]  # fmt: skip
    return await _insert_new(session, rows) if rows else 0


def payment_occasion(occasion: str) -> tuple[str, int] | None:
    """("paid" | "refunded", purchase id) of a payment row's occasion."""
    event, _, number = occasion.partition(":")
    if event not in ("paid", "refunded") or not number.isdigit():
        return None
    return event, int(number)


@dataclass(frozen=True)
class Claimed:
    """A row on its way: what delivery needs to know about it."""

    id: int
    lead_id: int
    kind: str
    occasion: str
    attempts: int  # this one included
    created_at: datetime
    chat_id: int | None = None
    message_id: int | None = None


async def due(
    session: AsyncSession, now: datetime, limit: int, exclude: Collection[int] = ()
) -> list[Claimed]:
    """Planned rows whose time has come, oldest first (not claimed yet: a row is claimed
    only when its request can leave, see `claim`); `exclude` names those already on their
    way."""
    query = (
        select(
            Notification.id,
            Notification.lead_id,
            Notification.kind,
            Notification.occasion,
            Notification.attempts + 1,
            Notification.created_at,
            Notification.chat_id,
            Notification.message_id,
        )
        .where(Notification.status == "planned", Notification.due_at <= now)
        .order_by(Notification.due_at, Notification.id)
        .limit(limit)
    )
    if exclude:
        query = query.where(Notification.id.not_in(sorted(exclude)))
    return [Claimed(*row) for row in (await session.execute(query)).all()]


async def claim(session: AsyncSession, ids: Sequence[int]) -> set[int]:
    """Marks rows "sending" (attempts + 1) if they are still planned; returns those claimed.
    Commit before the request leaves: from then on a crash leaves "sending" behind, which
    `recover_interrupted` settles. Of several instances only one claims a row."""
    if not ids:
        return set()
    # Several instances on PostgreSQL: a row another instance is claiming right now is
    # skipped, not waited for (it is theirs); SQLite has one writer and ignores the clause.
    free = (
        select(Notification.id)
        .where(Notification.id.in_(ids), Notification.status == "planned")
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Notification)
        .where(Notification.id.in_(free.scalar_subquery()), Notification.status == "planned")
        .values(status="sending", attempts=Notification.attempts + 1)
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.scalars(statement)).all())


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[Claimed]:
    """Reads and claims up to `limit` due rows at once (for work with no rate limit)."""
    rows = await due(session, now, limit)
    claimed = await claim(session, [row.id for row in rows])
    return [row for row in rows if row.id in claimed]


async def plan_erasure(session: AsyncSession, lead_id: int, now: datetime, *, crm: bool) -> int:
    """After /forget, in its transaction: an edit for every card the managers may have got
    (its chat and message are known), a `forgotten` event for a CRM that heard of the lead;
    rows not yet delivered are cancelled. Returns how many rows are new."""
    await session.execute(
        update(Notification)
        .where(
            Notification.lead_id == lead_id,
            Notification.status == "planned",
            Notification.kind.in_((MANAGER_CARD, CRM_WEBHOOK)),
        )
        .values(status="cancelled", error="the lead asked to be forgotten")
        .execution_options(synchronize_session=False)
    )
    cards = await session.execute(
        select(Notification.id, Notification.chat_id, Notification.message_id).where(
            Notification.lead_id == lead_id,
            Notification.kind == MANAGER_CARD,
            Notification.message_id.is_not(None),
        )
    )
    rows: list[dict[str, Any]] = [
        {"lead_id": lead_id, "kind": CARD_ERASURE, "occasion": f"card:{card_id}",
         "status": "planned", "attempts": 0, "due_at": now, "created_at": now,
         "chat_id": chat_id, "message_id": message_id}
        for card_id, chat_id, message_id in cards.all()
    ]  # fmt: skip
    told_crm = await session.scalar(
        select(func.count()).where(
            Notification.lead_id == lead_id,
            Notification.kind == CRM_WEBHOOK,
            Notification.status.in_(("sent", "sending", "unknown", "failed")),
        )
    )
    if crm and told_crm:
        rows.append(
            {"lead_id": lead_id, "kind": CRM_FORGOTTEN, "occasion": "forgotten",
             "status": "planned", "attempts": 0, "due_at": now, "created_at": now,
             "chat_id": None, "message_id": None}
        )  # fmt: skip
    if not rows:
        return 0
    return await _insert_new(session, rows)


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to: sent; planned again (retry_at); failed for good;
    cancelled (nothing to deliver any more); unknown (a card that may have arrived)."""

    id: int
    status: Status
    error: str | None = None
    retry_at: datetime | None = None
    chat_id: int | None = None
    message_id: int | None = None


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
    meanwhile keeps what recovery decided) or, when nothing was sent (cancelled: the lead
    was forgotten, a setting was removed), still "planned"."""
    for outcome in outcomes:
        values: dict[str, Any] = {"status": outcome.status, "error": outcome.error}
        if outcome.status == "sent":
            values["sent_at"] = now
            if outcome.message_id is not None:
                values.update(chat_id=outcome.chat_id, message_id=outcome.message_id)
        elif outcome.status == "planned":
            values["due_at"] = outcome.retry_at or now
        current = ("sending", "planned") if outcome.status == "cancelled" else ("sending",)
        await session.execute(
            update(Notification)
            .where(Notification.id == outcome.id, Notification.status.in_(current))
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
        .where(Notification.status == "sending", Notification.kind.not_in(WEBHOOK_KINDS))
        .values(status="unknown", error="interrupted: the process stopped while sending")
        .returning(Notification.id, Notification.lead_id)
        .execution_options(synchronize_session=False)
    )
    unknown = sorted((row_id, lead_id) for row_id, lead_id in cards.all())
    webhooks = await session.execute(
        update(Notification)
        .where(Notification.status == "sending", Notification.kind.in_(WEBHOOK_KINDS))
        .values(status="planned", due_at=now, error="interrupted: sent again")
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    return Recovered(unknown, len(webhooks.all()))
