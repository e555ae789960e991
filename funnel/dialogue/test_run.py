"""A test run (/test_funnel): an admin goes through the whole script as a prospect, with the
campaigns' delays divided by a time scale stored on the lead, so days of nurture arrive in
seconds. The lead is marked as a test lead: no report, rollup, export or CRM counts it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.clock import Clock
from funnel.core.models import Lead
from funnel.core.store import Profile
from funnel.dialogue import messages, qualification
from funnel.dialogue.replies import Reply
from funnel.script.schema import Script

# An hour of the script in a second: the first nudge (1 h) after a second, a day in 24 s.
DEFAULT_SCALE = 3600.0
# A 30-day win-back in under a second at most; faster than the tick is pointless.
MAX_SCALE = 10_000_000.0
SOURCE = "test_funnel"


@dataclass(frozen=True)
class TestRun:
    lead_id: int
    scale: float
    reply: Reply


def parse_scale(text: str | None) -> float:
    """The time scale an admin typed ("3600", "x600"); ValueError in words otherwise."""
    if text is None or not text.strip():
        return DEFAULT_SCALE
    raw = text.strip().lower().removeprefix("x")
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError("time scale is a number, e.g. 3600") from None
    if not 1 <= scale <= MAX_SCALE:  # also refuses nan and inf
        raise ValueError(f"time scale is between 1 and {MAX_SCALE:,.0f}")
    return scale


async def start_test_run(
    session: AsyncSession, script: Script, clock: Clock, profile: Profile, scale: float
) -> TestRun:
    """Makes the admin's lead a test lead (creating it if needed) and starts the script
    from its first question and stage; touches planned before are cancelled. The caller
    commits, then sends the reply."""
    now = clock.now()
    first = qualification.first_question(script)
    lead = await store.lead_by_user(session, profile.user_id)
    if lead is None:
        lead = store.new_lead(
            profile, source=SOURCE, stage=script.roles.start, position=first.id,
            version=script.label, at=now,
        )  # fmt: skip
        # Marked before its insert: the rollups never count it, not even for a moment.
        lead.is_test = True
        lead.time_scale = scale
        session.add(lead)
        await session.flush()
        store.log_entry(session, lead, now)
    else:
        # Its own statement, so the database sees a lead turn into a test lead and takes
        # back what the rollups counted for it.
        await session.execute(
            update(Lead).where(Lead.id == lead.id).values(is_test=True, time_scale=scale)
        )
        await session.refresh(lead)
        store.refresh_profile(lead, profile)
        await store.cancel_pending_touches(session, lead.id, "test_restarted")
        await store.supersede_answers(session, lead.id)
        lead.position = first.id
        lead.score = 0
        lead.temperature = None
        lead.exit_reason = None
        lead.opted_out_at = None
        lead.blocked_at = None
        if lead.stage != script.roles.start:
            store.log_stage(session, lead, script.roles.start, "test_funnel", now)
        store.start_cycle(lead, now)
        lead.last_inbound_at = now
    reply = messages.ask(script, lead, first, intro=script.texts.welcome)
    return TestRun(lead.id, scale, reply)


async def stop_test_run(session: AsyncSession, user_id: int) -> bool:
    """Ends the admin's test run: its planned touches are cancelled and its clock is the
    real one again; it stays a test lead (out of every report). False when none runs."""
    lead = await store.lead_by_user(session, user_id)
    if lead is None or not lead.is_test or lead.time_scale is None:
        return False
    lead.time_scale = None
    await store.cancel_pending_touches(session, lead.id, "test_stopped")
    return True
