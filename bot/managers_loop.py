"""The managers' loop as a scheduler job: plans the service level's reminders and escalations
that are due, gives back to the follow-ups the leads a manager took and then left silent,
and delivers what that planned through the hand-off outbox. Everything it knows is in the
database, so a restart (or kill -9) changes nothing: a reminder is one row, sent once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from bot.handoff import HandOff
from funnel.core.clock import Clock
from funnel.followups.touch_queue import take_write_lock
from funnel.handoff import ownership, service_level
from funnel.handoff.service_level import ServiceLevel
from funnel.script.schema import Script

log = logging.getLogger("leadbot.managers")

JOB_ID = "managers_tick"


@dataclass
class LoopStats:
    planned: int = 0
    resumed: int = 0


def closed_stages(script: Script) -> set[str]:
    """Stages where a card no longer waits for a take: out of the funnel, or bought."""
    order = script.funnel_order
    bought = order[order.index(script.roles.customer) :]
    exits = {s.id for s in script.exit_stages}
    return exits | set(bought)


class ManagersLoop:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        script: Callable[[], Script],
        clock: Clock,
        handoff: HandOff,
        level: ServiceLevel,
        silence: timedelta,
        admin_ids: Collection[int],
    ) -> None:
        self.sessions = sessions
        self.script = script
        self.clock = clock
        self.handoff = handoff
        self.level = level
        self.silence = silence
        self.admin_ids = frozenset(admin_ids)

    async def tick(self) -> LoopStats:
        stats = LoopStats()
        if self.handoff.manager_chat_id is not None:
            stats.planned = await transactions.retrying(self._plan, "managers.plan")
        stats.resumed = await transactions.retrying(self._resume_silent, "managers.resume")
        if stats.planned or stats.resumed:
            log.info(
                "managers.tick",
                extra={"event": "managers.tick", "planned": stats.planned,
                       "resumed": stats.resumed},
            )  # fmt: skip
            await self.handoff.tick()
        return stats

    async def _plan(self) -> int:
        now = self.clock.now()
        # No write lock up front: most ticks only read. A write that meets a newer writer
        # fails on SQLite and the whole step is tried again (transactions.retrying).
        async with self.sessions() as session:
            planned = await service_level.plan_service_level(
                session, self.level, now, self.admin_ids, closed_stages(self.script())
            )
            await session.commit()
        return planned

    async def _resume_silent(self) -> int:
        now = self.clock.now()
        resumed = 0
        async with self.sessions() as session:
            silent_takes = await ownership.silent_takes(session, now, self.silence)
            if not silent_takes:
                return 0
            await take_write_lock(session)
            for silent in silent_takes:
                if await ownership.release_silent(session, silent, now, self.silence):
                    resumed += 1
                    tag = f"silence:{silent.take_id}"
                    await ownership.plan_card_updates(session, silent.lead_id, tag, now)
            await session.commit()
        return resumed
