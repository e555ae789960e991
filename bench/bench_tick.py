"""Benchmark: one outbox tick (plan + deliver) with nothing due over 1,000,000 leads.

`python -m bench.bench_tick [--leads N] [--ticks N] [--db PATH | --database-url URL] [--json]`;
exits 1 when the median tick is slower than the target. SQLite by default; `--database-url
postgresql+asyncpg://...` fills that PostgreSQL database instead (its leads and touches are
replaced: give it a scratch database). `--json` ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from aiogram import Bot
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import db
from bot.outbox import Outbox
from bot.settings import DEFAULT_SCRIPT
from funnel.core.clock import FakeClock
from funnel.followups import planning
from funnel.reports import rollup
from funnel.script.loading import load_script

TARGET_MS = 50.0
# Tuesday noon in Moscow, inside the default send window.
NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
SPAN_DAYS = 90
TOKEN = "123456789:BENCH-token-never-used"


def _stamp(moment: datetime) -> str:
    """A time as the ORM stores it in SQLite."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _postgres(url: str) -> bool:
    return url.startswith("postgresql")


def _at(url: str, moment: datetime) -> str | datetime:
    """A time as a raw statement's parameter: SQLite's text, PostgreSQL's timestamptz."""
    return moment if _postgres(url) else _stamp(moment)


_STAGE = """CASE x % 10 WHEN 0 THEN 'new' WHEN 1 THEN 'engaged' WHEN 2 THEN 'engaged'
                        WHEN 3 THEN 'qualified' WHEN 4 THEN 'qualified'
                        WHEN 5 THEN 'disqualified' WHEN 6 THEN 'disqualified'
                        WHEN 7 THEN 'consultation' WHEN 8 THEN 'customer' ELSE 'loyal' END"""


async def _generate(url: str, leads: int) -> None:
    """Leads spread over the last SPAN_DAYS across every stage, plus a sent history."""
    engine = db.create_engine(url)
    await db.migrate(engine)
    spacing = SPAN_DAYS * 86400 / leads
    if _postgres(url):
        await _generate_postgres(engine, leads, spacing)
        await engine.dispose()
        return
    now = _stamp(NOW)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                """
                WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < :leads)
                INSERT INTO leads (id, user_id, chat_id, first_name, source, stage, position,
                    score, temperature, exit_reason, script_version, cycle, cycle_started_at,
                    created_at, stage_changed_at, version)
                SELECT x, x, x, 'Lead', 'bench',
                    CASE x % 10 WHEN 0 THEN 'new' WHEN 1 THEN 'engaged' WHEN 2 THEN 'engaged'
                        WHEN 3 THEN 'qualified' WHEN 4 THEN 'qualified'
                        WHEN 5 THEN 'disqualified' WHEN 6 THEN 'disqualified'
                        WHEN 7 THEN 'consultation' WHEN 8 THEN 'customer' ELSE 'loyal' END,
                    CASE WHEN x % 10 IN (0, 1, 2) THEN 'timing' END,
                    0, NULL, CASE WHEN x % 20 = 5 THEN 'not_now' END, 'bench@1', 1, ts, ts, ts, 1
                FROM (SELECT x, strftime('%Y-%m-%d %H:%M:%S', :now,
                        '-' || CAST(x * :spacing AS INTEGER) || ' seconds') || '.000000' AS ts
                      FROM n)
                """
            ),
            {"leads": leads, "now": now, "spacing": spacing},
        )
        # Half the leads already received an older touch: a realistic outbox size.
        await conn.execute(
            text(
                """
                INSERT INTO touches (lead_id, campaign, step, cycle, due_at, status, attempts,
                    postponed, sent_at, created_at)
                SELECT id, 'history', 1, 1, cycle_started_at, 'sent', 1, 0, cycle_started_at,
                    cycle_started_at
                FROM leads WHERE id % 2 = 0
                """
            )
        )
    await engine.dispose()


async def _generate_postgres(engine: AsyncEngine, leads: int, spacing: float) -> None:
    """The same leads and history as on SQLite, with generate_series on the server."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE leads, stage_events, answers, touches, notifications, job_marks, "
                "rollup_leads, rollup_gaps, rollup_questions RESTART IDENTITY CASCADE"
            )
        )
        await conn.run_sync(rollup.uninstall)
        await conn.execute(
            text(
                f"""
                INSERT INTO leads (id, user_id, chat_id, first_name, source, stage, position,
                    score, temperature, exit_reason, script_version, cycle, cycle_started_at,
                    created_at, stage_changed_at, version, entered)
                SELECT x, x, x, 'Lead', 'bench', {_STAGE},
                    CASE WHEN x % 10 IN (0, 1, 2) THEN 'timing' END,
                    0, NULL, CASE WHEN x % 20 = 5 THEN 'not_now' END, 'bench@1', 1, ts, ts, ts,
                    1, ','
                FROM (SELECT x, CAST(:now AS timestamptz)
                                - make_interval(secs => floor(x * :spacing)) AS ts
                      FROM generate_series(1, :leads) AS x) AS n
                """
            ),
            {"leads": leads, "now": NOW, "spacing": spacing},
        )
        await conn.execute(
            text(
                """
                INSERT INTO touches (lead_id, campaign, step, cycle, due_at, status, attempts,
                    postponed, sent_at, created_at)
                SELECT id, 'history', 1, 1, cycle_started_at, 'sent', 1, 0, cycle_started_at,
                    cycle_started_at
                FROM leads WHERE id % 2 = 0
                """
            )
        )
        await conn.execute(
            text("SELECT setval(pg_get_serial_sequence('leads', 'id'), :leads)"),
            {"leads": leads},
        )
        await conn.run_sync(rollup.rebuild)
    async with engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE"))


async def _steady_state(outbox: Outbox, url: str) -> int:
    """Watermarks as a previous tick at NOW left them; its touches already sent."""
    engine = db.create_engine(url)
    script = outbox.script()
    async with db.sessionmaker(engine)() as session:
        for campaign in script.campaigns:
            for step, offset in enumerate(campaign.offsets(), 1):
                await session.execute(
                    text(
                        "INSERT INTO job_marks (name, at) VALUES (:n, :at) "
                        "ON CONFLICT (name) DO UPDATE SET at = excluded.at"
                    ),
                    {"n": planning.mark_name(campaign, step), "at": _at(url, NOW - offset)},
                )
        await session.commit()
    planned = await outbox.plan(NOW)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE touches SET status = 'sent', sent_at = :now WHERE status = 'planned'"),
            {"now": _at(url, NOW - timedelta(days=2))},
        )
    await engine.dispose()
    return planned


async def run(
    leads: int, ticks: int, database: Path | str, generate: bool, as_json: bool = False
) -> int:
    url = database if isinstance(database, str) else f"sqlite+aiosqlite:///{database}"
    if generate:
        started = time.perf_counter()
        await _generate(url, leads)
        print(f"generated {leads:,} leads in {time.perf_counter() - started:.1f}s")
    engine = db.create_engine(url)
    bot = Bot(TOKEN)  # never called: nothing is due
    clock = FakeClock(NOW)
    script = load_script(DEFAULT_SCRIPT)
    outbox = Outbox(
        sessions=db.sessionmaker(engine),
        bot=bot,
        script=lambda: script,
        clock=clock,
        zone=ZoneInfo("Europe/Moscow"),
        manager_chat_id=None,
    )
    try:
        warm = await _steady_state(outbox, url)
        timings = []
        for _ in range(ticks):
            started = time.perf_counter()
            stats = await outbox.tick()
            timings.append((time.perf_counter() - started) * 1000)
            if stats.planned or stats.sent or stats.postponed or stats.cancelled:
                print(f"unexpected work in a quiet tick: {stats}", file=sys.stderr)
                return 1
    finally:
        await bot.session.close()
        await engine.dispose()
    best, median = min(timings), statistics.median(timings)
    steps = sum(len(c.steps) for c in script.campaigns)
    print(
        f"tick with nothing due: {leads:,} leads, {steps} campaign steps, "
        f"{warm} touches in the last margin band; best {best:.1f} ms, "
        f"median {median:.1f} ms, worst {max(timings):.1f} ms over {ticks} ticks "
        f"(target ≤ {TARGET_MS:.0f} ms)"
    )
    if as_json:
        print(json.dumps({
            "bench": "tick", "engine": "postgresql" if _postgres(url) else "sqlite",
            "leads": leads, "ticks": ticks, "best_ms": round(best, 2),
            "median_ms": round(median, 2), "worst_ms": round(max(timings), 2),
            "target_ms": TARGET_MS, "ok": median <= TARGET_MS,
        }))  # fmt: skip
    if median > TARGET_MS:
        print("FAIL: the median tick is above the target", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_tick", description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--db", type=Path, default=None, help="reuse (or create) this file")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL scratch database (postgresql+asyncpg://...) instead of SQLite",
    )
    parser.add_argument("--json", action="store_true", help="end with a JSON line")
    args = parser.parse_args(argv)
    if args.leads < 1 or args.ticks < 1:
        parser.error("--leads and --ticks must be positive")
    if args.database_url is not None:
        if not args.database_url.startswith("postgresql+asyncpg://"):
            parser.error("--database-url must be postgresql+asyncpg://... (SQLite: --db)")
        return asyncio.run(run(args.leads, args.ticks, args.database_url, True, args.json))
    if args.db is not None:
        return asyncio.run(run(args.leads, args.ticks, args.db, not args.db.exists(), args.json))
    workdir = Path(tempfile.mkdtemp(prefix="bench-tick-"))
    try:
        return asyncio.run(run(args.leads, args.ticks, workdir / "bench.sqlite3", True, args.json))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
