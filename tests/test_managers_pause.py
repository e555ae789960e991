"""While a manager holds a lead, the decision at send time keeps nurture and win-back silent
(post-sale still goes out); taking a lead cancels what was planned for those campaigns, and
one of two managers tapping at once wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.models import Lead, ManagerTake, Touch
from funnel.followups.decision import Cancel, Send, decide
from funnel.handoff import ownership
from funnel.script.schema import Script

ZONE = ZoneInfo("Europe/Moscow")
NOON = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def lead(**fields: object) -> Lead:
    values: dict[str, object] = {
        "id": 1, "chat_id": 5, "stage": "qualified", "cycle": 1, "first_name": "Ann",
        "opted_out_at": None, "blocked_at": None, "deleted_at": None, "exit_reason": None,
        "temperature": "hot", "manager_id": None, "source": "direct", "script_version": "t",
        "cycle_started_at": NOON, "created_at": NOON, "stage_changed_at": NOON,
    }  # fmt: skip
    values.update(fields)
    return Lead(**values)


def touch(campaign: str, **fields: object) -> Touch:
    values: dict[str, object] = {
        "id": 1, "lead_id": 1, "campaign": campaign, "step": 1, "cycle": 1, "due_at": NOON,
        "status": "planned", "created_at": NOON,
    }  # fmt: skip
    values.update(fields)
    return Touch(**values)


@pytest.mark.parametrize(
    ("campaign", "stage", "owned", "expected"),
    [
        ("nurture_qualified", "qualified", False, Send()),
        ("nurture_qualified", "qualified", True, Cancel("manager_owns")),
        ("winback_booked", "consultation", True, Cancel("manager_owns")),
        ("winback_silent", "qualified", True, Cancel("manager_owns")),
        ("postsale_nps", "customer", True, Send()),
    ],
)
def test_a_managers_lead_hears_no_nurture_or_winback(
    script: Script, campaign: str, stage: str, owned: bool, expected: object
) -> None:
    subject = lead(stage=stage, manager_id=77 if owned else None)
    assert decide(touch(campaign), subject, script, NOON, [], ZONE) == expected


async def add_lead(session: AsyncSession) -> Lead:
    subject = lead(user_id=5)
    session.add(subject)
    await session.flush()
    return subject


async def test_taking_cancels_the_paused_campaigns_and_only_one_manager_wins(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    async with sessions() as session:
        subject = await add_lead(session)
        session.add_all(
            [
                touch("nurture_qualified", id=None),
                touch("postsale_nps", id=None, step=1, cycle=2),
            ]
        )
        await session.commit()
        later = NOON + timedelta(minutes=7)
        first = await ownership.take(
            session, script, subject.id, 77, "Олег", card_id=None, called_at=NOON, now=later
        )
        second = await ownership.take(
            session, script, subject.id, 88, "Ира", card_id=None, called_at=NOON, now=later
        )
        await session.commit()
        assert (first, second) == (True, False)
        statuses = (await session.execute(select(Touch.campaign, Touch.status))).all()
        assert sorted(statuses) == [
            ("nurture_qualified", "cancelled"),
            ("postsale_nps", "planned"),
        ]
        [row] = (await session.scalars(select(ManagerTake))).all()
        assert (row.manager_id, row.taken_at - row.called_at) == (77, timedelta(minutes=7))


async def test_silence_is_counted_from_the_last_action_or_stage_move(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    silence = timedelta(days=3)
    async with sessions() as session:
        subject = await add_lead(session)
        await session.commit()
        await ownership.take(
            session, script, subject.id, 77, "Олег", card_id=None, called_at=NOON, now=NOON
        )
        await session.commit()
        await ownership.note_activity(session, subject.id, NOON + timedelta(days=2))
        await session.commit()
        assert await ownership.silent_takes(session, NOON + timedelta(days=4), silence) == []
        [silent] = await ownership.silent_takes(session, NOON + timedelta(days=5), silence)
        # Read, then the manager acts before the release: it is not released after all.
        await ownership.note_activity(session, subject.id, NOON + timedelta(days=5))
        await session.commit()
        now = NOON + timedelta(days=5, minutes=1)
        assert not await ownership.release_silent(session, silent, now, silence)
        later = NOON + timedelta(days=8, minutes=1)
        [silent] = await ownership.silent_takes(session, later, silence)
        assert await ownership.release_silent(session, silent, later, silence)
        await session.commit()
        await session.refresh(subject)
        assert subject.manager_id is None and subject.cycle_started_at == later
