"""Which touches the campaigns make due: per campaign step, one indexed INSERT .. SELECT
into the touch queue over the leads whose cycle started since the last planning pass."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import JobMark, Lead, Touch
from funnel.followups.touch_queue import take_write_lock
from funnel.script.schema import Campaign, Script

# How many leads one step plans per round: a first deploy over a large base catches up over
# several ticks instead of one long write transaction.
PLAN_CHUNK = 5000
MARK_PREFIX = "plan"


def mark_name(campaign: Campaign, step: int) -> str:
    """The job_marks row remembering how far `cycle_started_at` has been planned for a step
    of this very definition of the campaign.

    The name carries a fingerprint of what picks the step's leads (stages, exit reasons,
    temperatures, the step's delay and the next one's): once a marketer edits any of that,
    the step gets a new, empty watermark and planning looks again at every lead already in
    those stages, so a lead that the edited campaign now covers is planned too. The unique
    key (lead, campaign, step, cycle) keeps that second look from doubling a touch.
    """
    return f"{MARK_PREFIX}:{campaign.id}:{step}:{step_fingerprint(campaign, step)}"


def step_fingerprint(campaign: Campaign, step: int) -> str:
    offsets = campaign.offsets()
    index = step - 1
    selection = {
        "stages": sorted(campaign.stages),
        "exit_reasons": sorted(campaign.exit_reasons),
        "temperatures": sorted(campaign.temperatures),
        "offset": offsets[index].total_seconds(),
        "later": offsets[index + 1].total_seconds() if index + 1 < len(offsets) else None,
    }
    digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
    return digest[:12]


def _insert(session: AsyncSession) -> Any:
    """INSERT .. ON CONFLICT of the session's dialect (both spell it the same way)."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _eligible(campaign: Campaign) -> list[Any]:
    """Lead filters of a campaign besides time: stage, reachability, exit reason, temperature."""
    conditions: list[Any] = [
        Lead.stage.in_(campaign.stages),
        Lead.opted_out_at.is_(None),
        Lead.blocked_at.is_(None),
        Lead.deleted_at.is_(None),
        Lead.chat_id.is_not(None),
    ]
    if campaign.exit_reasons:
        conditions.append(Lead.exit_reason.in_(campaign.exit_reasons))
    if campaign.temperatures:
        conditions.append(Lead.temperature.in_(campaign.temperatures))
    return conditions


async def plan_touches(
    session: AsyncSession,
    script: Script,
    now: datetime,
    *,
    margin: timedelta = timedelta(minutes=2),
    chunk: int = PLAN_CHUNK,
) -> int:
    """Inserts the touches campaign rules make due at `now`; returns how many were new.

    Per step, only leads whose cycle started in (watermark - margin, now - offset] are
    looked at (index ix_leads_stage_cycle_started_at), so a round with nothing due costs
    one short index range per step however many leads there are. The margin re-reads leads
    whose cycle began just before the watermark but whose transaction committed after it.
    A lead for whom a later step of the same campaign is already due gets only that later
    step (after downtime the lead hears the latest message, not the whole sequence at once).
    The unique key (lead, campaign, step, cycle) makes this idempotent and safe to run from
    several instances at once. The caller commits.
    """
    await take_write_lock(session)
    marks = {
        m.name: m.at
        for m in (
            await session.scalars(select(JobMark).where(JobMark.name.like(f"{MARK_PREFIX}:%")))
        ).all()
    }
    inserted = 0
    current = {
        mark_name(campaign, step)
        for campaign in script.campaigns
        for step in range(1, len(campaign.steps) + 1)
    }
    stale = set(marks) - current
    if stale:
        # Watermarks of campaign definitions no longer in force (edited or removed).
        await session.execute(delete(JobMark).where(JobMark.name.in_(sorted(stale))))
    for campaign in script.campaigns:
        offsets = campaign.offsets()
        for index, offset in enumerate(offsets):
            step = index + 1
            later = offsets[index + 1] if index + 1 < len(offsets) else None
            name = mark_name(campaign, step)
            upper = now - offset
            # Test leads run on their own clock (plan_test_leads).
            conditions = [
                *_eligible(campaign),
                Lead.is_test.is_(False),
                Lead.cycle_started_at <= upper,
            ]
            mark = marks.get(name)
            if mark is not None:
                conditions.append(Lead.cycle_started_at > mark - margin)
            if later is not None and later > offset:
                conditions.append(Lead.cycle_started_at > now - later)
            planned = exists().where(
                Touch.lead_id == Lead.id,
                Touch.campaign == campaign.id,
                Touch.step == step,
                Touch.cycle == Lead.cycle,
            )
            query = (
                select(Lead.id, Lead.cycle, Lead.cycle_started_at)
                .where(and_(*conditions), ~planned)
                .order_by(Lead.cycle_started_at)
                .limit(chunk)
            )
            found = (await session.execute(query)).all()
            if found:
                rows_ = [
                    {
                        "lead_id": lead_id,
                        "campaign": campaign.id,
                        "step": step,
                        "cycle": cycle,
                        "due_at": started + offset,
                        "status": "planned",
                        "attempts": 0,
                        "postponed": 0,
                        "created_at": now,
                    }
                    for lead_id, cycle, started in found
                ]
                insert = _insert(session)
                # RETURNING counts what was really inserted: a bulk insert's rowcount is
                # not reliable on every driver (asyncpg gives none).
                statement = (
                    insert(Touch)
                    .on_conflict_do_nothing(
                        index_elements=["lead_id", "campaign", "step", "cycle"]
                    )
                    .returning(Touch.id)
                )
                result = await session.execute(statement, rows_)
                inserted += len(result.all())
            # A full chunk means more leads wait below `upper`: continue from the last one.
            reached = found[-1][2] if len(found) >= chunk else upper
            if mark is None or reached > mark:
                await _advance_mark(session, name, reached)
    return inserted + await plan_test_leads(session, script, now)


async def plan_test_leads(session: AsyncSession, script: Script, now: datetime) -> int:
    """The touches of leads in a test run (/test_funnel): each step due after its delay
    divided by the lead's time scale, and every step in turn (the admin wants to see each
    message, not only the latest one). Test leads are a handful, found by the time_scale
    index; the same unique key keeps this idempotent."""
    # The index on time_scale alone finds them; with the campaign's conditions beside it a
    # database may prefer the stage index and read every lead in those stages, each tick.
    testers = (
        await session.scalars(select(Lead.id).where(Lead.time_scale > 0, Lead.is_test.is_(True)))
    ).all()
    if not testers:
        return 0
    rows_: list[dict[str, Any]] = []
    for campaign in script.campaigns:
        offsets = campaign.offsets()
        query = select(Lead.id, Lead.cycle, Lead.cycle_started_at, Lead.time_scale).where(
            Lead.id.in_(testers), *_eligible(campaign)
        )
        for lead_id, cycle, started, scale in (await session.execute(query)).all():
            for step, offset in enumerate(offsets, 1):
                due_at = started + offset / float(scale or 1)
                if due_at > now:
                    break
                rows_.append(
                    {"lead_id": lead_id, "campaign": campaign.id, "step": step, "cycle": cycle,
                     "due_at": due_at, "status": "planned", "attempts": 0, "postponed": 0,
                     "created_at": now}
                )  # fmt: skip
    if not rows_:
        return 0
    insert = _insert(session)
    statement = (
        insert(Touch)
        .on_conflict_do_nothing(index_elements=["lead_id", "campaign", "step", "cycle"])
        .returning(Touch.id)
    )
    return len((await session.execute(statement, rows_)).all())


async def _advance_mark(session: AsyncSession, name: str, at: datetime) -> None:
    """Moves a watermark forward only: a slower concurrent planner never moves it back."""
    insert = _insert(session)
    statement = insert(JobMark).values(name=name, at=at)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={"at": statement.excluded.at},
        where=JobMark.at < statement.excluded.at,
    )
    await session.execute(statement)
