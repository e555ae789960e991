"""Whether a managers' card of a lead is in a chat: only cards that went out (or may have),
only in the chat and as the message they were recorded at; rows from before cards recorded
where they landed count anywhere."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.clock import FakeClock
from funnel.core.models import Lead, Notification
from funnel.core.store import Profile, new_lead
from funnel.handoff.cards import has_card

CHAT, MESSAGE = -1001234567890, 41


async def lead_with(session: AsyncSession, now: datetime, user_id: int, **card: object) -> Lead:
    lead = new_lead(Profile(user_id, user_id), source="vk", stage="qualified", position=None,
                    version="v1", at=now)  # fmt: skip
    session.add(lead)
    await session.flush()
    values: dict[str, object] = {"kind": "manager_card", "status": "sent", **card}
    if values.pop("none", False):
        return lead
    session.add(Notification(lead_id=lead.id, occasion=f"qualified:{user_id}", attempts=1,
                             due_at=now, created_at=now, **values))  # fmt: skip
    await session.flush()
    return lead


@pytest.mark.parametrize(
    ("card", "chat", "message", "expected"),
    [
        ({"chat_id": CHAT, "message_id": MESSAGE}, CHAT, MESSAGE, True),
        ({"chat_id": CHAT, "message_id": MESSAGE, "status": "unknown"}, CHAT, MESSAGE, True),
        ({"chat_id": None, "message_id": None}, CHAT, MESSAGE, True),
        ({"chat_id": CHAT, "message_id": None}, CHAT, MESSAGE, True),
        ({"chat_id": CHAT, "message_id": MESSAGE}, CHAT, None, True),
        ({"chat_id": CHAT, "message_id": MESSAGE}, CHAT, MESSAGE + 1, False),
        ({"chat_id": CHAT, "message_id": MESSAGE}, CHAT - 1, MESSAGE, False),
        ({"chat_id": CHAT - 1, "message_id": None}, CHAT, None, False),
        ({"status": "failed"}, CHAT, MESSAGE, False),
        ({"status": "planned"}, CHAT, MESSAGE, False),
        ({"status": "sending"}, CHAT, MESSAGE, False),
        ({"status": "cancelled"}, CHAT, MESSAGE, False),
        ({"kind": "crm_webhook"}, CHAT, MESSAGE, False),
        ({"none": True}, CHAT, MESSAGE, False),
    ],
)
async def test_has_card(
    sessions: async_sessionmaker[AsyncSession], clock: FakeClock,
    card: dict[str, object], chat: int, message: int | None, expected: bool,
) -> None:  # fmt: skip
    async with sessions() as session:
        lead = await lead_with(session, clock.now(), 501, **card)
        other = await lead_with(session, clock.now(), 502, chat_id=CHAT, message_id=MESSAGE)
        await session.commit()
        assert await has_card(session, lead.id, chat, message) is expected
        assert await has_card(session, other.id, CHAT, MESSAGE)
