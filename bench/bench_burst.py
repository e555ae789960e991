"""Benchmark: a burst of `/start` (default 10,000 within one second) against the real bot.

`python -m bot run` on SQLite at Telegram's 30 messages/s, the emulator enforcing the same
limits. Every prospect must get exactly one welcome, none lost, no 429; the figure is the time
from the first /start to the last welcome against the floor Telegram's 30/s sets (N / 30 s),
plus the bot's CPU and resident memory while it works through the queue.

`python -m bench.bench_burst [--starts N] [--rate R] [--json]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bench.bench_cpu import ROOT, process_cpu, resident_mb

# Within this share of the floor the bot is as fast as Telegram lets it be.
TARGET_OVER_FLOOR = 1.10


async def run(starts: int, rate: float, workdir: Path) -> dict[str, object]:
    async with TelegramEmulator(rate_per_second=rate) as emu:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
            "BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_URL": emu.base_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'leadbot.sqlite3'}",
            "RATE_PER_SECOND": f"{rate:g}",
            "ADMIN_IDS": "",
            "MANAGER_CHAT_ID": "",
            "CRM_WEBHOOK_URL": "",
            "LOG_LEVEL": "WARNING",
        }
        log = (workdir / "bot.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "run",
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )
        try:
            await emu.wait_until(lambda: any(r.method == "getUpdates" for r in emu.requests), 120)
            idle_rss = resident_mb(process.pid)
            users = [emu.add_user(f"Burst{i}") for i in range(starts)]
            since = len(emu.requests)
            cpu_before = process_cpu(process.pid)
            started = time.perf_counter()
            for index, user in enumerate(users):
                await user.send("/start burst")
                if index % 500 == 499:
                    await asyncio.sleep(0)  # let the emulator serve while the burst goes in
            sent_in = time.perf_counter() - started
            chats = {user.chat_id for user in users}
            peak_rss = 0.0

            def welcomed() -> int:
                return sum(1 for user in users if user.messages)

            deadline = started + max(600.0, 3 * starts / rate)
            while welcomed() < starts and time.perf_counter() < deadline:
                peak_rss = max(peak_rss, resident_mb(process.pid))
                with contextlib.suppress(TimeoutError):
                    await emu.wait_until(lambda: welcomed() >= starts, 1.0)
            last_reply = time.perf_counter() - started
            await asyncio.sleep(2.0)  # a doubled reply would arrive now
            cpu = process_cpu(process.pid) - cpu_before
            peak_rss = max(peak_rss, resident_mb(process.pid))
            replies = Counter(
                request.params.get("chat_id")
                for request in emu.requests[since:]
                if request.method == "sendMessage" and request.status == 200
            )
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 60)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            log.close()
        answered = sum(1 for chat in chats if replies.get(chat, 0) + replies.get(str(chat), 0))
        doubled = sum(1 for chat in chats if replies.get(chat, 0) + replies.get(str(chat), 0) > 1)
        floor = starts / rate
        return {
            "starts": starts,
            "rate": rate,
            "sent_in_seconds": round(sent_in, 2),
            "answered": answered,
            "lost": starts - answered,
            "doubled": doubled,
            "too_many_requests": emu.stats.too_many_requests,
            "last_reply_seconds": round(last_reply, 1),
            "floor_seconds": round(floor, 1),
            "over_floor": round(last_reply / floor, 3),
            "cpu_seconds": round(cpu, 2),
            "idle_rss_mb": round(idle_rss, 1),
            "peak_rss_mb": round(peak_rss, 1),
            "ok": answered == starts
            and doubled == 0
            and emu.stats.too_many_requests == 0
            and last_reply <= TARGET_OVER_FLOOR * floor,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_burst", description=__doc__)
    parser.add_argument("--starts", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-burst-"))
    try:
        result = asyncio.run(run(args.starts, args.rate, workdir))
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"burst: {result['starts']} /start sent in {result['sent_in_seconds']} s; answered "
            f"{result['answered']}, lost {result['lost']}, doubled {result['doubled']}, "
            f"429: {result['too_many_requests']}; "
            f"last reply after {result['last_reply_seconds']} s"
            f" (floor {result['floor_seconds']} s at {result['rate']:g}/s, "
            f"x{result['over_floor']}); bot CPU {result['cpu_seconds']} s, "
            f"resident memory {result['idle_rss_mb']} MB idle, {result['peak_rss_mb']} MB at peak"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
