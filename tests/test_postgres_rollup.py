"""The report's rollups stay exact under a random workload, on whichever engine the suite
runs (SQLite triggers, or the PL/pgSQL ones of migration 0010): after every kind of write the
application makes — new leads, stage changes in and out of order, repeated stages, answers and
repeated answers, questions asked, opt-outs, blocks, temperature and script changes — the
tables the triggers kept equal what a from-scratch rebuild computes from the log.

Several writers run at once too (on PostgreSQL they are truly concurrent), so a lead's first
answer or first entry into a stage is never counted twice by two transactions.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import transactions
from funnel.core.models import Answer, Lead, StageEvent
from funnel.reports import rollup

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
STAGES = ["new", "engaged", "qualified", "customer", "disqualified", "lost"]
QUESTIONS = ["need", "timing", "budget", "authority"]
SOURCES = ["vk_ads", "direct", "yandex", "tg_channel"]


async def _snapshot(session: AsyncSession) -> dict[str, Any]:
    async def rows(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(row) for row in (await session.execute(text(sql))).all())

    return {
        "leads": await rows(
            "SELECT source, temperature, script_version, entered, stage, opted_out, blocked, "
            "leads FROM rollup_leads WHERE leads <> 0"
        ),
        "gaps": await rows(
            "SELECT source, from_stage, to_stage, bucket, leads, seconds FROM rollup_gaps "
            "WHERE leads <> 0"
        ),
        "questions": await rows(
            "SELECT source, question, answered, waiting FROM rollup_questions "
            "WHERE answered <> 0 OR waiting <> 0"
        ),
        "entered": await rows("SELECT id, entered FROM leads"),
    }


async def _kept_then_rebuilt(
    engine: AsyncEngine,
) -> tuple[dict[str, Any], dict[str, Any]]:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session:
        kept = await _snapshot(session)
    async with engine.begin() as connection:
        await connection.run_sync(rollup.rebuild)
    async with sessions() as session:
        rebuilt = await _snapshot(session)
    return kept, rebuilt


class Workload:
    """Random writes of the kinds the application makes, reproducible from a seed."""

    def __init__(self, seed: int, *, grow: bool = True) -> None:
        self.random = random.Random(seed)
        self.lead_ids: list[int] = []
        self.grow = grow
        # The application stamps a lead's events with the time of the lead's own update, so a
        # stage entered again is never entered before its first entry; different stages may
        # come out of order.
        self.first_entry: dict[tuple[int, str], datetime] = {}
        self.stamp: itertools.count[int] | None = None

    def entry_time(self, lead_id: int, stage: str) -> datetime:
        if self.stamp is not None:
            return START + timedelta(seconds=next(self.stamp))
        first = self.first_entry.get((lead_id, stage))
        if first is not None:
            return first + timedelta(seconds=self.random.randrange(3 * 86400))
        at = START + timedelta(seconds=self.random.randrange(40 * 86400))
        self.first_entry[(lead_id, stage)] = at
        return at

    def new_lead(self, n: int) -> dict[str, Any]:
        r = self.random
        created = START + timedelta(seconds=r.randrange(30 * 86400))
        return {
            "user_id": 500_000 + n,
            "chat_id": 500_000 + n,
            "first_name": f"Lead{n}",
            "source": r.choice(SOURCES),
            "stage": "new",
            "position": r.choice([None, *QUESTIONS]),
            "score": 0,
            "temperature": r.choice([None, "hot", "warm", "cold"]),
            "script_version": r.choice(["ru@1", "ru@2"]),
            "cycle": 1,
            "cycle_started_at": created,
            "created_at": created,
            "stage_changed_at": created,
            "version": 1,
        }

    async def step(self, session: AsyncSession, n: int) -> None:
        r = self.random
        if self.grow and (not self.lead_ids or r.random() < 0.15):
            lead_id = await session.scalar(
                insert(Lead).values(**self.new_lead(n)).returning(Lead.id)
            )
            assert lead_id is not None
            self.lead_ids.append(lead_id)
            return
        lead_id = r.choice(self.lead_ids)
        kind = r.random()
        if kind < 0.35:
            # A stage entered earlier or later than the others (out of order), or again.
            stage = r.choice(STAGES)
            await session.execute(
                insert(StageEvent).values(
                    lead_id=lead_id,
                    from_stage=None,
                    to_stage=stage,
                    at=self.entry_time(lead_id, stage),
                    cause="workload",
                )
            )
        elif kind < 0.55:
            await session.execute(
                insert(Answer).values(
                    lead_id=lead_id,
                    question=r.choice(QUESTIONS),
                    value="x",
                    option=None,
                    score=0,
                    at=START,
                    superseded=r.random() < 0.2,
                )
            )
        else:
            changes: dict[str, Any] = r.choice(
                [
                    {"position": r.choice([None, *QUESTIONS])},
                    {"stage": r.choice(STAGES)},
                    {"temperature": r.choice([None, "hot", "warm", "cold"])},
                    {"opted_out_at": r.choice([None, START])},
                    {"blocked_at": r.choice([None, START])},
                    {"script_version": r.choice(["ru@1", "ru@2", "ru@3"])},
                    {"stage": r.choice(STAGES), "position": r.choice([None, *QUESTIONS])},
                ]
            )
            await session.execute(
                update(Lead)
                .where(Lead.id == lead_id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )


async def test_rollups_equal_a_rebuild_after_a_random_workload(engine: AsyncEngine) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    workload = Workload(seed=20261201)
    for batch in range(30):
        async with sessions() as session, session.begin():
            for n in range(batch * 20, batch * 20 + 20):
                await workload.step(session, n)
    kept, rebuilt = await _kept_then_rebuilt(engine)
    assert kept["leads"], "the workload made leads"
    assert kept["gaps"] and kept["questions"]
    assert kept == rebuilt


async def test_rollups_stay_exact_with_concurrent_writers(engine: AsyncEngine) -> None:
    """Four writers on the same few leads at once, each in its own transactions."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    seeding = Workload(seed=7)
    async with sessions() as session, session.begin():
        for n in range(12):
            lead_id = await session.scalar(
                insert(Lead).values(**seeding.new_lead(n)).returning(Lead.id)
            )
            assert lead_id is not None
            seeding.lead_ids.append(lead_id)

    stamps = itertools.count()

    async def writer(seed: int) -> None:
        # No new leads here: the few shared leads are what collide.
        workload = Workload(seed, grow=False)
        workload.lead_ids = list(seeding.lead_ids)
        workload.stamp = stamps

        async def one() -> None:
            async with sessions() as session, session.begin():
                for _ in range(3):
                    # The lead's row first, as an update does; its time is taken after.
                    lead_id = workload.random.choice(workload.lead_ids)
                    await session.execute(
                        update(Lead)
                        .where(Lead.id == lead_id)
                        .values(score=Lead.score + 1)
                        .execution_options(synchronize_session=False)
                    )
                    workload.lead_ids = [lead_id]
                    try:
                        await workload.step(session, 0)
                    finally:
                        workload.lead_ids = list(seeding.lead_ids)

        for _ in range(40):
            await transactions.retrying(one, "rollup.race", budget=60)

    await asyncio.gather(*(writer(seed) for seed in range(4)))
    kept, rebuilt = await _kept_then_rebuilt(engine)
    assert kept == rebuilt
