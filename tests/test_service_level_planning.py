"""Which cards the service level reminds and escalates, straight from the database: only a
delivered card nobody took, whose lead is still open for a sale and has no newer card; one
reminder per card and one escalation per admin and card, however often the tick runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.models import Lead, ManagerTake, Notification
from funnel.handoff.service_level import ServiceLevel, parse_working_hours, plan_service_level

T0 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # Tuesday noon in Moscow
LEVEL = ServiceLevel(
    take_within=timedelta(minutes=15),
    escalate_within=timedelta(minutes=15),
    hours=parse_working_hours("24/7"),
    zone=ZoneInfo("Europe/Moscow"),
)
CLOSED = {"disqualified", "customer", "loyal"}
ADMINS = (7, 8)


def lead(number: int, stage: str = "qualified", **fields: object) -> Lead:
    return Lead(
        id=number, user_id=number, chat_id=number, source="direct", stage=stage,
        script_version="t", cycle=1, cycle_started_at=T0, created_at=T0, stage_changed_at=T0,
        **fields,
    )  # fmt: skip


def card(
    lead_id: int, at: datetime, status: str = "sent", message_id: int | None = None
) -> Notification:
    return Notification(
        lead_id=lead_id, kind="manager_card", occasion=f"qualified:a{lead_id}:e{at.minute}",
        status=status, due_at=at, created_at=at, sent_at=at, chat_id=-100,
        message_id=message_id if message_id is not None else 100 + lead_id,
    )  # fmt: skip


async def planned(session: AsyncSession) -> list[tuple[int, str, str, int | None]]:
    rows = await session.execute(
        select(Notification.lead_id, Notification.kind, Notification.occasion,
               Notification.chat_id)
        .where(Notification.kind.in_(("sla_reminder", "sla_escalation")))
        .order_by(Notification.lead_id, Notification.kind, Notification.chat_id)
    )  # fmt: skip
    return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def test_only_waiting_cards_are_reminded_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        session.add_all(
            [
                lead(1),  # waiting: reminded, then escalated
                lead(2, manager_id=5),  # held by a manager
                lead(3),  # taken and given back: the card was taken in time
                lead(4, stage="disqualified"),  # ruled out
                lead(5, deleted_at=T0),  # forgotten
                lead(6),  # two cards: only the newer one counts
                lead(7),  # its card never left (failed)
                lead(8),  # a card from a month ago: past the horizon
            ]
        )
        await session.flush()
        session.add_all(
            [
                card(1, T0), card(2, T0), card(3, T0), card(4, T0), card(5, T0),
                card(6, T0 - timedelta(minutes=5)), card(6, T0 + timedelta(minutes=5)),
                card(7, T0, status="failed"), card(8, T0 - timedelta(days=30)),
                ManagerTake(lead_id=3, manager_id=5, manager_name="M", card_id=None,
                            called_at=T0, taken_at=T0 + timedelta(minutes=1),
                            active_at=T0, released_at=T0 + timedelta(minutes=2),
                            release_cause="released"),
            ]
        )  # fmt: skip
        await session.commit()
        ids = dict(
            (await session.execute(
                select(Notification.lead_id, Notification.id)
                .where(Notification.kind == "manager_card")
                .order_by(Notification.id)
            )).all()
        )  # fmt: skip

        at = T0 + timedelta(minutes=16)
        assert await plan_service_level(session, LEVEL, at, ADMINS, CLOSED) == 1
        assert await plan_service_level(session, LEVEL, at, ADMINS, CLOSED) == 0
        await session.commit()
        assert await planned(session) == [(1, "sla_reminder", f"remind:{ids[1]}", -100)]

        later = T0 + timedelta(minutes=21)  # lead 6's newer card is due too
        assert await plan_service_level(session, LEVEL, later, ADMINS, CLOSED) == 1
        escalate = T0 + timedelta(minutes=30)
        assert await plan_service_level(session, LEVEL, escalate, ADMINS, CLOSED) == 2
        for _ in range(3):
            assert await plan_service_level(session, LEVEL, escalate, ADMINS, CLOSED) == 0
        await session.commit()
        assert await planned(session) == [
            (1, "sla_escalation", f"escalate:{ids[1]}:7", 7),
            (1, "sla_escalation", f"escalate:{ids[1]}:8", 8),
            (1, "sla_reminder", f"remind:{ids[1]}", -100),
            (6, "sla_reminder", f"remind:{ids[6]}", -100),
        ]


async def test_no_admins_means_reminders_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        session.add(lead(1))
        await session.flush()
        session.add(card(1, T0))
        await session.commit()
        at = T0 + timedelta(hours=2)
        assert await plan_service_level(session, LEVEL, at, (), CLOSED) == 1
        await session.commit()
        assert [kind for _, kind, _, _ in await planned(session)] == ["sla_reminder"]
