"""Benchmark: floods from a few prospects while many others talk and pay, against the real bot.

`python -m bot run` on SQLite (polling, then `--webhook`), Telegram's limits on both sides
(30 messages/s, about one a second per chat). Ten flooders each forward 200 messages at once;
meanwhile 200 other prospects start and answer a question, spread over half a minute (what
Telegram's 30/s leaves room for beside the flood), and 20 prospects who reached an invoice pay
it. Figures: the others' reply latency p50/p99, the longest pre-checkout answer, the
flooders' replies, updates lost or doubled, and the bot's CPU per update.

Targets: others' p99 <= 1.5 s, pre-checkout max <= 2 s (Telegram allows 10), nothing lost
or doubled.

`python -m bench.bench_isolation [--flooders N] [--flood N] [--talkers N] [--payers N]
[--mode polling|webhook|both] [--json]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.users import SimUser

from bench.bench_cpu import ROOT, process_cpu

TARGET_P99_SECONDS = 1.5
TARGET_PRE_CHECKOUT_SECONDS = 2.0
SPREAD_SECONDS = 30.0
PROVIDER_TOKEN = "381764678:TEST:100500"
SECRET = "bench-isolation-secret"


def hot_answers() -> list[str]:
    """The best-scored option of every question of the shipped script, read from the script
    (the benchmark never copies its labels)."""
    from funnel.script.loading import load_script

    script = load_script(ROOT / "scripts" / "ru.yaml")
    labels = []
    for question in script.questions:
        if question.options:
            labels.append(str(max(question.options, key=lambda option: option.score).label))
    return labels


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def run(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(7)
    answers = hot_answers()
    async with TelegramEmulator() as emu:  # Telegram's limits
        port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
            "BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_URL": emu.base_url,
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / mode / 'leadbot.sqlite3'}",
            "PAYMENT_PROVIDER_TOKEN": PROVIDER_TOKEN,
            "ADMIN_IDS": "",
            "MANAGER_CHAT_ID": "",
            "CRM_WEBHOOK_URL": "",
            "LOG_LEVEL": "WARNING",
        }
        command = [sys.executable, "-m", "bot", "run"]
        if mode == "webhook":
            env.update(
                WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram",
                WEBHOOK_SECRET=SECRET,
                WEBHOOK_LISTEN=f"127.0.0.1:{port}",
                WEBHOOK_PATH="/telegram",
            )
            command.append("--webhook")
        (workdir / mode).mkdir(parents=True, exist_ok=True)
        log = (workdir / mode / "bot.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            *command, cwd=workdir / mode, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            ready = "setWebhook" if mode == "webhook" else "getUpdates"
            await emu.wait_until(lambda: any(r.method == ready for r in emu.requests), 120)

            # Payers reach their invoice first (qualified as hot prospects).
            payers = [emu.add_user(f"Payer{i}") for i in range(args.payers)]

            async def to_invoice(user: SimUser) -> Any:
                await user.send("/start bench")
                message = await user.next_message(timeout=60)
                for label in answers:
                    await user.press(message, label)
                    message = await user.next_message(timeout=60)
                return await user.wait_for(lambda m: m.kind == "invoice", timeout=60)

            invoices = await asyncio.gather(*(to_invoice(user) for user in payers))
            flooders = [emu.add_user(f"Flooder{i}") for i in range(args.flooders)]
            for user in flooders:
                await user.send("/start")
            await asyncio.gather(*(user.next_message(timeout=60) for user in flooders))
            talkers = [emu.add_user(f"Talker{i}") for i in range(args.talkers)]
            stored_before = len(emu.requests)
            cpu_before = process_cpu(process.pid)
            updates_before = emu.stats.updates_enqueued
            started = time.perf_counter()

            for n in range(args.flood):  # every flooder forwards a pile at once
                for user in flooders:
                    await user.send(f"forwarded {n}")

            latencies: list[float] = []
            checkouts: list[float] = []

            async def talk(user: SimUser) -> None:
                await asyncio.sleep(rng.uniform(0, SPREAD_SECONDS))
                began = time.perf_counter()
                await user.send("/start")
                question = await user.next_message(timeout=120)
                latencies.append(time.perf_counter() - began)
                await asyncio.sleep(rng.uniform(0.5, 2.0))  # reading the question
                began = time.perf_counter()
                await user.press(question, answers[0])
                await user.next_message(timeout=120)
                latencies.append(time.perf_counter() - began)

            async def pay(user: SimUser, invoice: Any) -> str:
                await asyncio.sleep(rng.uniform(0, SPREAD_SECONDS / 2))
                began = time.perf_counter()
                result = await user.pay(invoice, timeout=10)
                checkouts.append(time.perf_counter() - began)
                return result.status

            statuses = await asyncio.gather(
                asyncio.gather(*(talk(user) for user in talkers)),
                asyncio.gather(*(pay(u, i) for u, i in zip(payers, invoices, strict=True))),
            )
            paid = sum(status == "paid" for status in statuses[1])
            await asyncio.sleep(3.0)  # a doubled reply would arrive now
            elapsed = time.perf_counter() - started
            cpu = process_cpu(process.pid) - cpu_before
            updates = emu.stats.updates_enqueued - updates_before
            flooder_replies = sum(
                1
                for r in emu.requests[stored_before:]
                if r.method == "sendMessage"
                and r.status == 200
                and int(r.params.get("chat_id", 0)) in {u.chat_id for u in flooders}
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
        doubled = sum(1 for user in talkers if len([m for m in user.messages if m.buttons]) > 2)
        lost = sum(1 for user in talkers if len(user.messages) < 2)
    p50 = statistics.median(latencies) if latencies else 0.0
    p99 = percentile(latencies, 0.99)
    worst_checkout = max(checkouts) if checkouts else 0.0
    return {
        "mode": mode,
        "flood": args.flood * args.flooders,
        "talkers": args.talkers,
        "payers": args.payers,
        "others_p50_seconds": round(p50, 3),
        "others_p99_seconds": round(p99, 3),
        "pre_checkout_max_seconds": round(worst_checkout, 3),
        "paid": paid,
        "flooders_replies": flooder_replies,
        "lost": lost,
        "doubled": doubled,
        "too_many_requests": emu.stats.too_many_requests,
        "seconds": round(elapsed, 1),
        "updates": updates,
        "cpu_ms_per_update": round(1000 * cpu / max(updates, 1), 2),
        "ok": p99 <= TARGET_P99_SECONDS
        and worst_checkout <= TARGET_PRE_CHECKOUT_SECONDS
        and paid == args.payers
        and lost == 0
        and doubled == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_isolation", description=__doc__)
    parser.add_argument("--flooders", type=int, default=10)
    parser.add_argument("--flood", type=int, default=200, help="messages per flooder")
    parser.add_argument("--talkers", type=int, default=200)
    parser.add_argument("--payers", type=int, default=20)
    parser.add_argument("--mode", choices=["polling", "webhook", "both"], default="both")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    modes = ["polling", "webhook"] if args.mode == "both" else [args.mode]
    workdir = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    try:
        results = [asyncio.run(run(mode, args, workdir)) for mode in modes]
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    if args.json:
        by_mode: dict[str, Any] = {r["mode"]: r for r in results}
        print(json.dumps({**by_mode, "ok": all(r["ok"] for r in results)}))
    else:
        for r in results:
            print(
                f"isolation ({r['mode']}): {r['flood']} flood messages, {r['talkers']} others, "
                f"{r['payers']} payers; others' replies p50 {r['others_p50_seconds']} s, "
                f"p99 {r['others_p99_seconds']} s (target <= {TARGET_P99_SECONDS}); "
                f"pre-checkout max {r['pre_checkout_max_seconds']} s (target <= "
                f"{TARGET_PRE_CHECKOUT_SECONDS}); paid {r['paid']}; flooders' replies "
                f"{r['flooders_replies']}; lost {r['lost']}, doubled {r['doubled']}, 429: "
                f"{r['too_many_requests']}; CPU {r['cpu_ms_per_update']} ms/update over "
                f"{r['updates']} updates"
            )
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
