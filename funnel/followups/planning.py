"""Nurture, win-back and post-sale campaigns: which touches indexed SQL plans into the outbox,
what to do with a due touch (send, cancel, postpone), and what the touch says."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import JobMark, Lead, Touch
from funnel.core.telegram_text import fit_html
from funnel.dialogue import messages, qualification
from funnel.dialogue.replies import Btn, Reply, rows
from funnel.followups.sending_rules import in_window, send_allowed_at
from funnel.script.schema import Campaign, CampaignStep, Script

# Statuses whose send may have reached the lead: they count against the frequency cap.
COUNTED_STATUSES = ("sending", "sent", "unknown")
# How many leads one step plans per round: a first deploy over a large base catches up over
# several ticks instead of one long write transaction.
PLAN_CHUNK = 5000
MARK_PREFIX = "plan"

CancelReason = Literal[
    "forgotten",
    "blocked",
    "opted_out",
    "campaign_removed",
    "stage_changed",
    "replied",
    "not_eligible",
]


# -- planning -----------------------------------------------------------------------------


def mark_name(campaign_id: str, step: int) -> str:
    """The job_marks row remembering how far `cycle_started_at` has been planned for a step."""
    return f"{MARK_PREFIX}:{campaign_id}:{step}"


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
    for campaign in script.campaigns:
        offsets = campaign.offsets()
        for index, offset in enumerate(offsets):
            step = index + 1
            later = offsets[index + 1] if index + 1 < len(offsets) else None
            name = mark_name(campaign.id, step)
            upper = now - offset
            conditions = [*_eligible(campaign), Lead.cycle_started_at <= upper]
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
    return inserted


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


def _rowcount(result: Any, fallback: int) -> int:
    count = getattr(result, "rowcount", None)
    return int(count) if isinstance(count, int) and count >= 0 else fallback


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


# -- deciding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    pass


@dataclass(frozen=True)
class Cancel:
    reason: CancelReason


@dataclass(frozen=True)
class Postpone:
    until: datetime
    why: Literal["quiet_hours", "frequency_cap"]


Decision = Send | Cancel | Postpone


def campaign_step(script: Script, campaign_id: str, step: int) -> CampaignStep | None:
    campaign = script.campaign(campaign_id)
    if campaign is None or not 1 <= step <= len(campaign.steps):
        return None
    return campaign.steps[step - 1]


def decide(
    touch: Touch,
    lead: Lead | None,
    script: Script,
    now: datetime,
    sent: Iterable[datetime],
    zone: ZoneInfo,
) -> Decision:
    """What to do with a due touch right before sending it.

    `sent` are the times of the lead's recent sends that count against the frequency cap
    (including the ones already chosen in this round).
    """
    if lead is None or lead.deleted_at is not None or lead.chat_id is None:
        return Cancel("forgotten")
    if lead.blocked_at is not None:
        return Cancel("blocked")
    if lead.opted_out_at is not None:
        return Cancel("opted_out")
    campaign = script.campaign(touch.campaign)
    if campaign is None or campaign_step(script, touch.campaign, touch.step) is None:
        return Cancel("campaign_removed")
    if lead.stage not in campaign.stages:
        return Cancel("stage_changed")
    if lead.cycle != touch.cycle:
        return Cancel("replied")
    if (campaign.exit_reasons and lead.exit_reason not in campaign.exit_reasons) or (
        campaign.temperatures and lead.temperature not in campaign.temperatures
    ):
        return Cancel("not_eligible")
    history = list(sent)
    allowed = send_allowed_at(now, history, script.send_window, script.frequency_cap, zone)
    if allowed <= now:
        return Send()
    why: Literal["quiet_hours", "frequency_cap"] = (
        "frequency_cap" if in_window(now, script.send_window, zone) else "quiet_hours"
    )
    return Postpone(allowed, why)


# -- rendering ----------------------------------------------------------------------------


def stop_button(script: Script) -> Btn:
    """Every unsolicited message offers a way out."""
    return Btn(script.texts.stop_button, "system", "stop")


def render_touch(script: Script, campaign: Campaign, step: int, lead: Lead) -> Reply:
    """The touch's text for this lead, with the open question's buttons when the step asks
    for them (a tap answers the question as usual), the step's buttons, then the stop button."""
    spec = campaign.steps[step - 1]
    question = script.question(lead.position)
    extra: dict[str, str] = {}
    if question is not None:
        number, total = qualification.progress(script, question)
        extra = {"question_number": str(number), "questions_total": str(total)}
    text = fit_html(messages.text_for(script, lead, spec.text, extra))
    layout: list[tuple[Btn, ...]] = []
    if spec.with_question and question is not None:
        layout.extend(messages.question_buttons(question))
    layout.extend(rows(messages.script_buttons(script, spec.buttons)))
    layout.append((stop_button(script),))
    return Reply(text, tuple(layout))


# -- delivery bookkeeping -----------------------------------------------------------------


async def due_touches(
    session: AsyncSession, now: datetime, limit: int, exclude: Collection[int] = ()
) -> list[tuple[Touch, Lead | None]]:
    """Planned touches whose time has come, oldest first, with their leads; `exclude` names
    those already on their way (waiting for a slot, still planned).

    On PostgreSQL the rows are locked with SKIP LOCKED so instances share the work; SQLite
    has one writer at a time, which is enough.
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
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Touch)
    return [(touch, lead) for touch, lead in (await session.execute(query)).all()]


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
    session: AsyncSession, touch_ids: Sequence[int], now: datetime
) -> set[int]:
    """Marks touches "sending" (attempts + 1) if they are still planned and their lead is still
    in the same cycle and reachable; returns the ids claimed. Commit before the request leaves:
    from then on a crash leaves "sending", which recovery turns into "unknown", never a resend.
    """
    if not touch_ids:
        return set()
    still_current = exists().where(
        Lead.id == Touch.lead_id,
        Lead.cycle == Touch.cycle,
        Lead.opted_out_at.is_(None),
        Lead.blocked_at.is_(None),
        Lead.deleted_at.is_(None),
        Lead.chat_id.is_not(None),
    )
    statement = (
        update(Touch)
        .where(Touch.id.in_(touch_ids), Touch.status == "planned", still_current)
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
        .values(due_at=until, postponed=Touch.postponed + 1, reason=why)
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
            values.update(due_at=outcome.retry_at or now, postponed=Touch.postponed + 1,
                          reason="rate_limited", sent_at=None)  # fmt: skip
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
