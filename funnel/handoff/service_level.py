"""The managers' service level: a hot lead's card nobody took within N working minutes gets
a reminder in the managers' chat, and after N more an escalation to every admin. Working
hours are the school's, in its time zone: outside them the clock stops, so a lead who writes
at 23:00 is reminded N minutes after opening time.

The reminders are rows of the hand-off outbox (one per card, one per admin and card), so
the delivery engine's limits, retries and crash rules hold: never doubled."""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from funnel.core.clock import as_utc
from funnel.core.models import Lead, ManagerTake, Notification
from funnel.handoff.notifications import (
    MANAGER_CARD,
    SLA_ESCALATION,
    SLA_REMINDER,
    insert_new,
)

__all__ = ["ServiceLevel", "WorkingHours", "parse_working_hours", "plan_service_level"]

DAY_NAMES = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_GROUP = re.compile(
    r"^(?P<days>[a-z]{3}(?:\s*-\s*[a-z]{3})?)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)
_EXAMPLE = "write it like 'Mon-Fri 10:00-19:00' or 'Mon-Fri 10:00-19:00, Sat 11:00-16:00'"
ALWAYS = ("24/7", "always")
# Cards older than this are past helping: the scan never reads them.
HORIZON = timedelta(days=14)
MINUTES_A_DAY = 24 * 60


@dataclass(frozen=True)
class WorkingHours:
    """Open spans per weekday (0 = Monday), as minutes since local midnight [start, end)."""

    spans: Mapping[int, tuple[tuple[int, int], ...]]
    text: str

    def on(self, weekday: int) -> tuple[tuple[int, int], ...]:
        return self.spans.get(weekday, ())


def _minutes(value: str, shown: str) -> int:
    hours, _, minutes = value.partition(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"{shown!r}: {value} is not a time of day; {_EXAMPLE}")
    return h * 60 + m


def parse_working_hours(text: str) -> WorkingHours:
    """'Mon-Fri 10:00-19:00', several groups apart by commas or semicolons, days
    (Mon..Sun); '24/7' for always. Raises ValueError naming the bad part."""
    shown = str(text)[:80]
    raw = str(text).strip().lower()
    if raw in ALWAYS:
        return WorkingHours({d: ((0, MINUTES_A_DAY),) for d in range(7)}, "24/7")
    if not raw or len(raw) > 200:
        raise ValueError(f"{shown!r} is not working hours; {_EXAMPLE}")
    spans: dict[int, list[tuple[int, int]]] = {}
    for group in re.split(r"[;,]", raw):
        match = _GROUP.match(group.strip())
        if match is None:
            raise ValueError(f"{shown!r}: {group.strip()!r} is not understood; {_EXAMPLE}")
        names = [n.strip() for n in match.group("days").split("-")]
        unknown = [n for n in names if n not in DAY_NAMES]
        if unknown:
            raise ValueError(f"{shown!r}: {unknown[0]!r} is not a day (Mon..Sun); {_EXAMPLE}")
        first, last = DAY_NAMES[names[0]], DAY_NAMES[names[-1]]
        days = (
            list(range(first, last + 1))
            if first <= last
            else [*range(first, 7), *range(0, last + 1)]
        )
        start, end = _minutes(match.group("start"), shown), _minutes(match.group("end"), shown)
        if end <= start:
            raise ValueError(
                f"{shown!r}: {match.group('start')}-{match.group('end')} ends before it "
                f"starts (a span across midnight is two groups); {_EXAMPLE}"
            )
        for day in days:
            spans.setdefault(day, []).append((start, end))
    for day_spans in spans.values():
        day_spans.sort()
        for (_, end), (start, _) in itertools.pairwise(day_spans):
            if start < end:
                raise ValueError(f"{shown!r}: two spans overlap on one day; {_EXAMPLE}")
    return WorkingHours({d: tuple(s) for d, s in spans.items()}, str(text).strip())


def _local(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    if minutes >= MINUTES_A_DAY:
        day, minutes = day + timedelta(days=1), minutes - MINUTES_A_DAY
    moment = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=zone)
    return moment.astimezone(UTC)


def add_working_time(
    start: datetime, duration: timedelta, hours: WorkingHours, zone: ZoneInfo
) -> datetime:
    """The moment `duration` of working time has passed since `start` (UTC); time outside the
    working hours does not count."""
    remaining = duration
    cursor = as_utc(start)
    first_day = cursor.astimezone(zone).date() - timedelta(days=1)
    # A span may begin the previous local day (none cross midnight, but DST shifts): start a
    # day early; two years of days is far past any real schedule.
    for offset in range(0, 800):
        day = first_day + timedelta(days=offset)
        for open_minute, close_minute in hours.on(day.weekday()):
            opened = _local(day, open_minute, zone)
            closed = _local(day, close_minute, zone)
            begin = max(opened, cursor)
            if begin >= closed:
                continue
            if remaining <= closed - begin:
                return begin + remaining
            remaining -= closed - begin
            cursor = closed
    raise ValueError(f"working hours {hours.text!r} never open")


@dataclass(frozen=True)
class ServiceLevel:
    """How long a card may wait for a take, then for the escalation, in working time."""

    take_within: timedelta
    escalate_within: timedelta
    hours: WorkingHours
    zone: ZoneInfo

    def remind_at(self, called_at: datetime) -> datetime:
        return add_working_time(called_at, self.take_within, self.hours, self.zone)

    def escalate_at(self, called_at: datetime) -> datetime:
        total = self.take_within + self.escalate_within
        return add_working_time(called_at, total, self.hours, self.zone)


def reminder_occasion(card_id: int) -> str:
    return f"remind:{card_id}"


def escalation_occasion(card_id: int, admin_id: int) -> str:
    return f"escalate:{card_id}:{admin_id}"


async def waiting_cards(
    session: AsyncSession, now: datetime, closed_stages: Collection[str]
) -> list[tuple[int, int, int, int, datetime]]:
    """Cards delivered within the horizon whose lead nobody took since, still open for a sale
    (not forgotten, not out of the funnel, not bought) and with no newer card: (card id,
    lead id, chat id, message id, called at)."""
    newer = aliased(Notification)
    taken_since = exists().where(
        ManagerTake.lead_id == Notification.lead_id,
        ManagerTake.taken_at >= Notification.created_at,
    )
    superseded = exists().where(
        newer.lead_id == Notification.lead_id,
        newer.kind == MANAGER_CARD,
        newer.id > Notification.id,
        newer.status.in_(("sent", "unknown", "planned", "sending")),
    )
    query = (
        select(
            Notification.id,
            Notification.lead_id,
            Notification.chat_id,
            Notification.message_id,
            Notification.created_at,
        )
        .join(Lead, Lead.id == Notification.lead_id)
        .where(
            Notification.kind == MANAGER_CARD,
            Notification.created_at >= now - HORIZON,
            Notification.status == "sent",
            Notification.chat_id.is_not(None),
            Notification.message_id.is_not(None),
            Lead.deleted_at.is_(None),
            Lead.manager_id.is_(None),
            ~taken_since,
            ~superseded,
        )
        .order_by(Notification.created_at, Notification.id)
    )
    if closed_stages:
        query = query.where(Lead.stage.not_in(sorted(closed_stages)))
    return [tuple(row) for row in (await session.execute(query)).all()]  # type: ignore[misc]


async def plan_service_level(
    session: AsyncSession,
    level: ServiceLevel,
    now: datetime,
    admin_ids: Collection[int],
    closed_stages: Collection[str],
) -> int:
    """Plans the reminders and escalations that are due at `now`; returns how many rows are
    new. Idempotent (one row per card, one per admin and card), safe from several instances
    at once. The caller commits."""
    cards = await waiting_cards(session, now, closed_stages)
    if not cards:
        return 0
    lead_ids = sorted({lead_id for _, lead_id, *_ in cards})
    planned = set(
        (
            await session.scalars(
                select(Notification.occasion).where(
                    Notification.lead_id.in_(lead_ids),
                    Notification.kind.in_((SLA_REMINDER, SLA_ESCALATION)),
                )
            )
        ).all()
    )
    rows: list[dict[str, Any]] = []
    for card_id, lead_id, chat_id, message_id, called_at in cards:
        remind = reminder_occasion(card_id)
        if remind not in planned and level.remind_at(called_at) <= now:
            rows.append(_row(lead_id, SLA_REMINDER, remind, now, chat_id, message_id))
        if admin_ids and level.escalate_at(called_at) <= now:
            for admin in sorted(admin_ids):
                occasion = escalation_occasion(card_id, admin)
                if occasion not in planned:
                    rows.append(_row(lead_id, SLA_ESCALATION, occasion, now, admin, message_id))
    if not rows:
        return 0
    return await insert_new(session, rows)


def _row(
    lead_id: int, kind: str, occasion: str, now: datetime, chat_id: int, message_id: int
) -> dict[str, Any]:
    return {"lead_id": lead_id, "kind": kind, "occasion": occasion, "status": "planned",
            "attempts": 0, "due_at": now, "created_at": now, "chat_id": chat_id,
            "message_id": message_id}  # fmt: skip


async def card_called_at(session: AsyncSession, occasion: str) -> datetime | None:
    """When the card a reminder or an escalation is about called the managers."""
    parts = occasion.split(":")
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    card = await session.get(Notification, int(parts[1]))
    return card.created_at if card is not None else None
