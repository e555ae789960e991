"""Broadcasts: the admin's draft (every step stored, so a restart resumes it), the launch, the
recipients written in batches by the tick, the decision at send time, and the report.

A broadcast is delivered as touches of the campaign "broadcast:<id>", step 1, cycle 0, in
the same outbox as the follow-ups: the engine's claim, rate limits, send window, frequency cap,
opt-out and blocked users hold for it as for any touch. Cycle 0 is no conversation's cycle:
a lead's reply does not make a broadcast obsolete the way it ends a nurture sequence.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import Exists

from funnel.broadcasts.segments import Segment, parse_segment, segment_lead_ids
from funnel.core.errors import InputError
from funnel.core.models import Answer, Broadcast, BroadcastRecipient, Lead, StageEvent, Touch
from funnel.core.telegram_text import TELEGRAM_LIMIT, check_telegram_html, visible_length
from funnel.followups.decision import Cancel, Decision, Postpone, Send
from funnel.followups.sending_rules import in_window, send_allowed_at
from funnel.script.schema import PLACEHOLDER, Script, render

PREFIX = "broadcast:"
# The touch's cycle: no conversation's (a lead's cycle starts at 1).
CYCLE = 0
STEP = 1
# Replies and stage moves this long after the send count for the broadcast.
REPORT_WINDOW = timedelta(days=7)
MAX_BUTTONS = 6
MAX_LABEL = 64
MAX_URL = 512
MAX_BUTTON_LINE = 700
# A launch may be planned this far ahead.
MAX_AHEAD = timedelta(days=366)
BATCH = 1000
MAX_SOURCE_CHARS = 8 * TELEGRAM_LIMIT
PLACEHOLDERS = ("first_name", "school", "course")
# A name fills {first_name}: the longest one Telegram shows must still fit.
_LONGEST_NAME = "x" * 64
_URL = re.compile(r"^(https?://[^\s<>\"]+|tg://[^\s<>\"]+)$", re.IGNORECASE)
_WHEN = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{1,2}):(\d{2})$")

Step = Literal["segment", "text", "buttons", "split", "time", "confirm"]
STEPS: tuple[Step, ...] = ("segment", "text", "buttons", "split", "time", "confirm")
Arm = Literal["a", "b"]


def campaign_of(broadcast_id: int) -> str:
    return f"{PREFIX}{broadcast_id}"


def broadcast_of(campaign: str) -> int | None:
    """The broadcast a touch's campaign names, None for a script's campaign."""
    if not campaign.startswith(PREFIX):
        return None
    number = campaign[len(PREFIX) :]
    return int(number) if number.isdigit() else None


def arm_of(broadcast_id: int, lead_id: int, split: bool) -> Arm:
    """Sticky and reproducible: a hash of the broadcast and the lead, never random()."""
    if not split:
        return "a"
    digest = hashlib.sha256(f"broadcast:{broadcast_id}:lead:{lead_id}".encode()).digest()
    return "a" if digest[0] % 2 == 0 else "b"


# -- what the admin types -------------------------------------------------------------------


def check_text(text: str) -> str:
    """A broadcast's text: Telegram HTML, known placeholders, within Telegram's length once
    filled in; InputError otherwise."""
    text = text.strip()
    if not text:
        raise InputError("broadcast.text_empty")
    if len(text) > MAX_SOURCE_CHARS:
        # Entities make the source longer than what the reader sees, never this much longer.
        raise InputError("broadcast.text_too_long", length=len(text), limit=TELEGRAM_LIMIT)
    unknown = sorted(set(PLACEHOLDER.findall(text)) - set(PLACEHOLDERS))
    if unknown:
        known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
        raise InputError("broadcast.text_placeholder", name="{" + unknown[0] + "}", known=known)
    filled = render(text, {"first_name": _LONGEST_NAME, "school": "", "course": ""})
    problem = check_telegram_html(filled)
    if problem:
        raise InputError("broadcast.text_html", problem=problem)
    length = visible_length(filled)
    if length > TELEGRAM_LIMIT:
        raise InputError("broadcast.text_too_long", length=length, limit=TELEGRAM_LIMIT)
    return text


def parse_buttons(text: str) -> list[dict[str, Any]]:
    """One button a line: `Label | https://…` (a link) or `Label | reply` (a quick reply,
    at most one)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("broadcast.buttons_empty")
    if len(lines) > MAX_BUTTONS:
        raise InputError("broadcast.too_many_buttons", limit=MAX_BUTTONS)
    buttons: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        label, bar, target = (part.strip() for part in line.partition("|"))
        if len(line) > MAX_BUTTON_LINE or not bar or not label or not target:
            raise InputError("broadcast.button_format", line=number)
        if len(label) > MAX_LABEL:
            raise InputError("broadcast.button_label", line=number, limit=MAX_LABEL)
        if target.lower() == "reply":
            if any(b.get("reply") for b in buttons):
                raise InputError("broadcast.two_reply_buttons", line=number)
            buttons.append({"label": label, "reply": True})
        elif len(target) <= MAX_URL and _URL.match(target):
            buttons.append({"label": label, "url": target})
        else:
            raise InputError("broadcast.button_url", line=number)
    return buttons


def parse_send_at(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """`YYYY-MM-DD HH:MM` in the school's time zone, as UTC; not in the past, within a year."""
    match = _WHEN.match(text.strip())
    if match is None:
        raise InputError("broadcast.time_format")
    year, month, day, hour, minute = (int(part) for part in match.groups())
    try:
        local = datetime(year, month, day, hour, minute, tzinfo=zone)
    except ValueError:
        raise InputError("broadcast.time_format") from None
    moment = local.astimezone(now.tzinfo)
    if moment < now - timedelta(minutes=1):
        raise InputError("broadcast.time_past")
    if moment > now + MAX_AHEAD:
        raise InputError("broadcast.time_too_far")
    return max(moment, now)


# -- the draft ------------------------------------------------------------------------------


async def draft_of(session: AsyncSession, admin_id: int) -> Broadcast | None:
    """The admin's open draft, if any."""
    query = (
        select(Broadcast)
        .where(Broadcast.admin_id == admin_id, Broadcast.status == "draft")
        .order_by(Broadcast.id.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


async def open_draft(session: AsyncSession, admin_id: int, now: datetime) -> Broadcast:
    """A new draft; an older open one of this admin is dropped (one flow at a time)."""
    await session.execute(
        update(Broadcast)
        .where(Broadcast.admin_id == admin_id, Broadcast.status == "draft")
        .values(status="cancelled", revision=Broadcast.revision + 1)
        .execution_options(synchronize_session=False)
    )
    draft = Broadcast(
        admin_id=admin_id, status="draft", step="segment", revision=1, buttons=[],
        recipients=0, cursor=0, created_at=now,
    )  # fmt: skip
    session.add(draft)
    await session.flush()
    return draft


def go_to(draft: Broadcast, step: Step) -> None:
    """Moves the draft to `step`; every button shown for an earlier step becomes stale."""
    draft.step = step
    draft.revision += 1


async def launch(
    session: AsyncSession, broadcast: Broadcast, now: datetime, expected: int
) -> None:
    """Confirmed: the tick writes its recipients once `send_at` has come."""
    broadcast.status = "scheduled"
    broadcast.step = "confirm"
    broadcast.revision += 1
    broadcast.expected = expected
    broadcast.launched_at = now
    if broadcast.send_at is None or broadcast.send_at < now:
        broadcast.send_at = now


async def cancel(session: AsyncSession, broadcast: Broadcast) -> int:
    """Stops a draft, a scheduled or a running broadcast; returns the sends cancelled."""
    broadcast.status = "cancelled"
    broadcast.revision += 1
    result = await session.execute(
        update(Touch)
        .where(Touch.campaign == campaign_of(broadcast.id), Touch.status == "planned")
        .values(status="cancelled", reason="campaign_removed")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def schedule(
    session: AsyncSession,
    segment: Segment,
    text: str,
    send_at: datetime,
    now: datetime,
    expected: int,
    admin_id: int | None = None,
) -> Broadcast:
    """A broadcast launched in one go (the command line)."""
    broadcast = Broadcast(
        admin_id=admin_id, status="draft", step="confirm", revision=1, segment=segment.text,
        text_a=check_text(text), buttons=[], send_at=send_at, recipients=0, cursor=0,
        created_at=now,
    )  # fmt: skip
    session.add(broadcast)
    await session.flush()
    await launch(session, broadcast, now, expected)
    return broadcast


# -- the tick: recipients in batches --------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """One batch of recipients: which broadcast, how many, and whether more remain."""

    broadcast_id: int
    recipients: int
    more: bool


def _waiting(now: datetime) -> Any:
    """Broadcasts whose time has come and whose recipients are not all written yet."""
    return and_(Broadcast.status.in_(("scheduled", "launching")), Broadcast.send_at <= now)


def any_waiting(now: datetime) -> Exists:
    """Whether write_recipients has work, as an EXISTS test the tick reads without locks
    (beside its other checks), so an idle tick skips the writer's transaction."""
    return select(Broadcast.id).where(_waiting(now)).exists()


async def write_recipients(
    session: AsyncSession, script: Script, now: datetime, batch: int = BATCH
) -> Written | None:
    """Writes the next batch of recipients (and their touches, due now) of a broadcast whose
    time has come; None when none is waiting. The cursor moves in the same transaction, so
    after a restart writing resumes exactly after the last lead written."""
    query = (
        select(Broadcast).where(_waiting(now)).order_by(Broadcast.send_at, Broadcast.id).limit(1)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    broadcast = (await session.scalars(query)).first()
    if broadcast is None:
        return None
    try:
        segment = parse_segment(broadcast.segment or "", script)
    except InputError:
        # The script changed under it (a stage or question gone): nobody can be chosen.
        broadcast.status = "cancelled"
        broadcast.materialised_at = now
        return Written(broadcast.id, 0, False)
    lead_ids = await segment_lead_ids(session, segment, now, broadcast.cursor, batch)
    split = broadcast.text_b is not None
    campaign = campaign_of(broadcast.id)
    for lead_id in lead_ids:
        arm = arm_of(broadcast.id, lead_id, split)
        session.add(BroadcastRecipient(broadcast_id=broadcast.id, lead_id=lead_id, arm=arm))
        session.add(
            Touch(
                lead_id=lead_id, campaign=campaign, step=STEP, cycle=CYCLE, due_at=now,
                status="planned", attempts=0, postponed=0, created_at=now,
            )
        )  # fmt: skip
    if lead_ids:
        broadcast.cursor = lead_ids[-1]
        broadcast.recipients += len(lead_ids)
    more = len(lead_ids) == batch
    broadcast.status = "launching" if more else "running"
    if not more:
        broadcast.materialised_at = now
    return Written(broadcast.id, len(lead_ids), more)


# -- send time ------------------------------------------------------------------------------


async def broadcasts_by_id(session: AsyncSession, ids: Iterable[int]) -> dict[int, Broadcast]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await session.scalars(select(Broadcast).where(Broadcast.id.in_(wanted)))
    return {b.id: b for b in rows}


def decide(
    lead: Lead | None,
    broadcast: Broadcast | None,
    script: Script,
    now: datetime,
    sent: Iterable[datetime],
    zone: ZoneInfo,
) -> Decision:
    """Like a follow-up's decision (funnel/followups/decision.py) without the campaign's
    stage and cycle: the segment was chosen at launch; opt-out, blocks, the window and the
    frequency cap are checked again right before the send."""
    if lead is None or lead.deleted_at is not None or lead.chat_id is None:
        return Cancel("forgotten")
    if lead.blocked_at is not None:
        return Cancel("blocked")
    if lead.opted_out_at is not None:
        return Cancel("opted_out")
    if broadcast is None or broadcast.status == "cancelled" or not broadcast.text_a:
        return Cancel("campaign_removed")
    history = list(sent)
    allowed = send_allowed_at(now, history, script.send_window, script.frequency_cap, zone)
    if allowed <= now:
        return Send()
    why: Literal["quiet_hours", "frequency_cap"] = (
        "frequency_cap" if in_window(now, script.send_window, zone) else "quiet_hours"
    )
    return Postpone(allowed, why)


def text_for(broadcast: Broadcast, arm: Arm, script: Script, first_name: str | None) -> str:
    """The arm's text with its placeholders filled (escaped)."""
    template = broadcast.text_b if arm == "b" and broadcast.text_b else broadcast.text_a or ""
    values = {"first_name": first_name or "", "school": script.school, "course": script.course}
    return render(template, values)


# -- the quick reply button -----------------------------------------------------------------


async def record_quick_reply(
    session: AsyncSession, broadcast_id: int, lead_id: int, now: datetime
) -> bool:
    """The lead tapped the broadcast's reply button; False when the lead is no recipient of it
    (a forged or foreign button). A second tap keeps the first time."""
    recipient = await session.get(BroadcastRecipient, (broadcast_id, lead_id))
    if recipient is None:
        return False
    if recipient.replied_at is None:
        recipient.replied_at = now
    return True


# -- progress and report --------------------------------------------------------------------


@dataclass
class Progress:
    """Where the sends of a broadcast stand."""

    planned: int = 0
    sent: int = 0
    blocked: int = 0
    skipped: int = 0
    failed: int = 0
    # May or may not have arrived (no answer from Telegram): never resent.
    unknown: int = 0

    def add(self, status: str, reason: str | None, n: int) -> None:
        if status in ("planned", "sending"):
            self.planned += n
        elif status == "sent":
            self.sent += n
        elif reason == "blocked":
            self.blocked += n
        elif status == "cancelled":
            self.skipped += n
        elif status == "unknown":
            self.unknown += n
        else:
            self.failed += n

    @property
    def total(self) -> int:
        return self.planned + self.sent + self.blocked + self.skipped + self.failed + self.unknown


def state_of(broadcast: Broadcast, progress: Progress) -> str:
    """draft, scheduled, launching, running, finished or cancelled."""
    if broadcast.status == "running" and progress.planned == 0:
        return "finished"
    return broadcast.status


async def progress_of(session: AsyncSession, broadcast_ids: Sequence[int]) -> dict[int, Progress]:
    result = {broadcast_id: Progress() for broadcast_id in broadcast_ids}
    if not broadcast_ids:
        return result
    campaigns = [campaign_of(b) for b in broadcast_ids]
    query = (
        select(Touch.campaign, Touch.status, Touch.reason, func.count())
        .where(Touch.campaign.in_(campaigns))
        .group_by(Touch.campaign, Touch.status, Touch.reason)
    )
    for campaign, status, reason, count in (await session.execute(query)).all():
        broadcast_id = broadcast_of(campaign)
        if broadcast_id in result:
            result[broadcast_id].add(status, reason, int(count))
    return result


@dataclass
class ArmReport:
    arm: Arm
    recipients: int = 0
    delivered: int = 0
    blocked: int = 0
    replied: int = 0
    converted: int = 0


@dataclass
class BroadcastReport:
    broadcast: Broadcast
    state: str
    progress: Progress
    arms: list[ArmReport] = field(default_factory=list)
    window: timedelta = REPORT_WINDOW


async def broadcast_report(
    session: AsyncSession, broadcast: Broadcast, script: Script, now: datetime
) -> BroadcastReport:
    """Delivered, blocked, replied (a message or the reply button within the window after
    the send) and converted (a move to a funnel stage within the window), per A/B arm."""
    progress = (await progress_of(session, [broadcast.id]))[broadcast.id]
    arms: dict[str, ArmReport] = {"a": ArmReport("a")}
    if broadcast.text_b is not None:
        arms["b"] = ArmReport("b")
    rows = (
        await session.execute(
            select(
                BroadcastRecipient.lead_id,
                BroadcastRecipient.arm,
                BroadcastRecipient.replied_at,
                Touch.status,
                Touch.reason,
                Touch.sent_at,
                Touch.replied_at,
                Lead.last_inbound_at,
            )
            .join(Lead, Lead.id == BroadcastRecipient.lead_id)
            .outerjoin(
                Touch,
                (Touch.lead_id == BroadcastRecipient.lead_id)
                & (Touch.campaign == campaign_of(broadcast.id))
                & (Touch.step == STEP)
                & (Touch.cycle == CYCLE),
            )
            .where(BroadcastRecipient.broadcast_id == broadcast.id)
        )
    ).all()
    sent_at: dict[int, datetime] = {}
    arm_of_lead: dict[int, str] = {}
    replied: set[int] = set()
    for lead_id, arm, tapped, status, reason, sent, touch_replied, last_inbound in rows:
        stats = arms.setdefault(arm, ArmReport("b" if arm == "b" else "a"))
        stats.recipients += 1
        arm_of_lead[lead_id] = arm
        if status == "sent" and sent is not None:
            stats.delivered += 1
            sent_at[lead_id] = sent
            if tapped is not None or touch_replied is not None or _within(sent, last_inbound):
                replied.add(lead_id)
        elif reason == "blocked":
            stats.blocked += 1
    moved: set[int] = set()
    if sent_at:
        exits = [s.id for s in script.exit_stages]
        earliest = min(sent_at.values())
        ids = sorted(sent_at)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            events = await session.execute(
                select(StageEvent.lead_id, StageEvent.at, StageEvent.to_stage).where(
                    StageEvent.lead_id.in_(chunk), StageEvent.at > earliest
                )
            )
            for lead_id, at, stage in events.all():
                if _within(sent_at[lead_id], at) and stage not in exits:
                    moved.add(lead_id)
            # An answer is a message from the lead even when the last one came later.
            answers = await session.execute(
                select(Answer.lead_id, Answer.at).where(
                    Answer.lead_id.in_(chunk), Answer.at > earliest
                )
            )
            for lead_id, at in answers.all():
                if _within(sent_at[lead_id], at):
                    replied.add(lead_id)
    for lead_id in replied:
        arms[arm_of_lead[lead_id]].replied += 1
    for lead_id in moved:
        arms[arm_of_lead[lead_id]].converted += 1
    report_arms = [arms[key] for key in sorted(arms)]
    return BroadcastReport(broadcast, state_of(broadcast, progress), progress, report_arms)


def _within(sent: datetime, moment: datetime | None) -> bool:
    """Whether `moment` falls in the report's window after the send."""
    return moment is not None and sent < moment <= sent + REPORT_WINDOW


async def recent_broadcasts(session: AsyncSession, limit: int = 10) -> list[Broadcast]:
    """The launched (and cancelled) broadcasts, newest first; drafts are not listed."""
    query = (
        select(Broadcast)
        .where(Broadcast.status != "draft", Broadcast.launched_at.is_not(None))
        .order_by(Broadcast.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())
