"""The report's rollups stay exact under a random workload, on whichever engine the suite
runs (SQLite triggers, or the PL/pgSQL ones of migrations 0010 and 0013): after every kind of
write the application makes — new leads, stage changes in and out of order, repeated stages,
answers and repeated answers, questions asked, opt-outs, blocks, temperature and script
changes, purchases (repeated, in two currencies, some before the lead's creation), refunds,
/forget, a lead turning into a test lead — the tables the triggers kept (all-time, daily and
money) equal what a from-scratch rebuild computes from the log.

Several writers run at once too (on PostgreSQL they are truly concurrent), so a lead's first
answer or first entry into a stage is never counted twice by two transactions.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import transactions
from funnel.core import store
from funnel.core.models import Answer, Lead, Purchase, StageEvent
from funnel.reports import rollup

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# Creation times on the edges of UTC days (and of a day in UTC+5:30), where a daily rollup
# could put a lead on the wrong day.
EDGES = [
    datetime(2026, 3, 4, tzinfo=UTC),
    datetime(2026, 3, 4, tzinfo=UTC) - timedelta(microseconds=1),
    datetime(2026, 3, 9, 18, 30, tzinfo=UTC),
    datetime(2026, 3, 9, 18, 29, 59, 999_500, tzinfo=UTC),
    datetime(2026, 3, 15, 23, 59, 59, 999_999, tzinfo=UTC),
]
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
        "daily_leads": await rows(
            "SELECT day, source, temperature, script_version, entered, stage, opted_out, "
            "blocked, leads FROM rollup_daily_leads WHERE leads <> 0"
        ),
        "daily_gaps": await rows(
            "SELECT day, source, from_stage, to_stage, bucket, leads, seconds "
            "FROM rollup_daily_gaps WHERE leads <> 0 OR seconds <> 0"
        ),
        "daily_questions": await rows(
            "SELECT day, source, question, answered, waiting FROM rollup_daily_questions "
            "WHERE answered <> 0 OR waiting <> 0"
        ),
        "money": await rows(
            "SELECT day, source, currency, purchases, cents, buyers FROM rollup_money "
            "WHERE purchases <> 0 OR cents <> 0 OR buyers <> 0"
        ),
        "first_purchases": await rows(
            "SELECT day, source, currency, bucket, leads, seconds FROM rollup_first_purchases "
            "WHERE leads <> 0 OR seconds <> 0"
        ),
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
        self.created: dict[int, datetime] = {}

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
        if r.random() < 0.2:
            created = r.choice(EDGES)
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
            values = self.new_lead(n)
            lead_id = await session.scalar(insert(Lead).values(**values).returning(Lead.id))
            assert lead_id is not None
            self.lead_ids.append(lead_id)
            self.created[lead_id] = values["created_at"]
            return
        lead_id = r.choice(self.lead_ids)
        kind = r.random()
        if kind < 0.3:
            await self.money(session, lead_id)
        elif kind < 0.32:
            # /test_funnel on a counted lead: its own statement, as test_run.py does it.
            await session.execute(
                update(Lead)
                .where(Lead.id == lead_id)
                .values(is_test=True)
                .execution_options(synchronize_session=False)
            )
        elif kind < 0.34:
            lead = await session.get(Lead, lead_id)
            assert lead is not None
            await store.forget_lead(session, lead, START)
            await session.flush()
        elif kind < 0.6:
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
        elif kind < 0.75:
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

    async def money(self, session: AsyncSession, lead_id: int) -> None:
        """A purchase (sometimes refunded from the start, sometimes before the lead was
        created, which the time to the first purchase leaves out), or a refund of one of the
        lead's purchases, or a refund taken back."""
        r = self.random
        bought = (
            await session.scalars(select(Purchase.id).where(Purchase.lead_id == lead_id))
        ).all()
        if bought and r.random() < 0.4:
            await session.execute(
                update(Purchase)
                .where(Purchase.id == r.choice(bought))
                .values(refunded_at=r.choice([START, START, None]))
                .execution_options(synchronize_session=False)
            )
            return
        created = self.created.get(lead_id, START)
        await session.execute(
            insert(Purchase).values(
                lead_id=lead_id,
                amount=Decimal(r.randrange(1, 2_000_000)) / 100,
                currency=r.choice(["RUB", "RUB", "USD"]),
                at=created + timedelta(seconds=r.randrange(-7200, 40 * 86400)),
                recorded_by=1,
                refunded_at=START if r.random() < 0.1 else None,
            )
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
    assert kept["daily_leads"] and kept["daily_gaps"] and kept["daily_questions"]
    assert kept["money"] and kept["first_purchases"]
    assert {row[2] for row in kept["money"]} == {"RUB", "USD"}
    for name in ("leads", "gaps", "questions", "daily_leads", "daily_gaps", "daily_questions",
                 "money", "first_purchases", "entered"):  # fmt: skip
        assert kept[name] == rebuilt[name], name
    async with sessions() as session:
        tests, refunds = (
            await session.execute(
                text(
                    "SELECT (SELECT count(*) FROM leads WHERE is_test), "
                    "(SELECT count(*) FROM purchases WHERE refunded_at IS NOT NULL)"
                )
            )
        ).one()
    assert tests and refunds, "the workload marked test leads and refunded purchases"


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
