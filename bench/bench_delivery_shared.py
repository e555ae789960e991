"""Benchmark: the delivery wave shared by two instances. Two `python -m bot run --webhook`
processes on one PostgreSQL database and one Redis drain one wave of due touches (default
2,000) through the outbox, whose rows each claims with FOR UPDATE SKIP LOCKED, and the limiter
they share in Redis, to the emulator at Telegram's 30 messages/s.

Figures: touches sent and each exactly once (counted per chat at the emulator), the 429
answers, the combined rate against the configured one, and each instance's share of the sends.

`python -m bench.bench_delivery_shared [--touches N] [--rate R] [--json]`; exits 1 when a touch
is missing or doubled, any 429 was answered, the rate is below 99% of the configured one, or
an instance sent much less than an even split (MIN_FAIR_PART of it). `--instances 1` runs
the same path alone: what the database and Redis cost without a second instance.

PostgreSQL: a scratch database created (and dropped after) on the server of
`BENCH_POSTGRES_URL`, else postgres@127.0.0.1:5432; never the database the URL names, which
other benchmarks fill. Redis: `BENCH_REDIS_URL`, else redis://127.0.0.1:6379/0, under a key
prefix of the run's own (nothing else is touched). When either does not answer the bench
says "skipped" with the reason and exits 0. `BENCH_LOG_LEVEL` (default WARNING): the
instances' log level, INFO shows each one's outbox rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bench.wave import MIN_SHARE, add_wave, busiest_second, pacing
from bot import db
from bot.settings import DEFAULT_SCRIPT
from devtools.webhook_instance import WebhookInstance
from funnel.core.models import Touch
from funnel.script.loading import load_script
from funnel.script.schema import SendWindow

ROOT = Path(__file__).resolve().parent.parent
SERVER_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SERVER_REDIS = "redis://127.0.0.1:6379/0"
# Instances sharing one limiter split the sends about evenly; one sending less than this part
# of an even split hardly took part (its start-up counts too, hence well below the whole).
MIN_FAIR_PART = 0.4
# How often each instance's scheduler looks for due touches.
TICK_SECONDS = 0.5
# After the last expected send: anything sent twice would have arrived by then.
SETTLE_SECONDS = 2.0


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _beside(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{database}"


async def _unavailable(postgres: str, redis_url: str) -> str | None:
    """Why the bench cannot run here (a server does not answer, a client is missing), or None."""
    try:
        import asyncpg
        from redis.asyncio import Redis
    except ImportError as error:
        return f"{error.name} is not installed (make setup installs it)"
    try:
        connection = await asyncio.wait_for(asyncpg.connect(_dsn(postgres)), 5)
    except Exception as error:
        return f"PostgreSQL does not answer at {_where(postgres)} ({type(error).__name__})"
    try:
        may_create = await connection.fetchval(
            "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
        )
    finally:
        await connection.close()
    if not may_create:
        return f"the PostgreSQL role at {_where(postgres)} may not create its scratch database"
    client = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except Exception as error:
        return f"Redis does not answer at {_where(redis_url)} ({type(error).__name__})"
    finally:
        await client.aclose()
    return None


def _where(url: str) -> str:
    """host:port of a URL, without the credentials it may carry."""
    rest = url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return rest.split("/", 1)[0]


@contextlib.asynccontextmanager
async def _scratch_database(server: str) -> Any:
    """A database of this run's own beside `server`'s, dropped after."""
    import asyncpg

    base = server.rsplit("/", 1)[1].split("?", 1)[0] or "postgres"
    name = f"{base}_delivery_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(_dsn(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _beside(server, name)
    finally:
        admin = await asyncpg.connect(_dsn(server))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _forget_keys(redis_url: str, prefix: str) -> None:
    """The run's limiter keys expire once idle; removing them at once leaves Redis as found."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def open_zone(window: SendWindow, now: datetime) -> str:
    """A fixed-offset time zone in which `now` is the middle of the send window, so the real
    clock the instances run on finds the wave sendable whatever the hour of the run."""
    start = window.start.hour * 60 + window.start.minute
    end = window.end.hour * 60 + window.end.minute
    if start == end:
        return "UTC"  # always open
    middle = (start + ((end - start) % 1440) / 2) % 1440
    offset = round((middle - (now.hour * 60 + now.minute)) / 60) % 24
    if offset > 14:  # the offsets that exist: UTC-12 to UTC+14
        offset -= 24
    # The Etc/GMT names count the other way round: Etc/GMT-3 is three hours ahead of UTC.
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


async def _stop(instance: WebhookInstance) -> int | None:
    """Its exit code; None when it had to be killed."""
    try:
        return await instance.terminate(30)
    except TimeoutError:
        return None
    finally:
        await instance.close()


async def _wait_for_wave(emu: TelegramEmulator, touches: int, rate: float) -> None:
    """Until every touch reached the emulator, or nothing arrived for a while (then the
    figures tell what is missing)."""
    deadline = time.monotonic() + touches / rate * 2 + 120
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(emu.requests_for("sendMessage"))
        if count >= touches:
            return
        if count != seen:
            seen, quiet_since = count, time.monotonic()
        elif count > 0 and time.monotonic() - quiet_since > 30:
            return
        await asyncio.sleep(0.2)


async def run(
    touches: int, rate: float, count: int, postgres: str, redis_url: str
) -> dict[str, Any]:
    why_not = await _unavailable(postgres, redis_url)
    if why_not is not None:
        return {"bench": "delivery-shared", "skipped": why_not, "ok": True}
    script = load_script(DEFAULT_SCRIPT)
    now = datetime.now(UTC)
    zone = open_zone(script.send_window, now)
    prefix = f"bench-delivery-{secrets.token_hex(4)}"
    async with _scratch_database(postgres) as database:
        engine = db.create_engine(database)
        workdir = Path(tempfile.mkdtemp(prefix="bench-delivery-shared-"))  # the logs
        try:
            await db.migrate(engine)
            async with TelegramEmulator(rate_per_second=rate) as emu:
                # The wave is due before either instance starts: both find it at their
                # first ticks and share it from there.
                async with db.sessionmaker(engine)() as session:
                    add_wave(session, emu, touches, script, now)
                    await session.commit()
                env = {
                    **os.environ,
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
                    "BOT_TOKEN": DEFAULT_TOKEN,
                    "TELEGRAM_API_URL": emu.base_url,
                    "DATABASE_URL": database,
                    "REDIS_URL": redis_url,
                    "REDIS_PREFIX": prefix,
                    "WEBHOOK_URL": "https://bot.school.example/telegram",
                    "WEBHOOK_SECRET": "bench_" + secrets.token_hex(8),
                    "TICK_SECONDS": str(TICK_SECONDS),
                    "TIME_SCALE": "1",
                    "RATE_PER_SECOND": f"{rate:g}",
                    "TIMEZONE": zone,
                    "MANAGER_CHAT_ID": "",
                    "ADMIN_IDS": "",
                    "CRM_WEBHOOK_URL": "",
                    "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
                }
                names = [chr(ord("a") + n) for n in range(count)]
                instances = [WebhookInstance(name, workdir, env) for name in names]
                try:
                    started = time.perf_counter()
                    await asyncio.gather(*(i.start() for i in instances))
                    await asyncio.gather(*(i.wait_healthy(120) for i in instances))
                    healthy = time.perf_counter() - started
                    await _wait_for_wave(emu, touches, rate)
                    seconds = time.perf_counter() - started
                    await asyncio.sleep(SETTLE_SECONDS)
                    per_instance = [await i.metrics() for i in instances]
                finally:
                    codes = [await _stop(i) for i in instances]
                logs = {i.name: i.tail() for i in instances}
                requests = emu.requests_for("sendMessage")
                too_many = emu.stats.too_many_requests
            async with db.sessionmaker(engine)() as session:
                rows = await session.execute(
                    select(Touch.status, func.count()).group_by(Touch.status)
                )
                statuses = {status: int(n) for status, n in rows.all()}
        finally:
            await engine.dispose()
            await _forget_keys(redis_url, prefix)
            shutil.rmtree(workdir, ignore_errors=True)
    sends = [r for r in requests if r.status == 200]
    per_chat = Counter(r.params.get("chat_id") for r in sends)
    doubled = sum(n - 1 for n in per_chat.values() if n > 1)
    achieved = pacing([r.at for r in sends])
    first = min((r.at for r in sends), default=0.0)
    # When the 429s came (seconds into the wave): one burst or spread over it.
    refused_at = sorted(round(r.at - first, 1) for r in requests if r.status == 429)
    sent_by = {
        name: int(figures.get("leadbot_sends_total{outcome=sent}", 0))
        for name, figures in zip(names, per_instance, strict=True)
    }
    total = sum(sent_by.values())
    shares = {name: round(n / total, 4) if total else 0.0 for name, n in sent_by.items()}
    ok = (
        len(per_chat) == touches
        and doubled == 0
        and too_many == 0
        and achieved >= MIN_SHARE * rate
        and min(shares.values()) >= MIN_FAIR_PART / count
        and all(code == 0 for code in codes)
    )
    result: dict[str, Any] = {
        "bench": "delivery-shared",
        "instances": count,
        "touches": touches,
        "sent": len(sends),
        "chats_reached": len(per_chat),
        "missing": touches - len(per_chat),
        "doubled": doubled,
        "too_many_requests": too_many,
        "refused": len(requests) - len(sends) - too_many,
        "rate": rate,
        "achieved_rate": round(achieved, 2),
        "share": round(achieved / rate, 4),
        "busiest_second": busiest_second([r.at for r in sends]),
        "too_many_at_seconds": refused_at,
        "sent_by_instance": sent_by,
        "instance_shares": shares,
        "smaller_instance_share": min(shares.values()),
        "touch_statuses": statuses,
        "exit_codes": codes,
        "startup_seconds": round(healthy, 1),
        "seconds": round(seconds, 1),
        "ok": ok,
    }
    if not ok:
        result["logs"] = logs
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_delivery_shared", description=__doc__
    )
    parser.add_argument("--touches", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument(
        "--instances", type=int, default=2, help="1: the same path (PostgreSQL, Redis) alone"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.touches < 2 or args.rate <= 0 or not 1 <= args.instances <= 26:
        parser.error("--touches must be at least 2, --rate positive, --instances 1 to 26")
    postgres = os.environ.get("BENCH_POSTGRES_URL") or SERVER_POSTGRES
    redis_url = os.environ.get("BENCH_REDIS_URL") or SERVER_REDIS
    result = asyncio.run(run(args.touches, args.rate, args.instances, postgres, redis_url))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    elif "skipped" in result:
        print(f"delivery shared by instances: skipped ({result['skipped']})")
    else:
        r = result
        shares = ", ".join(
            f"{name}: {count} ({100 * r['instance_shares'][name]:.1f}%)"
            for name, count in r["sent_by_instance"].items()
        )
        print(
            f"delivery wave shared by {r['instances']} instances: {r['chats_reached']}/"
            f"{r['touches']} chats reached, {r['doubled']} doubled, in {r['seconds']:.1f}s "
            f"(start-up {r['startup_seconds']:.1f}s); pacing {r['achieved_rate']:.2f}/s "
            f"between first and last request, configured {r['rate']:g}/s "
            f"({100 * r['share']:.1f}%); 429 answers: {r['too_many_requests']}; "
            f"sent by {shares}"
        )
        if not r["ok"]:
            for name, tail in r.get("logs", {}).items():
                print(f"--- instance {name}\n{tail}", file=sys.stderr)
            print(
                "FAIL: touches missing or doubled, 429s, below the target rate, or an "
                "instance idle",
                file=sys.stderr,
            )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
