"""Which touches the campaigns make due: per campaign step, an indexed range read of the
leads whose cycle started since the last planning pass, all steps in one statement, and
one insert into the touch queue."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, bindparam, delete, exists, literal, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CompoundSelect

from funnel.core.models import JobMark, Lead, Touch
from funnel.followups.touch_queue import take_write_lock
from funnel.script.schema import Campaign, Script

# How many leads one step plans per round: a first deploy over a large base catches up over
# several ticks instead of one long write transaction.
PLAN_CHUNK = 5000
MARK_PREFIX = "plan"
# Where the planning read puts the leads in a test run (the steps' reads are at 0, 1, ...).
TESTERS = -1


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
    """Lead filters of a campaign besides time: stage, reachability, exit reason, temperature.
    Whatever of the campaign picks its leads belongs in step_fingerprint too: the planning
    statement is kept and reused by that fingerprint."""
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

    Every step's range is read by one statement (a UNION ALL of the steps' reads), the new
    touches go in with one insert and the watermarks move with one upsert: the tick pays a
    round trip through the driver per statement, which costs far more than the index reads.
    The reads come before SQLite's write lock, taken only when there is something to write:
    an idle round then writes nothing. A lead committed between the reads and the writes is
    one the margin covers, as it covers concurrent planners on PostgreSQL (no lock there).
    """
    marks = {
        m.name: m.at
        for m in (
            await session.scalars(select(JobMark).where(JobMark.name.like(f"{MARK_PREFIX}:%")))
        ).all()
    }
    steps: list[_Step] = []
    for campaign in script.campaigns:
        offsets = campaign.offsets()
        for number in range(1, len(offsets) + 1):
            name = mark_name(campaign, number)
            steps.append(_Step(campaign, number, offsets, name, marks.get(name)))
    found = await _candidates(session, steps, now, margin, chunk)
    rows_: list[dict[str, Any]] = []
    advanced: dict[str, datetime] = {}
    for position, step in enumerate(steps):
        leads = found.get(position, [])
        rows_.extend(
            {"lead_id": lead_id, "campaign": step.campaign.id, "step": step.step,
             "cycle": cycle, "due_at": started + step.offset, "status": "planned",
             "attempts": 0, "postponed": 0, "created_at": now}
            for lead_id, cycle, started in leads
        )  # fmt: skip
        upper = now - step.offset
        # A full chunk means more leads wait below `upper`: continue from the last one.
        reached = max(started for _, _, started in leads) if len(leads) >= chunk else upper
        if step.mark is None or reached > step.mark:
            advanced[step.name] = reached
    testers = [lead_id for lead_id, _, _ in found.get(TESTERS, [])]
    if testers:
        rows_.extend(await _test_run_touches(session, script, now, testers))
    # Watermarks of campaign definitions no longer in force (edited or removed).
    stale = set(marks) - {step.name for step in steps}
    if not (rows_ or advanced or stale):
        return 0
    await take_write_lock(session)
    if stale:
        await session.execute(delete(JobMark).where(JobMark.name.in_(sorted(stale))))
    inserted = await _insert_touches(session, rows_)
    await _advance_marks(session, advanced)
    return inserted


@dataclass(frozen=True)
class _Step:
    """One campaign step as planning sees it: its delays and its watermark, if any."""

    campaign: Campaign
    step: int
    offsets: list[timedelta]
    name: str  # mark_name()
    mark: datetime | None

    @property
    def offset(self) -> timedelta:
        return self.offsets[self.step - 1]

    @property
    def later(self) -> timedelta | None:
        return self.offsets[self.step] if self.step < len(self.offsets) else None

    @property
    def skips_to_later(self) -> bool:
        """Whether leads already due for the next step are left to that step."""
        return self.later is not None and self.later > self.offset


async def _candidates(
    session: AsyncSession, steps: list[_Step], now: datetime, margin: timedelta, chunk: int
) -> dict[int, list[tuple[int, int, datetime]]]:
    """Per step (by position), up to `chunk` leads due for it and not yet planned, oldest
    cycle first: each step's read is its own ordered, limited subquery of one UNION ALL.
    The same statement names the leads in a test run (/test_funnel), under TESTERS."""
    if not steps:
        return {}
    params: dict[str, Any] = {"chunk": chunk}
    for position, step in enumerate(steps):
        params[f"upper_{position}"] = now - step.offset
        if step.mark is not None:
            params[f"lower_{position}"] = step.mark - margin
        if step.skips_to_later:
            assert step.later is not None
            params[f"later_{position}"] = now - step.later
    found: dict[int, list[tuple[int, int, datetime]]] = {}
    rows_ = (await session.execute(_candidates_statement(steps), params)).all()
    for position, lead_id, cycle, started in rows_:
        found.setdefault(position, []).append((lead_id, cycle, started))
    for leads in found.values():
        # A union keeps no order of its parts: the touches go in oldest cycle first.
        leads.sort(key=lambda lead: lead[2])
    return found


# Built statements by what shapes them: the steps' watermark names (a fingerprint of every
# lead filter) and which steps have a watermark yet. Building the union of ten steps' reads
# costs more Python than the statement costs the database; its times are parameters.
_STATEMENTS: dict[tuple[tuple[str, bool], ...], CompoundSelect] = {}
_STATEMENTS_KEPT = 16


def _candidates_statement(steps: list[_Step]) -> CompoundSelect:
    key = tuple((step.name, step.mark is not None) for step in steps)
    statement = _STATEMENTS.get(key)
    if statement is not None:
        return statement
    reads = []
    for position, step in enumerate(steps):
        # Test leads run on their own clock (_test_run_touches).
        conditions = [
            *_eligible(step.campaign),
            Lead.is_test.is_(False),
            Lead.cycle_started_at <= bindparam(f"upper_{position}"),
        ]
        if step.mark is not None:
            conditions.append(Lead.cycle_started_at > bindparam(f"lower_{position}"))
        if step.skips_to_later:
            conditions.append(Lead.cycle_started_at > bindparam(f"later_{position}"))
        planned = exists().where(
            Touch.lead_id == Lead.id,
            Touch.campaign == step.campaign.id,
            Touch.step == step.step,
            Touch.cycle == Lead.cycle,
        )
        read = (
            select(
                literal(position, Integer).label("position"),
                Lead.id,
                Lead.cycle,
                Lead.cycle_started_at,
            )
            .where(and_(*conditions), ~planned)
            .order_by(Lead.cycle_started_at)
            .limit(bindparam("chunk", type_=Integer))
            .subquery()
        )
        reads.append(select(read))
    # The index on time_scale alone finds them; with the campaign's conditions beside it a
    # database may prefer the stage index and read every lead in those stages, each tick.
    reads.append(
        select(
            literal(TESTERS, Integer).label("position"),
            Lead.id,
            Lead.cycle,
            Lead.cycle_started_at,
        ).where(Lead.time_scale > 0, Lead.is_test.is_(True))
    )
    if len(_STATEMENTS) >= _STATEMENTS_KEPT:
        _STATEMENTS.clear()  # scripts edited again and again: keep only the recent shapes
    statement = _STATEMENTS[key] = union_all(*reads)
    return statement


async def _insert_touches(session: AsyncSession, rows_: list[dict[str, Any]]) -> int:
    """Inserts planned touches, skipping those the unique key already holds; returns how many
    went in. RETURNING counts what was really inserted: a bulk insert's rowcount is not
    reliable on every driver (asyncpg gives none)."""
    if not rows_:
        return 0
    insert = _insert(session)
    statement = (
        insert(Touch)
        .on_conflict_do_nothing(index_elements=["lead_id", "campaign", "step", "cycle"])
        .returning(Touch.id)
    )
    return len((await session.execute(statement, rows_)).all())


async def _test_run_touches(
    session: AsyncSession, script: Script, now: datetime, testers: Sequence[int]
) -> list[dict[str, Any]]:
    """The touches of `testers`, leads in a test run (/test_funnel): each step due after its
    delay divided by the lead's time scale, and every step in turn (the admin wants to see
    each message, not only the latest one). The unique key keeps this idempotent."""
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
    return rows_


async def _advance_marks(session: AsyncSession, marks: dict[str, datetime]) -> None:
    """Moves watermarks forward only: a slower concurrent planner never moves one back. One
    statement for them all, in name order so concurrent planners lock the rows alike."""
    if not marks:
        return
    insert = _insert(session)
    statement = insert(JobMark).values(
        [{"name": name, "at": at} for name, at in sorted(marks.items())]
    )
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={"at": statement.excluded.at},
        where=JobMark.at < statement.excluded.at,
    )
    await session.execute(statement)
