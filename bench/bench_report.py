"""Times the owner's funnel report on a large database (default: 1,000,000 leads with
5,000,000 stage events) and fails when the best run is slower than the target.

Usage: python -m bench.bench_report [--leads N] [--target SECONDS] [--period 30d] [--fresh]
       [--database-url postgresql+asyncpg://user@host/scratch_db] [--json]

SQLite by default (a file under data/bench, reused while its size fits). With
`--database-url` a PostgreSQL database is filled instead (its leads and their logs are
replaced: give it a scratch database), by set-based inserts on the server. `--json` ends
with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy

from bot.db import create_engine, migrate, sessionmaker
from funnel.reports import rollup
from funnel.reports.funnel_report import funnel_report
from funnel.reports.periods import parse_period
from funnel.script.loading import load_script
from funnel.script.schema import Script

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "bench"
SCRIPT = ROOT / "scripts" / "ru.yaml"
EVENTS_PER_LEAD = 5
SOURCES = 50
PATTERNS = 64
EPOCH = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
# One lead every 30 seconds: a million leads span about a year.
LEAD_EVERY = 30
STAMP = "strftime('%Y-%m-%d %H:%M:%S', {}, 'unixepoch') || '.000000'"


def patterns(script: Script, rng: random.Random) -> list[list[tuple[str, str | None, int]]]:
    """Event paths (to_stage, from_stage, seconds after creation), EVENTS_PER_LEAD each.

    Most leads stop early (a real funnel), some skip a stage, some leave for the exit
    stage and come back, so the report meets every case the log allows.
    """
    stages = script.funnel_order
    exit_stage = script.exit_stages[0].id
    result = []
    for _ in range(PATTERNS):
        furthest = min(int(rng.expovariate(0.8)), len(stages) - 1)
        path = list(stages[: furthest + 1])
        if furthest >= 2 and rng.random() < 0.3:
            path.pop(1)  # skipped a stage (e.g. booked straight from the first answer)
        while len(path) < EVENTS_PER_LEAD:
            path.append(exit_stage if path[-1] != exit_stage else stages[furthest])
        path = path[:EVENTS_PER_LEAD]
        step = rng.choice((600, 3600, 4 * 3600, 86400))
        events: list[tuple[str, str | None, int]] = []
        previous: str | None = None
        for n, stage in enumerate(path):
            events.append((stage, previous, n * step))
            previous = stage
        result.append(events)
    return result


def generate(path: Path, script: Script, leads: int) -> None:
    """Fills an empty, migrated database with set-based inserts (seconds, not hours)."""
    rng = random.Random(20260101)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TEMP TABLE pattern (p INTEGER, to_stage TEXT, from_stage TEXT, off INT)")
    db.executemany(
        "INSERT INTO pattern VALUES (?, ?, ?, ?)",
        [(p, *event) for p, events in enumerate(patterns(script, rng)) for event in events],
    )
    questions = [q.id for q in script.questions]
    db.execute("CREATE TEMP TABLE question (n INTEGER, id TEXT, option TEXT)")
    db.executemany(
        "INSERT INTO question VALUES (?, ?, ?)",
        [
            (n, q.id, q.options[0].id if q.options else None)
            for n, q in enumerate(script.questions)
        ],
    )
    created = STAMP.format(f"{EPOCH} + i * {LEAD_EVERY}")
    temperature = "CASE i % 4 WHEN 0 THEN 'hot' WHEN 1 THEN 'warm' WHEN 2 THEN 'cold' END"
    position = (
        f"CASE WHEN i % 5 = 0 THEN (SELECT id FROM question WHERE n = i % {len(questions)}) END"
    )
    db.execute(
        f"""
        WITH RECURSIVE ids(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM ids WHERE i < ?)
        INSERT INTO leads (id, user_id, chat_id, first_name, source, stage, position, score,
            temperature, script_version, cycle, cycle_started_at, created_at, stage_changed_at,
            opted_out_at, blocked_at, version)
        SELECT i, 1000000000 + i, 1000000000 + i, 'Лид ' || i, 'src' || (i * 7919 % {SOURCES}),
            ?, {position}, i % 100, {temperature}, ? || '@' || (i % 3), 1, {created}, {created},
            {created}, CASE WHEN i % 17 = 0 THEN {created} END,
            CASE WHEN i % 23 = 0 THEN {created} END, 1
        FROM ids""",
        (leads, script.funnel_order[0], script.id),
    )
    # Events in time order, as the bot appends them: one lead's events are scattered.
    db.execute(
        f"""
        INSERT INTO stage_events (lead_id, from_stage, to_stage, at, cause)
        SELECT l.id, p.from_stage, p.to_stage,
            {STAMP.format(f"{EPOCH} + l.id * {LEAD_EVERY} + p.off + l.id % 977")}, 'bench'
        FROM leads l JOIN pattern p ON p.p = (l.id * 2654435761) % {PATTERNS}
        ORDER BY 4"""
    )
    db.execute(
        f"""
        INSERT INTO answers (lead_id, question, value, option, score, at, superseded)
        SELECT l.id, q.id, q.option, q.option, 10,
            {STAMP.format(f"{EPOCH} + l.id * {LEAD_EVERY} + 60 * (q.n + 1)")}, 0
        FROM leads l JOIN question q ON q.n < (l.id * 40503) % {len(questions) + 1}"""
    )
    db.execute(
        f"""
        INSERT INTO purchases (lead_id, amount, currency, at, recorded_by)
        SELECT id, 6900 * (1 + id % 3), 'RUB',
            {STAMP.format(f"{EPOCH} + id * {LEAD_EVERY} + 86400 * (1 + id % 20)")}, 1
        FROM leads WHERE id % 20 = 0"""
    )
    db.execute(
        f"""
        WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {SOURCES - 1})
        INSERT INTO ad_spend (source, amount, currency, at, recorded_by)
        SELECT 'src' || i, 100000 + 1000 * i, 'RUB', {STAMP.format(EPOCH + 86400)}, 1 FROM s
        WHERE i % 2 = 0"""
    )
    db.commit()
    db.execute("ANALYZE")
    db.commit()
    db.close()


def ready(path: Path, leads: int) -> bool:
    if not path.exists():
        return False
    try:
        db = sqlite3.connect(path)
        try:
            found = db.execute("SELECT max(id) FROM leads").fetchone()[0]
            events = db.execute("SELECT max(id) FROM stage_events").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return False
    return found == leads and events == leads * EVENTS_PER_LEAD


async def prepare(path: Path, script: Script, leads: int, fresh: bool) -> float:
    """Seconds spent generating; zero when a database of the right size is reused (after
    bringing its schema to the latest migration, which fills any rollup added since)."""
    if not fresh and ready(path, leads):
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            await migrate(engine)
        finally:
            await engine.dispose()
        return 0.0
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    await migrate(engine)
    await engine.dispose()
    # Bulk rows go in with the rollup triggers off, then one rebuild fills the rollups: the
    # same path an existing database takes when it is upgraded.
    _in_transaction(path, rollup.uninstall)
    generate(path, script, leads)
    rebuilding = time.perf_counter()
    _in_transaction(path, rollup.rebuild)
    print(f"rollups rebuilt from the log in {time.perf_counter() - rebuilding:.1f} s")
    return time.perf_counter() - started


def _in_transaction(path: Path, work: Callable[[sqlalchemy.Connection], None]) -> None:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            work(connection)
    finally:
        engine.dispose()


def now_for(leads: int) -> datetime:
    """A day after the newest lead, so "7d" and "30d" cover the latest leads."""
    return datetime.fromtimestamp(EPOCH + leads * LEAD_EVERY + 86400, UTC)


async def measure(
    url: str, script: Script, leads: int, runs: int, period_text: str
) -> list[float]:
    now = now_for(leads)
    engine = create_engine(url)
    factory = sessionmaker(engine)
    period = parse_period(period_text, now)
    timings = []
    try:
        for _ in range(runs):
            async with factory() as session:
                started = time.perf_counter()
                report = await funnel_report(session, script, now=now, period=period)
                timings.append(time.perf_counter() - started)
        print(
            f"report: {report.totals.leads} leads, first stage {report.totals.reached_first}, "
            f"customers {report.totals.customers}, revenue {report.money.revenue:.0f}"
        )
    finally:
        await engine.dispose()
    return timings


# -- PostgreSQL -----------------------------------------------------------------------------

PG_STAMP = "to_timestamp(CAST({} AS double precision))"


async def prepare_postgres(url: str, script: Script, leads: int, fresh: bool) -> float:
    """Seconds spent filling the database; zero when it already holds this dataset."""
    engine = create_engine(url)
    try:
        await migrate(engine)
        async with engine.connect() as connection:
            found = (
                await connection.exec_driver_sql(
                    "SELECT (SELECT max(id) FROM leads), (SELECT max(id) FROM stage_events)"
                )
            ).one()
        if not fresh and tuple(found) == (leads, leads * EVENTS_PER_LEAD):
            return 0.0
        started = time.perf_counter()
        async with engine.begin() as connection:
            # Bulk rows go in with the rollup triggers off, then one rebuild fills the
            # rollups, as for SQLite.
            await connection.run_sync(rollup.uninstall)
            for statement in _postgres_fill(script, leads):
                await connection.exec_driver_sql(statement)
        rebuilding = time.perf_counter()
        async with engine.begin() as connection:
            await connection.run_sync(rollup.rebuild)
        print(f"rollups rebuilt from the log in {time.perf_counter() - rebuilding:.1f} s")
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("VACUUM ANALYZE")
        return time.perf_counter() - started
    finally:
        await engine.dispose()


def _literal(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _postgres_fill(script: Script, leads: int) -> list[str]:
    """The same dataset as `generate`, in PostgreSQL's SQL (generate_series on the server)."""
    rng = random.Random(20260101)
    pattern_rows = ", ".join(
        f"({p}, {_literal(to)}, {_literal(frm)}, {off})"
        for p, events in enumerate(patterns(script, rng))
        for to, frm, off in events
    )
    questions = script.questions
    question_rows = ", ".join(
        f"({n}, {_literal(q.id)}, {_literal(q.options[0].id if q.options else None)})"
        for n, q in enumerate(questions)
    )
    created = PG_STAMP.format(f"{EPOCH} + i * {LEAD_EVERY}")
    at_lead = PG_STAMP.format(f"{EPOCH} + l.id * {LEAD_EVERY} + p.off + l.id % 977")
    answered = PG_STAMP.format(f"{EPOCH} + l.id * {LEAD_EVERY} + 60 * (q.n + 1)")
    paid = PG_STAMP.format(f"{EPOCH} + id * {LEAD_EVERY} + 86400 * (1 + id % 20)")
    return [
        "TRUNCATE leads, stage_events, answers, purchases, ad_spend, touches, notifications, "
        "rollup_leads, rollup_gaps, rollup_questions, rollup_daily_leads, rollup_daily_gaps, "
        "rollup_daily_questions, rollup_money, rollup_first_purchases RESTART IDENTITY CASCADE",
        "CREATE TEMP TABLE pattern (p INTEGER, to_stage TEXT, from_stage TEXT, off INTEGER) "
        "ON COMMIT DROP",
        f"INSERT INTO pattern VALUES {pattern_rows}",
        "CREATE TEMP TABLE question (n INTEGER, id TEXT, option TEXT) ON COMMIT DROP",
        f"INSERT INTO question VALUES {question_rows}",
        f"""INSERT INTO leads (id, user_id, chat_id, first_name, source, stage, position, score,
                temperature, script_version, cycle, cycle_started_at, created_at,
                stage_changed_at, opted_out_at, blocked_at, version, entered)
            SELECT i, 1000000000 + i, 1000000000 + i, 'Лид ' || i,
                'src' || (i * 7919 % {SOURCES}), {_literal(script.funnel_order[0])},
                CASE WHEN i % 5 = 0 THEN (SELECT id FROM question
                                          WHERE n = i % {len(questions)}) END,
                i % 100,
                CASE i % 4 WHEN 0 THEN 'hot' WHEN 1 THEN 'warm' WHEN 2 THEN 'cold' END,
                {_literal(script.id)} || '@' || (i % 3), 1, {created}, {created}, {created},
                CASE WHEN i % 17 = 0 THEN {created} END,
                CASE WHEN i % 23 = 0 THEN {created} END, 1, ','
            FROM generate_series(CAST(1 AS BIGINT), {leads}) AS i""",
        # Events in time order, as the bot appends them: one lead's events are scattered.
        f"""INSERT INTO stage_events (lead_id, from_stage, to_stage, at, cause)
            SELECT l.id, p.from_stage, p.to_stage, {at_lead}, 'bench'
            FROM leads l JOIN pattern p ON p.p = (l.id * 2654435761) % {PATTERNS}
            ORDER BY 4""",
        f"""INSERT INTO answers (lead_id, question, value, option, score, at, superseded)
            SELECT l.id, q.id, q.option, q.option, 10, {answered}, false
            FROM leads l JOIN question q
              ON q.n < (CAST(l.id AS BIGINT) * 40503) % {len(questions) + 1}""",
        f"""INSERT INTO purchases (lead_id, amount, currency, at, recorded_by)
            SELECT id, 6900 * (1 + id % 3), 'RUB', {paid}, 1 FROM leads WHERE id % 20 = 0""",
        f"""INSERT INTO ad_spend (source, amount, currency, at, recorded_by)
            SELECT 'src' || i, 100000 + 1000 * i, 'RUB', {PG_STAMP.format(EPOCH + 86400)}, 1
            FROM generate_series(0, {SOURCES - 1}) AS i WHERE i % 2 = 0""",
        # Explicit ids above: the next lead the bot creates must not collide with them.
        "SELECT setval(pg_get_serial_sequence('leads', 'id'), (SELECT max(id) FROM leads))",
    ]


def _engine_name(url: str) -> str:
    return "postgresql" if url.startswith("postgresql") else "sqlite"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--target", type=float, default=1.0, help="seconds for the best run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--period", default="all")
    parser.add_argument("--script", type=Path, default=SCRIPT)
    parser.add_argument("--fresh", action="store_true", help="regenerate the database")
    parser.add_argument("--data-dir", type=Path, default=DATA, help="where the database lives")
    parser.add_argument(
        "--database-url",
        default=None,
        help="a PostgreSQL scratch database (postgresql+asyncpg://...) instead of SQLite",
    )
    parser.add_argument("--json", action="store_true", help="end with a JSON line")
    args = parser.parse_args(argv)
    if args.leads < 1 or args.runs < 1:
        parser.error("--leads and --runs must be positive")
    if args.database_url and not args.database_url.startswith("postgresql+asyncpg://"):
        parser.error("--database-url must be postgresql+asyncpg://... (SQLite is the default)")
    script = load_script(args.script)
    if args.database_url:
        url, where = args.database_url, "PostgreSQL"
        spent = asyncio.run(prepare_postgres(url, script, args.leads, args.fresh))
    else:
        args.data_dir.mkdir(parents=True, exist_ok=True)
        path = args.data_dir / f"report-{args.leads}.sqlite"
        url, where = f"sqlite+aiosqlite:///{path}", path.name
        spent = asyncio.run(prepare(path, script, args.leads, args.fresh))
    events = args.leads * EVENTS_PER_LEAD
    print(f"dataset: {args.leads:,} leads, {events:,} stage events in {where}"
          + (f" (generated in {spent:.1f} s)" if spent else " (reused)"))  # fmt: skip
    timings = asyncio.run(measure(url, script, args.leads, args.runs, args.period))
    best, median = min(timings), statistics.median(timings)
    print(f"period {args.period}: best {best:.3f} s, median {median:.3f} s over {len(timings)} "
          f"runs (target {args.target:.3f} s)")  # fmt: skip
    ok = best <= args.target
    if args.json:
        print(json.dumps({
            "bench": "report", "engine": _engine_name(url), "leads": args.leads,
            "events": events, "period": args.period, "best_s": round(best, 4),
            "median_s": round(median, 4), "runs": len(timings), "target_s": args.target,
            "generated_s": round(spent, 1), "ok": ok,
        }))  # fmt: skip
    if not ok:
        print(f"FAIL: the report took {best:.3f} s, over the {args.target:.3f} s target")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
