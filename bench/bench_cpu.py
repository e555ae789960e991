"""Benchmark: the bot's CPU per update against a bare aiogram bot, on the same load, in one run.

Both bots run as real processes (`python -m bot run` on SQLite, and `bench/bare_bot.py`, which
stores nothing) against the in-process emulator. The same simulated prospects do whole
dialogues: /start and four button taps, `--concurrency` of them at a time. The figure is the
process's own CPU time (user + system, from /proc) between the first update and the last
reply, divided by the updates it handled; the two are measured in the same run because these
machines are noisy and only the ratio is stable. The emulator's own CPU is in this process and
is not counted. Start-up is spawn → first getUpdates, on a database `python -m bot migrate`
brought to the schema's head first (a restart's start-up, as deployed).

`python -m bench.bench_cpu [--dialogues N] [--concurrency C] [--profile FILE] [--json]`
`--profile` runs Leadbot under pyinstrument and writes its text report to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = 4
TARGET_RATIO = 1.5
WARMUP = 10  # dialogues before the measured ones
WARMUP_BASE = 1_000_000  # their prospects' numbers, apart from the measured ones
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Measure:
    name: str
    updates: int
    cpu_seconds: float
    wall_seconds: float
    requests: dict[str, int]
    startup_seconds: float
    rss_mb: float

    @property
    def cpu_ms_per_update(self) -> float:
        return 1000 * self.cpu_seconds / self.updates if self.updates else 0.0

    @property
    def updates_per_cpu_second(self) -> float:
        return self.updates / self.cpu_seconds if self.cpu_seconds else 0.0


def process_cpu(pid: int) -> float:
    """User + system CPU seconds the process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def resident_mb(pid: int) -> float:
    """The process's resident memory now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def has_buttons(message: BotMessage) -> bool:
    return bool(message.labels)


async def dialogue(emu: TelegramEmulator, number: int, rng: random.Random) -> int:
    """One prospect: /start and an answer to every question. Returns the updates sent."""
    user = emu.add_user(f"Prospect{number}")
    await user.send("/start bench")
    message = await user.wait_for(has_buttons, timeout=120)
    for answered in range(1, QUESTIONS + 1):
        # Only the answer options: Leadbot's question may carry no other button.
        await user.press(message, rng.choice(message.labels))
        if answered < QUESTIONS:
            message = await user.wait_for(has_buttons, timeout=120, after=message)
        else:
            await user.wait_for(lambda m: True, timeout=120, after=message)
    return 1 + QUESTIONS


async def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    emu: TelegramEmulator,
    dialogues: int,
    concurrency: int,
    seed: int,
) -> Measure:
    since = len(emu.requests)
    spawned = time.perf_counter()
    log = (workdir / f"{name}.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=workdir,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
    )
    try:
        await emu.wait_until(
            lambda: any(r.method == "getUpdates" for r in emu.requests[since:]), 120
        )
        startup = time.perf_counter() - spawned
        await asyncio.sleep(1.0)  # start-up work (migrations, imports) settles
        # A few dialogues first, not counted: both bots build the validators of the Bot API
        # types they use on first use (Leadbot defers them, see bot/lazy_models.py) and warm
        # their caches; the figure is the steady state.
        warm = random.Random(seed + 1)
        await asyncio.gather(*(dialogue(emu, WARMUP_BASE + i, warm) for i in range(WARMUP)))
        rng = random.Random(seed)
        seeds = [rng.randrange(2**32) for _ in range(dialogues)]
        gate = asyncio.Semaphore(concurrency)

        async def one(number: int) -> int:
            async with gate:
                return await dialogue(emu, number, random.Random(seeds[number]))

        start_requests = len(emu.requests)
        cpu_before = process_cpu(process.pid)
        started = time.perf_counter()
        updates = sum(await asyncio.gather(*(one(i) for i in range(dialogues))))
        wall = time.perf_counter() - started
        cpu = process_cpu(process.pid) - cpu_before
        counts: dict[str, int] = {}
        for request in emu.requests[start_requests:]:
            if request.method != "getUpdates":
                counts[request.method] = counts.get(request.method, 0) + 1
        rss = resident_mb(process.pid)
        return Measure(
            name, updates, cpu, wall, dict(sorted(counts.items())), round(startup, 2), rss
        )
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT if "pyinstrument" in command else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def compile_project() -> None:
    """Byte-compiles the bot's packages first, as installing the wheel does: the start-up
    figure is an installed bot's (aiogram's were compiled when it was installed), also
    where PYTHONDONTWRITEBYTECODE keeps a checkout from caching them."""
    for package in ("bot", "funnel", "handlers"):
        compileall.compile_dir(ROOT / package, quiet=1)


def base_env(emu: TelegramEmulator) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": emu.base_url,
    }


async def run(
    dialogues: int, concurrency: int, seed: int, workdir: Path, profile: Path | None
) -> tuple[Measure, Measure]:
    compile_project()
    # Telegram's limits off on both sides: the figure is CPU, not pacing, and both bots
    # must see the same load.
    async with TelegramEmulator(rate_limits=False) as emu:
        bare = await measure(
            "bare-aiogram",
            [sys.executable, "-m", "bench.bare_bot"],
            base_env(emu),
            workdir,
            emu,
            dialogues,
            concurrency,
            seed,
        )
        env = {
            **base_env(emu),
            "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'leadbot.sqlite3'}",
            "RATE_PER_SECOND": "1000",
            "TIMEZONE": "Europe/Moscow",
            "ADMIN_IDS": "",
            "MANAGER_CHAT_ID": "",
            "CRM_WEBHOOK_URL": "",
            "LOG_LEVEL": "WARNING",
            # As the systemd unit and the image run it (docs/deploy.md): two malloc arenas,
            # not one per SQLite connection thread.
            "MALLOC_ARENA_MAX": "2",
        }
        # The schema first, as a deployment does (`python -m bot migrate` before the
        # instances start, docs/deploy.md): start-up is a restart's, not the first run's.
        migrated = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "migrate", cwd=workdir, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await migrated.wait() != 0:
            raise RuntimeError("python -m bot migrate failed")
        command = [sys.executable, "-m", "bot", "run"]
        if profile is not None:
            command = [
                sys.executable,
                "-m",
                "pyinstrument",
                "--renderer",
                "text",
                "--outfile",
                str(profile),
                "-m",
                "bot",
                "run",
            ]
        leadbot = await measure(
            "leadbot", command, env, workdir, emu, dialogues, concurrency, seed
        )
    return bare, leadbot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cpu", description=__doc__)
    parser.add_argument("--dialogues", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    try:
        bare, leadbot = asyncio.run(
            run(args.dialogues, args.concurrency, args.seed, workdir, args.profile)
        )
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    ratio = leadbot.cpu_ms_per_update / bare.cpu_ms_per_update if bare.cpu_seconds else 0.0
    result = {
        "dialogues": args.dialogues,
        "concurrency": args.concurrency,
        "bare": {**asdict(bare), "cpu_ms_per_update": round(bare.cpu_ms_per_update, 3)},
        "leadbot": {**asdict(leadbot), "cpu_ms_per_update": round(leadbot.cpu_ms_per_update, 3)},
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "ok": ratio <= TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for m in (bare, leadbot):
            print(
                f"{m.name:>13}: {m.updates} updates, {m.cpu_seconds:.2f} s CPU = "
                f"{m.cpu_ms_per_update:.2f} ms/update ({m.updates_per_cpu_second:.0f} updates "
                f"per CPU second), wall {m.wall_seconds:.1f} s; start-up {m.startup_seconds} s, "
                f"resident {m.rss_mb} MB; requests {m.requests}"
            )
        print(f"ratio leadbot/bare: {ratio:.2f}x (target <= {TARGET_RATIO}x)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
