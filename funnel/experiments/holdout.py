"""Holdouts: a campaign's touch due to a lead of its holdout is recorded, never sent, at the
moment it would have gone out, so both groups start their clock alike."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Touch

HELD_OUT = "held_out"


async def hold_out(session: AsyncSession, touch_id: int, at: datetime) -> None:
    """Marks a planned touch held out; its due_at becomes the moment it would have been sent
    (the lift compares what the leads did in the window after it). The caller commits."""
    await session.execute(
        update(Touch)
        .where(Touch.id == touch_id, Touch.status == "planned")
        .values(status=HELD_OUT, due_at=at, sent_at=None)
    )
