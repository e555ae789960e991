"""Benchmark: what the database work of one answered question costs on the stack the bot is
built on (SQLAlchemy's async ORM over aiosqlite), against the same SQL through Core and
through Python's sqlite3 module directly: the floor under `bench_cpu`'s figure.

One step is what the dialogue writes for a tapped answer, on the migrated schema with its
rollup triggers: the update stored in the inbox (its own transaction, as the poller does),
then in one transaction the lead read, the answer inserted, the lead updated under its version
check, a stage event logged and the inbox row marked handled. The figure is this thread's CPU
time per step (the driver's thread included where there is one: process time), after a
warm-up, on a file database with 1,000 leads.

`python -m bench.bench_stack_floor [--steps N] [--json]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select

import bot  # noqa: F401  (aiogram's validators built on first use, as in the bot)
from bot import db, inbox
from funnel.core.models import Answer, InboxUpdate, Lead, StageEvent

LEADS = 1_000
WARMUP = 100
PAYLOAD = (
    '{"update_id":%d,"callback_query":{"id":"1","chat_instance":"1","data":"a:need:project",'
    '"from":{"id":1,"is_bot":false,"first_name":"P"}}}'
)


async def _seed(sessions: Any, now: datetime) -> None:
    async with sessions() as session:
        for user in range(LEADS):
            session.add(
                Lead(user_id=user, chat_id=user, first_name="P", stage="new", source="bench",
                     language="ru", script_version="bench", cycle=1, version=1,
                     created_at=now, stage_changed_at=now, cycle_started_at=now)
            )  # fmt: skip
        await session.commit()


async def _measure(steps: int, step: Callable[[int], Awaitable[None]]) -> float:
    for number in range(WARMUP):
        await step(number)
    started = time.process_time()
    for number in range(WARMUP, WARMUP + steps):
        await step(number)
    return 1e6 * (time.process_time() - started) / steps


async def run(steps: int, workdir: Path) -> dict[str, float]:
    path = workdir / "floor.sqlite3"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    await db.migrate(engine)
    sessions = db.sessionmaker(engine)
    now = datetime.now(UTC)
    await _seed(sessions, now)
    leads, answers, events = (cast(Any, model.__table__) for model in (Lead, Answer, StageEvent))
    update_ids = iter(range(10**9, 2 * 10**9))
    from aiogram.types import Update  # after `bot`: aiogram imported as the bot imports it

    # The updates the bot's inbox stores, parsed beforehand (parsing is receiving, not this).
    stored = 3 * (WARMUP + steps)  # the ORM, Core and inbox-alone rows store one a step
    updates = iter([Update.model_validate_json(PAYLOAD % n) for n in range(1, stored + 1)])

    async def store_update() -> int:
        update = next(updates)
        async with sessions() as session:
            await inbox.store(session, [update], now)
            await session.commit()
        return update.update_id

    async def orm_step(number: int) -> None:
        update_id = await store_update()
        async with sessions() as session:
            lead = (
                await session.scalars(select(Lead).where(Lead.user_id == number % LEADS))
            ).one()
            session.add(
                Answer(lead_id=lead.id, question="need", value="v", option="v", score=5, at=now,
                       superseded=False)
            )  # fmt: skip
            lead.score = (lead.score or 0) + 5
            lead.last_inbound_at = now
            session.add(
                StageEvent(lead_id=lead.id, from_stage="new", to_stage="engaged", at=now,
                           cause="answered")
            )  # fmt: skip
            await session.execute(inbox.MARK_HANDLED, inbox.handled(update_id, now))
            await session.commit()

    async def core_step(number: int) -> None:
        update_id = await store_update()
        async with engine.begin() as connection:
            lead = (
                await connection.execute(leads.select().where(leads.c.user_id == number % LEADS))
            ).one()
            await connection.execute(
                answers.insert().values(lead_id=lead.id, question="need", value="v", option="v",
                                        score=5, at=now, superseded=False)
            )  # fmt: skip
            await connection.execute(
                leads.update()
                .where(leads.c.id == lead.id, leads.c.version == lead.version)
                .values(score=(lead.score or 0) + 5, last_inbound_at=now, version=lead.version + 1)
            )
            await connection.execute(
                events.insert().values(lead_id=lead.id, from_stage="new", to_stage="engaged",
                                       at=now, cause="answered")
            )  # fmt: skip
            await connection.execute(inbox.MARK_HANDLED, inbox.handled(update_id, now))

    raw = sqlite3.connect(path, isolation_level=None)
    stamp = now.isoformat(sep=" ")

    async def sqlite3_step(number: int) -> None:
        update_id = next(update_ids)
        raw.execute("BEGIN")
        raw.execute("INSERT INTO inbox (update_id, payload, received_at) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING", (update_id, PAYLOAD % update_id, stamp))  # fmt: skip
        raw.execute("COMMIT")
        raw.execute("BEGIN")
        lead_id, score, version = raw.execute(
            "SELECT id, score, version FROM leads WHERE user_id = ?", (number % LEADS,)
        ).fetchone()
        raw.execute(
            "INSERT INTO answers (lead_id, question, value, option, score, at, superseded) "
            "VALUES (?, 'need', 'v', 'v', 5, ?, 0)",
            (lead_id, stamp),
        )
        raw.execute("UPDATE leads SET score = ?, last_inbound_at = ?, version = ? "
                    "WHERE id = ? AND version = ?",
                    ((score or 0) + 5, stamp, version + 1, lead_id, version))  # fmt: skip
        raw.execute("INSERT INTO stage_events (lead_id, from_stage, to_stage, at, cause) "
                    "VALUES (?, 'new', 'engaged', ?, 'answered')", (lead_id, stamp))  # fmt: skip
        raw.execute("UPDATE inbox SET handled_at = ?, payload = '' "
                    "WHERE update_id = ? AND handled_at IS NULL", (stamp, update_id))  # fmt: skip
        raw.execute("COMMIT")

    async def store_only(number: int) -> None:
        await store_update()

    async def empty_session(number: int) -> None:
        async with sessions() as session:
            await session.execute(InboxUpdate.__table__.select().limit(0))

    try:
        figures = {
            "orm_step_us": await _measure(steps, orm_step),
            "core_step_us": await _measure(steps, core_step),
            "sqlite3_step_us": await _measure(steps, sqlite3_step),
            "inbox_store_us": await _measure(steps, store_only),
            "one_statement_session_us": await _measure(steps, empty_session),
        }
    finally:
        raw.close()
        await engine.dispose()
    return {key: round(value) for key, value in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_stack_floor", description=__doc__)
    parser.add_argument("--steps", type=int, default=2_000)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    try:
        figures = asyncio.run(run(args.steps, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "steps": args.steps,
        **figures,
        "stack_over_sqlite3": round(figures["orm_step_us"] / figures["sqlite3_step_us"], 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
