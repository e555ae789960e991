"""APScheduler wiring: the funnel tick and the hand-off delivery as interval jobs, and daily
cron jobs (the digest).

The schedule of individual touches lives in the database, never in APScheduler jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("leadbot.scheduler")

TICK_JOB_ID = "funnel_tick"


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
) -> Job:
    """Runs `func` every day at hour:minute local time in `zone` (DST-aware)."""
    name = job_id or str(getattr(func, "__name__", "daily_job"))
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
