"""Two bot processes in webhook mode behind one "load balancer" (the emulator delivering to
both in turn, and some updates twice at once), on one PostgreSQL database and one Redis:
many prospects go through the whole BANT dialogue at the same time, and

- no message is sent twice and no answer is recorded twice;
- no dialogue interleaves: each prospect gets the questions in order, one reply per step;
  a prospect who taps an answer twice at once (the two taps may reach the two instances
  together) has it recorded once;
- the two instances together stay within Telegram's limits (the emulator answers no 429,
  no second of sends above 30);
- each hot lead's card reaches the managers once.

Skipped unless PostgreSQL (127.0.0.1:5432, user postgres, trust) and Redis
(127.0.0.1:6379) answer. The test creates a scratch database `lb_web_<random>` and drops it,
and uses Redis database 5, flushed before and after.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram_emulator import SimUser, TelegramEmulator
from telegram_emulator.server import DEFAULT_TOKEN

from bench.wave import busiest_second
from devtools.webhook_instance import WebhookInstance
from tests.e2e.conftest import HOT, WARM

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/5"
SECRET = "two-instances_" + secrets.token_hex(8)
PATH = "/telegram"
# Enough that the two together could send well past 30 a second if each paced itself
# alone: the limit must be shared.
PROSPECTS = 100
DOUBLE_TAPPERS = 5  # every fifth prospect taps the first answer twice at once
HOT_PROSPECTS = 8  # the group takes 20 cards a minute; these all fit in one
TELEGRAM_RATE = 30  # messages a second, the bot's whole token
# Counted where the messages arrive: a slot granted by Redis reaches the emulator after its
# process's own delay (event loop, HTTP), which on a loaded machine varies by about 0.1 s,
# three messages' worth at 30/s. The grants themselves are held to the rate exactly in
# tests/test_shared_limits.py; two instances pacing themselves alone would send about 60.
ARRIVAL_SLACK = 4
MESSAGES = frozenset({"sendMessage", "sendPhoto", "sendDocument"})


def _answers(host: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(host, timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
async def database() -> AsyncIterator[str]:
    asyncpg = pytest.importorskip("asyncpg")
    pytest.importorskip("redis")
    if not (_answers(PG) and _answers(REDIS)):
        pytest.skip("needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379")
    name = f"lb_web_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(user="postgres", host=PG[0], port=PG[1], database="postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await _flush_redis()
    try:
        yield f"postgresql+asyncpg://postgres@{PG[0]}:{PG[1]}/{name}"
    finally:
        await _flush_redis()
        admin = await asyncpg.connect(user="postgres", host=PG[0], port=PG[1], database="postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _flush_redis() -> None:
    import redis.asyncio as redis_client

    client = redis_client.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def _instance(name: str, emu: TelegramEmulator, database: str, workdir: Path,
              manager_chat_id: int) -> WebhookInstance:  # fmt: skip
    return WebhookInstance(
        name,
        workdir,
        {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
            "BOT_TOKEN": DEFAULT_TOKEN,
            "TELEGRAM_API_URL": emu.base_url,
            "DATABASE_URL": database,
            "REDIS_URL": REDIS_URL,
            "WEBHOOK_URL": "https://bot.school.example/telegram",
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_PATH": PATH,
            "TICK_SECONDS": "0.5",
            "TIME_SCALE": "1",
            "RATE_PER_SECOND": str(TELEGRAM_RATE),
            "TIMEZONE": "UTC",
            "MANAGER_CHAT_ID": str(manager_chat_id),
            "ADMIN_IDS": "",
            "CRM_WEBHOOK_URL": "",
            "LOG_LEVEL": "WARNING",
        },
    )


async def _migrate(database: str, workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": database}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "migrate", cwd=workdir, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, output.decode(errors="replace")


async def _dialogue(user: SimUser, answers: list[str], double_tap: bool) -> list[str]:
    """/start, then each answer as soon as its question arrives; the questions' texts."""
    await user.send(f"/start src{user.id % 3}")
    message = await user.next_message(timeout=60)
    seen = [message.plain_text]
    for step, label in enumerate(answers, start=1):
        if double_tap and step == 1:
            await asyncio.gather(user.press(message, label), user.press(message, label))
            replies = [await user.next_message(timeout=60), await user.next_message(timeout=60)]
            seen.extend(r.plain_text for r in replies)
            message = next(r for r in replies if "2 из 4" in r.plain_text)
            continue
        await user.press(message, label)
        message = await user.next_message(timeout=60)
        seen.append(message.plain_text)
    return seen


def _steps(texts: list[str]) -> list[int]:
    return [n for text in texts for n in range(1, 5) if f"{n} из 4" in text]


async def _loop_stalls(longest: list[float], every: float = 0.01) -> None:
    """Keeps in `longest[0]` the longest time this event loop stood still."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(every)
        longest[0] = max(longest[0], loop.time() - before - every)


async def _rows(database: str, query: str) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(database.replace("postgresql+asyncpg", "postgresql"))
    try:
        return list(await connection.fetch(query))
    finally:
        await connection.close()


async def test_two_instances_behind_a_balancer_send_nothing_twice(
    database: str, tmp_path: Path
) -> None:
    # Telegram's own limits: 30 a second per bot, about one a second per chat.
    longest = [0.0]  # the longest stall of this process's loop, where the emulator runs
    async with TelegramEmulator(latency=0.005, latency_max=0.02) as emu:
        manager = emu.add_user("Менеджер")
        group = emu.add_group("Отдел продаж", members=[manager])
        await group.add_bot(by=manager)
        await _migrate(database, tmp_path)
        instances = [_instance(n, emu, database, tmp_path, group.id) for n in ("a", "b")]
        # The balancer in front: the public URL of setWebhook leads to both, in turn.
        emu.webhook.configure(
            targets=[i.url + PATH for i in instances], duplicate_rate=0.25, seed=11
        )
        stalls: asyncio.Task[None] | None = None
        try:
            # Both start at once: each migrates again at start-up, under the advisory lock.
            await asyncio.gather(*(i.start() for i in instances))
            await asyncio.gather(*(i.wait_healthy(120) for i in instances))
            await emu.wait_until(lambda: len(emu.requests_for("setWebhook")) >= 2, 60)
            users = [emu.add_user(f"Prospect{n}") for n in range(PROSPECTS)]
            plans = [HOT if n < HOT_PROSPECTS else WARM for n in range(PROSPECTS)]
            stalls = asyncio.create_task(_loop_stalls(longest))
            dialogues = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        _dialogue(u, p, double_tap=n % DOUBLE_TAPPERS == 0)
                        for n, (u, p) in enumerate(zip(users, plans, strict=True))
                    )
                ),
                300,
            )
            await emu.wait_until(lambda: len(group.chat.log) >= HOT_PROSPECTS, 90)
            await asyncio.sleep(2.0)  # anything sent twice would arrive by now
            figures = [await i.metrics() for i in instances]
            codes = [await i.terminate() for i in instances]
        finally:
            if stalls is not None:
                stalls.cancel()
            for instance in instances:
                await instance.close()
        logs = "\n".join(f"--- {i.name}\n{i.tail()}" for i in instances)

        assert codes == [0, 0], logs
        # The balancer reached both, and the duplicates did happen.
        targets = Counter(r.target for r in emu.webhook_deliveries)
        assert len(targets) == 2 and min(targets.values()) > PROSPECTS, targets
        assert emu.stats.webhook_duplicates > 0
        handled = [
            sum(v for k, v in f.items() if k.startswith("leadbot_updates_total")) for f in figures
        ]
        assert all(n > 0 for n in handled), handled
        skipped = sum(f.get("leadbot_updates_duplicate_total{}", 0) for f in figures)
        assert skipped >= emu.stats.webhook_duplicates * 0.9, (skipped, emu.stats.to_json())

        # Each dialogue in order, one reply per step, nothing twice.
        for n, (user, seen) in enumerate(zip(users, dialogues, strict=True)):
            texts = [m.plain_text for m in user.messages]
            assert texts == seen, f"{user.id}: {texts}"
            if n % DOUBLE_TAPPERS:
                assert _steps(texts) == [1, 2, 3, 4] and len(texts) == 5, texts
            else:
                # The repeated tap is answered with the current question again, once.
                steps = _steps(texts)
                assert steps == sorted(steps) and set(steps) == {1, 2, 3, 4}, texts
                assert len(texts) == 6, texts

        # Every answer recorded once, the stage log without a doubled step.
        answers = await _rows(
            database,
            "SELECT l.user_id, a.question, count(*) AS n FROM answers a "
            "JOIN leads l ON l.id = a.lead_id GROUP BY l.user_id, a.question",
        )
        per_user = Counter(row["user_id"] for row in answers)
        assert all(row["n"] == 1 for row in answers), [dict(r) for r in answers if r["n"] != 1]
        assert per_user == Counter({u.id: 4 for u in users}), per_user
        stages = await _rows(
            database,
            "SELECT lead_id, to_stage, count(*) AS n FROM stage_events "
            "GROUP BY lead_id, to_stage HAVING count(*) > 1",
        )
        assert not stages, [dict(r) for r in stages]
        unhandled = await _rows(database, "SELECT update_id FROM inbox WHERE handled_at IS NULL")
        assert not unhandled, unhandled

        # One card per hot lead, none twice.
        cards = Counter(m.plain_text for m in group.chat.log)
        assert len(group.chat.log) == HOT_PROSPECTS and set(cards.values()) == {1}, cards

        # Within Telegram's limits, the two together.
        assert emu.stats.too_many_requests == 0, (emu.stats.to_json(), logs)
        # Messages only ("typing..." is not one); a request arrives a little after its slot
        # (ARRIVAL_SLACK), hence a little slack on the strict window.
        sends = [r.at for r in emu.requests if r.method in MESSAGES and r.ok]
        busiest = busiest_second(sends)
        # The emulator stamps a request when its loop reads it: while that loop stood still
        # (the machine busy elsewhere), requests sent on time pile up and are stamped at once.
        piled_up = math.ceil(TELEGRAM_RATE * longest[0])
        assert busiest <= TELEGRAM_RATE + ARRIVAL_SLACK + piled_up, (
            f"{busiest} messages in one second from the two instances together: "
            "Telegram's limit is per bot, so it must be shared"
        )
