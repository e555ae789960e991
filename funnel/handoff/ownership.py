"""Who owns a lead: a manager's take (one of two managers tapping at once wins), their
activity, and the release (the button, "not a fit", or a silence). While a manager holds a
lead its nurture and win-back touches are not sent; the release starts a new campaign cycle,
so the campaign of the lead's stage begins again from the release, one touch at a time.

Every function writes into the caller's transaction; the caller commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.models import Lead, ManagerTake, Notification, Touch
from funnel.followups.decision import PAUSED_BY_MANAGER
from funnel.handoff.notifications import CARD_UPDATE, MANAGER_CARD, insert_new
from funnel.script.schema import Script

# A manager talking to the lead replaces the bot's reminders and offers; a buyer's
# post-sale survey still goes out.
PAUSED_KINDS = PAUSED_BY_MANAGER
ReleaseCause = Literal["released", "unfit", "silence"]


def paused_campaigns(script: Script) -> list[str]:
    return [c.id for c in script.campaigns if c.kind in PAUSED_KINDS]


async def take(
    session: AsyncSession,
    script: Script,
    lead_id: int,
    manager_id: int,
    manager_name: str,
    *,
    card_id: int | None,
    called_at: datetime,
    now: datetime,
) -> bool:
    """Makes the manager the lead's owner if nobody is; False when someone already is. The
    lead's planned nurture and win-back touches are cancelled."""
    # One UPDATE decides between two managers tapping at once: only one row changes. The
    # version moves so a dialogue transaction holding the old lead is retried, not merged.
    result = await session.execute(
        update(Lead)
        .where(Lead.id == lead_id, Lead.manager_id.is_(None))
        .values(
            manager_id=manager_id,
            manager_name=manager_name,
            taken_at=now,
            version=Lead.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        return False
    session.add(
        ManagerTake(
            lead_id=lead_id,
            manager_id=manager_id,
            manager_name=manager_name,
            card_id=card_id,
            called_at=min(called_at, now),
            taken_at=now,
            active_at=now,
        )
    )
    paused = paused_campaigns(script)
    if paused:
        await session.execute(
            update(Touch)
            .where(
                Touch.lead_id == lead_id,
                Touch.status == "planned",
                Touch.campaign.in_(paused),
            )
            .values(status="cancelled", reason="manager_owns")
            .execution_options(synchronize_session=False)
        )
    return True


async def open_take(session: AsyncSession, lead_id: int) -> ManagerTake | None:
    query = (
        select(ManagerTake)
        .where(ManagerTake.lead_id == lead_id, ManagerTake.released_at.is_(None))
        .order_by(ManagerTake.id.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def note_activity(session: AsyncSession, lead_id: int, now: datetime) -> None:
    """A manager did something with the lead (a payment, a prompt): the silence starts over."""
    await session.execute(
        update(ManagerTake)
        .where(ManagerTake.lead_id == lead_id, ManagerTake.released_at.is_(None))
        .values(active_at=now)
        .execution_options(synchronize_session=False)
    )


def release(lead: Lead, take_: ManagerTake | None, cause: ReleaseCause, now: datetime) -> None:
    """Ends the lead's ownership: the take is closed, the lead is nobody's, and a new cycle
    begins so the campaign of its stage (now, after any stage move) plans from here."""
    if take_ is not None and take_.released_at is None:
        take_.released_at = now
        take_.release_cause = cause
    lead.manager_id = None
    lead.manager_name = None
    lead.taken_at = None
    store.start_cycle(lead, now)


@dataclass(frozen=True)
class Silent:
    """A take whose lead and manager have both been still for the silence."""

    take_id: int
    lead_id: int


async def silent_takes(
    session: AsyncSession, now: datetime, silence: timedelta, limit: int = 500
) -> Sequence[Silent]:
    """Open takes with no manager activity and no stage move for `silence`."""
    cutoff = now - silence
    query = (
        select(ManagerTake.id, ManagerTake.lead_id)
        .join(Lead, Lead.id == ManagerTake.lead_id)
        .where(
            ManagerTake.released_at.is_(None),
            ManagerTake.active_at <= cutoff,
            Lead.stage_changed_at <= cutoff,
        )
        .order_by(ManagerTake.active_at, ManagerTake.id)
        .limit(limit)
    )
    return [Silent(take_id, lead_id) for take_id, lead_id in (await session.execute(query)).all()]


async def release_silent(
    session: AsyncSession, silent: Silent, now: datetime, silence: timedelta
) -> bool:
    """Releases one silent take if it is still open and still silent (a manager may have
    acted since it was read); True when it was."""
    # Read afresh: a take moves the lead's version with a plain UPDATE.
    take_ = await session.get(ManagerTake, silent.take_id, populate_existing=True)
    lead = await session.get(Lead, silent.lead_id, populate_existing=True)
    if take_ is None or lead is None or take_.released_at is not None:
        return False
    cutoff = now - silence
    if take_.active_at > cutoff or lead.stage_changed_at > cutoff:
        return False
    if lead.manager_id is not None and lead.manager_id != take_.manager_id:
        # Someone else holds the lead now: only this old take ends.
        take_.released_at = now
        take_.release_cause = "silence"
        return True
    release(lead, take_, "silence", now)
    return True


async def plan_card_updates(session: AsyncSession, lead_id: int, tag: str, now: datetime) -> int:
    """Edits of every card of the lead the managers got (its message is known), through the
    hand-off outbox, so each shows the lead as it is now (e.g. free to take again)."""
    cards = await session.execute(
        select(Notification.id, Notification.chat_id, Notification.message_id).where(
            Notification.lead_id == lead_id,
            Notification.kind == MANAGER_CARD,
            Notification.status == "sent",
            Notification.message_id.is_not(None),
        )
    )
    rows: list[dict[str, Any]] = [
        {"lead_id": lead_id, "kind": CARD_UPDATE, "occasion": f"update:{card_id}:{tag}",
         "status": "planned", "attempts": 0, "due_at": now, "created_at": now,
         "chat_id": chat_id, "message_id": message_id}
        for card_id, chat_id, message_id in cards.all()
    ]  # fmt: skip
    return await insert_new(session, rows) if rows else 0
