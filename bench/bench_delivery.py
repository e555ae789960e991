"""Benchmark: a 2,000-touch wave through the real aiogram Bot and the rate limiter to the
emulator at Telegram's 30 messages/s: the achieved rate and the number of 429 answers.

`python -m bench.bench_delivery [--touches N] [--rate R]`; exits 1 when the rate is below 99%
of the configured one or any 429 was answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bench.wave import MIN_SHARE, add_wave, pacing
from bot import db
from bot.delivery_middleware import RateLimitMiddleware
from bot.outbox import Outbox
from bot.ratelimit import RateLimiter
from bot.settings import DEFAULT_SCRIPT
from funnel.core.clock import FakeClock
from funnel.script.loading import load_script

# Tuesday noon in Moscow, inside the default send window.
NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


async def run(touches: int, rate: float, database: Path, as_json: bool = False) -> int:
    engine = db.create_engine(f"sqlite+aiosqlite:///{database}")
    await db.migrate(engine)
    sessions = db.sessionmaker(engine)
    script = load_script(DEFAULT_SCRIPT)
    async with TelegramEmulator(rate_per_second=rate) as emu:
        async with sessions() as session:
            add_wave(session, emu, touches, script, NOW)
            await session.commit()
        limiter = RateLimiter(rate_per_second=rate)
        session_ = AiohttpSession(api=TelegramAPIServer.from_base(emu.base_url))
        session_.middleware(RateLimitMiddleware(limiter))
        bot = Bot(DEFAULT_TOKEN, session=session_)
        outbox = Outbox(
            sessions=sessions,
            bot=bot,
            script=lambda: script,
            clock=FakeClock(NOW),
            zone=ZoneInfo("Europe/Moscow"),
            manager_chat_id=None,
            limiter=limiter,
        )
        try:
            started = time.perf_counter()
            stats = await outbox.tick()
            elapsed = time.perf_counter() - started
        finally:
            await bot.session.close()
        sends = [r for r in emu.requests_for("sendMessage") if r.status == 200]
        too_many = emu.stats.too_many_requests
    await engine.dispose()
    achieved = pacing([r.at for r in sends])
    overall = stats.sent / elapsed if elapsed > 0 else 0.0
    ok = stats.sent == touches and too_many == 0 and achieved >= MIN_SHARE * rate
    if as_json:
        print(
            json.dumps(
                {
                    "touches": touches,
                    "sent": stats.sent,
                    "rate": rate,
                    "achieved_rate": round(achieved, 2),
                    "share": round(achieved / rate, 4),
                    "too_many_requests": too_many,
                    "failed": stats.failed,
                    "unknown": stats.unknown,
                    "seconds": round(elapsed, 1),
                    "ok": ok,
                }
            )
        )
        return 0 if ok else 1
    print(
        f"delivery wave: {stats.sent}/{touches} sent in {elapsed:.1f}s (tick incl. planning); "
        f"pacing {achieved:.2f}/s between first and last request, {overall:.2f}/s overall; "
        f"configured {rate:g}/s ({100 * achieved / rate:.1f}%); 429 answers: {too_many}; "
        f"failed {stats.failed}, unknown {stats.unknown}"
    )
    if not ok:
        print("FAIL: below the target rate, 429s, or touches not sent", file=sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_delivery", description=__doc__)
    parser.add_argument("--touches", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    try:
        return asyncio.run(run(args.touches, args.rate, workdir / "bench.sqlite3", args.json))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
