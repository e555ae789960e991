"""APScheduler wiring: the funnel tick and the hand-off delivery as interval jobs, and daily
cron jobs (the digest).

The schedule of individual touches lives in the database, never in APScheduler jobs. Every
instance runs the same scheduler; the interval jobs share their work through row claims,
and a daily job given the database runs once a day whichever instance comes first: it
claims a `job_marks` row named after the job and the day (an insert that only one instance's
transaction wins, on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from funnel.core.clock import Clock
from funnel.core.models import JobMark

log = logging.getLogger("leadbot.scheduler")

TICK_JOB_ID = "funnel_tick"
# A daily job's marks are kept this long, then purged by the next claim.
KEEP_DAILY_MARKS = timedelta(days=35)


def _guarded(name: str, func: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    """A job that logs its failure and lets the next run try again."""

    async def run() -> None:
        started = time.monotonic()
        try:
            await func()
        except asyncio.CancelledError:
            # Shutdown cancelled a run in flight: a normal stop, not a failure (a touch left
            # mid-send is settled at the next start). Returning keeps APScheduler from
            # logging the cancellation as a crash with a traceback.
            log.info(
                "scheduler.job_stopped", extra={"event": "scheduler.job_stopped", "job": name}
            )
        except Exception:
            log.exception(
                "scheduler.job_failed: the job will run again at its next time; if this "
                "repeats, check the database and the Telegram connection",
                extra={
                    "event": "scheduler.job_failed",
                    "job": name,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    run.__name__ = f"guarded_{name}"
    return run


def create_scheduler(tick: Callable[[], Awaitable[Any]], tick_seconds: float) -> AsyncIOScheduler:
    """An AsyncIOScheduler running `tick` every `tick_seconds`, first at once.

    One instance at a time (a long delivery round is never overlapped by the next tick);
    missed runs collapse into one. Start it inside the running event loop.
    """
    scheduler = AsyncIOScheduler(timezone=UTC)
    add_interval_job(scheduler, tick, tick_seconds, job_id=TICK_JOB_ID)
    return scheduler


def add_interval_job(
    scheduler: AsyncIOScheduler,
    func: Callable[[], Awaitable[Any]],
    seconds: float,
    *,
    job_id: str,
) -> Job:
    """Runs `func` every `seconds`, first at once; one run at a time, missed runs collapse."""
    if not seconds > 0:
        raise ValueError(f"tick_seconds must be positive, got {seconds!r}")
    return scheduler.add_job(
        _guarded(job_id, func),
        IntervalTrigger(seconds=seconds, timezone=UTC),
        id=job_id,
        name=job_id,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=None,
        # The scheduler's own timing is wall time by nature; funnel time comes from the
        # Clock the job itself reads.
        next_run_time=datetime.now(UTC),
        replace_existing=True,
    )


def add_daily_job(
    scheduler: AsyncIOScheduler,
    func: Callable[[], Awaitable[Any]],
    hour: int,
    minute: int,
    zone: ZoneInfo,
    *,
    job_id: str | None = None,
    sessions: async_sessionmaker[AsyncSession] | None = None,
    clock: Clock | None = None,
) -> Job:
    """Runs `func` every day at hour:minute local time in `zone` (DST-aware); with
    `sessions` (and the funnel `clock`), once a day across every instance of the database."""
    name = job_id or str(getattr(func, "__name__", "daily_job"))
    if sessions is not None:
        func = once_a_day(sessions, name, zone, func, clock)
    return scheduler.add_job(
        _guarded(name, func),
        CronTrigger(hour=hour, minute=minute, timezone=zone),
        id=name,
        name=name,
        max_instances=1,
        coalesce=True,
        # A digest an hour late is still useful; one a day late is not.
        misfire_grace_time=3600,
        replace_existing=True,
    )


def once_a_day(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    zone: ZoneInfo,
    func: Callable[[], Awaitable[Any]],
    clock: Clock | None = None,
) -> Callable[[], Awaitable[bool]]:
    """`func` wrapped to run at most once per local day of `zone` among all the instances of
    one database; returns whether this instance ran it. The day is claimed before the work
    runs: a crash in the middle skips that day's run rather than doubling it."""

    async def run() -> bool:
        now = clock.now() if clock is not None else datetime.now(UTC)
        mark = f"daily:{name}:{now.astimezone(zone).date().isoformat()}"

        async def claim() -> bool:
            async with sessions() as session, session.begin():
                return await claim_mark(session, mark, now)

        if not await transactions.retrying(claim, f"{name}.claim"):
            log.info(
                "scheduler.job_skipped: another instance ran it today",
                extra={"event": "scheduler.job_skipped", "job": name},
            )
            return False
        await func()
        return True

    run.__name__ = name
    return run


async def claim_mark(session: AsyncSession, mark: str, now: datetime) -> bool:
    """Inserts the mark unless it exists; True when this transaction inserted it. Marks of
    daily jobs older than KEEP_DAILY_MARKS go."""
    insert = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    statement = (
        insert(JobMark)
        .values(name=mark, at=now)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(JobMark.name)
    )
    claimed = (await session.execute(statement)).first() is not None
    if claimed:
        await session.execute(
            delete(JobMark).where(
                JobMark.name.like("daily:%"), JobMark.at < now - KEEP_DAILY_MARKS
            )
        )
    return claimed
