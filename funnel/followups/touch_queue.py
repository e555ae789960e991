"""The touch queue (the `touches` table): due touches with their leads, the lead's recent
sends for the frequency cap, claiming for sending, cancelling, postponing, recording what
Telegram answered, and settling what a crash left "sending"."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from funnel.core.models import JobMark, Lead, Touch

# Statuses whose send may have reached the lead: they count against the frequency cap.
COUNTED_STATUSES = ("sending", "sent", "unknown")
# How long an instance holds the touches it queued (due_touches): longer than a batch of 500
# takes at the shared 30 messages/s; a stopped instance's unsent touches wait this long.
LEASE = timedelta(minutes=2)


async def take_write_lock(session: AsyncSession) -> None:
    """On SQLite, start the transaction as a writer before reading.

    A WAL transaction that reads and then writes fails at once ("database is locked") when
    another connection wrote in between; writing first makes a second writer wait for the
    busy timeout instead. An update that matches nothing still takes the write lock.
    PostgreSQL needs none of this.
    """
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(
            update(JobMark).where(JobMark.name == "outbox:lock").values(at=JobMark.at)
        )


def any_due(now: datetime, exclude: Collection[int] = ()) -> ColumnElement[bool]:
    """Whether a planned touch is due (`exclude`: those already on their way): a read that
    needs no lock. Asked as "is the earliest due time past", which every database answers
    from the first entry of the (status, due_at) index. As a bare EXISTS, PostgreSQL's
    cached generic plan expects any row to match and scans the whole outbox for one."""
    query = select(func.min(Touch.due_at)).where(Touch.status == "planned")
    if exclude:
        query = query.where(Touch.id.not_in(sorted(exclude)))
    return query.scalar_subquery() <= now


async def lock_if_due(session: AsyncSession, now: datetime, exclude: Collection[int] = ()) -> bool:
    """Before claiming due touches: False when none is due. On SQLite the write lock is taken
    only when one is (the check reads outside any transaction, so no lock is needed for it
    and a round with nothing left writes nothing); PostgreSQL needs no lock and no separate
    check (the claim's own read answers), so it is always True there."""
    if session.get_bind().dialect.name != "sqlite":
        return True
    if not await session.scalar(select(any_due(now, exclude))):
        return False
    await take_write_lock(session)
    return True


async def due_touches(
    session: AsyncSession,
    now: datetime,
    limit: int,
    exclude: Collection[int] = (),
    holder: str | None = None,
) -> list[tuple[Touch, Lead | None]]:
    """Planned touches whose time has come, oldest first, with their leads; `exclude` names
    those already on their way (waiting for a slot, still planned); `holder` names the
    instance reading (its own leases do not hold it back; `release_leases` at its stop).

    On PostgreSQL the rows are locked with SKIP LOCKED and leased for LEASE, so instances
    queue disjoint touches: without the lease, the locks end with this transaction, long
    before the touches' slots come, and a second instance would queue the same touches and
    lose their claims (half the shared rate, measured). SQLite has one writer at a time,
    which is enough.
    """
    query = (
        select(Touch, Lead)
        .outerjoin(Lead, Lead.id == Touch.lead_id)
        .where(Touch.status == "planned", Touch.due_at <= now)
        .order_by(Touch.due_at, Touch.id)
        .limit(limit)
    )
    if exclude:
        query = query.where(Touch.id.not_in(sorted(exclude)))
    shared = session.get_bind().dialect.name == "postgresql"
    if shared:
        lease_over = or_(
            Touch.leased_until.is_(None),
            Touch.leased_until <= now,
            *((Touch.leased_by == holder,) if holder is not None else ()),
        )
        query = query.where(lease_over).with_for_update(skip_locked=True, of=Touch)
    pairs: list[tuple[Touch, Lead | None]] = [
        (touch, lead) for touch, lead in (await session.execute(query)).all()
    ]
    if shared and pairs:
        await session.execute(
            update(Touch)
            .where(Touch.id.in_([touch.id for touch, _ in pairs]))
            .values(leased_until=now + LEASE, leased_by=holder)
            .execution_options(synchronize_session=False)
        )
    return pairs


async def release_leases(session: AsyncSession, holder: str | None = None) -> None:
    """The leases of `holder` (an instance's graceful stop: the touches it queued and did
    not send are free for the others at once), or all of them (None: at start-up, after a
    crash)."""
    statement = update(Touch).where(Touch.status == "planned", Touch.leased_until.is_not(None))
    if holder is not None:
        statement = statement.where(Touch.leased_by == holder)
    await session.execute(
        statement.values(leased_until=None, leased_by=None).execution_options(
            synchronize_session=False
        )
    )


async def recent_sends(
    session: AsyncSession, lead_ids: Sequence[int], since: datetime
) -> dict[int, list[datetime]]:
    """Per lead, when its touches that count against the cap went out after `since`."""
    result: dict[int, list[datetime]] = {lead_id: [] for lead_id in lead_ids}
    if not lead_ids:
        return result
    query = select(Touch.lead_id, Touch.sent_at).where(
        Touch.lead_id.in_(lead_ids),
        Touch.status.in_(COUNTED_STATUSES),
        Touch.sent_at > since,
    )
    for lead_id, sent_at in (await session.execute(query)).all():
        if sent_at is not None:
            result[lead_id].append(sent_at)
    return result


async def claim_for_sending(
    session: AsyncSession, touch_ids: Sequence[int], now: datetime, *, test_runs_only: bool = False
) -> set[int]:
    """Marks touches "sending" (attempts + 1) if they are still planned and their lead is still
    in the same cycle and reachable; returns the ids claimed. Commit before the request leaves:
    from then on a crash leaves "sending", which recovery turns into "unknown", never a resend.
    """
    if not touch_ids:
        return set()
    still_current = exists().where(
        Lead.id == Touch.lead_id,
        # Cycle 0 is no conversation's (a broadcast): a reply does not make it obsolete.
        or_(Lead.cycle == Touch.cycle, Touch.cycle == 0),
        Lead.opted_out_at.is_(None),
        Lead.blocked_at.is_(None),
        Lead.deleted_at.is_(None),
        Lead.chat_id.is_not(None),
        *((Lead.is_test.is_(True), Lead.time_scale > 0) if test_runs_only else ()),
    )
    # Several instances on PostgreSQL: a row another instance is claiming right now is
    # skipped, not waited for (it is theirs); SQLite has one writer and ignores the clause.
    free = (
        select(Touch.id)
        .where(Touch.id.in_(touch_ids), Touch.status == "planned")
        .with_for_update(skip_locked=True)
    )
    statement = (
        update(Touch)
        .where(Touch.id.in_(free.scalar_subquery()), Touch.status == "planned", still_current)
        .values(status="sending", attempts=Touch.attempts + 1, sent_at=now)
        .returning(Touch.id)
        .execution_options(synchronize_session=False)
    )
    return set((await session.scalars(statement)).all())


async def cancel_touch(session: AsyncSession, touch_id: int, reason: str) -> None:
    await session.execute(
        update(Touch)
        .where(Touch.id == touch_id, Touch.status == "planned")
        .values(status="cancelled", reason=reason)
        .execution_options(synchronize_session=False)
    )


async def postpone_touch(session: AsyncSession, touch_id: int, until: datetime, why: str) -> None:
    await session.execute(
        update(Touch)
        .where(Touch.id == touch_id, Touch.status == "planned")
        .values(
            due_at=until,
            postponed=Touch.postponed + 1,
            reason=why,
            leased_until=None,
            leased_by=None,
        )
        .execution_options(synchronize_session=False)
    )


async def record_outcomes(
    session: AsyncSession, outcomes: Sequence[Outcome], now: datetime
) -> Mapping[str, int]:
    """Writes what Telegram answered for touches marked "sending"; returns counts by status."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
        values: dict[str, Any] = {"status": outcome.status, "error": outcome.error}
        if outcome.status == "sent":
            values["sent_at"] = outcome.at
            values["reason"] = None
        elif outcome.status == "planned":
            # Telegram refused before delivering (flood control): safe to try again later.
            # Free for any instance again once the pause is over, not when the lease ends.
            values.update(due_at=outcome.retry_at or now, postponed=Touch.postponed + 1,
                          reason="rate_limited", sent_at=None, leased_until=None,
                          leased_by=None)  # fmt: skip
        else:
            values["reason"] = outcome.reason
        await session.execute(
            update(Touch)
            .where(Touch.id == outcome.touch_id, Touch.status.in_(("sending", "unknown")))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if outcome.status == "sent":
            await session.execute(
                update(Lead)
                .where(Lead.id == outcome.lead_id)
                .values(last_outbound_at=outcome.at)
                .execution_options(synchronize_session=False)
            )
        elif outcome.reason == "blocked":
            await session.execute(
                update(Lead)
                .where(Lead.id == outcome.lead_id, Lead.blocked_at.is_(None))
                .values(blocked_at=outcome.at)
                .execution_options(synchronize_session=False)
            )
            await session.execute(
                update(Touch)
                .where(Touch.lead_id == outcome.lead_id, Touch.status == "planned")
                .values(status="cancelled", reason="blocked")
                .execution_options(synchronize_session=False)
            )
    return counts


@dataclass(frozen=True)
class Outcome:
    """What happened to one send: sent, failed (Telegram said no), unknown (no answer), or
    planned again (refused before delivery)."""

    touch_id: int
    lead_id: int
    status: Literal["sent", "failed", "unknown", "planned"]
    at: datetime
    reason: str | None = None
    error: str | None = None
    retry_at: datetime | None = None


async def recover_interrupted(session: AsyncSession) -> int:
    """Touches a crash left "sending" may have reached the lead: "unknown", never resent."""
    result = await session.execute(
        update(Touch)
        .where(Touch.status == "sending")
        .values(status="unknown", error="interrupted: the process stopped while sending")
        .execution_options(synchronize_session=False)
    )
    return _rowcount(result, 0)


def _rowcount(result: Any, fallback: int) -> int:
    count = getattr(result, "rowcount", None)
    return int(count) if isinstance(count, int) and count >= 0 else fallback
