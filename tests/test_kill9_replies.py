"""A reply is as durable as the answer it follows: the real `python -m bot run` is SIGKILLed
while replies wait for their send slots (one message a second per chat, Telegram's pace), and
started again. Every answer committed gets its reply; none twice; only what was on the wire
at the kill may be in doubt."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bot import db
from funnel.core.models import InboxUpdate
from tests import engines

ROOT = Path(__file__).resolve().parent.parent
PROSPECTS = 40
MESSAGES = 4  # each: /start, then texts while a question waits for a button


async def _start(url: str, api: str, workdir: Path, log: object) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": api,
        "DATABASE_URL": url,
        "TICK_SECONDS": "3600",
        "MANAGER_CHAT_ID": "",
        "ADMIN_IDS": "",
        "LOG_LEVEL": "WARNING",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=workdir, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=log,  # type: ignore[arg-type]
    )  # fmt: skip


async def _replies(url: str) -> Counter[str]:
    engine = db.create_engine(url)
    try:
        async with db.sessionmaker(engine)() as session:
            rows = (
                await session.execute(
                    select(InboxUpdate.reply_status, func.count())
                    .where(InboxUpdate.reply_status.is_not(None))
                    .group_by(InboxUpdate.reply_status)
                )
            ).all()
            return Counter({status: count for status, count in rows})
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_kill9_with_replies_waiting_loses_none_and_doubles_none(tmp_path: Path) -> None:
    url = engines.database_url(tmp_path, "replies.sqlite3")
    workdir = tmp_path / "run"
    workdir.mkdir()
    async with TelegramEmulator() as emu:  # Telegram's limits: about 1 a second per chat
        with (tmp_path / "process.log").open("ab") as log:
            first = await _start(url, emu.base_url, workdir, log)
            try:
                await emu.wait_until(
                    lambda: any(r.method == "getUpdates" for r in emu.requests), 120
                )
                users = [emu.add_user(f"Prospect{i}") for i in range(PROSPECTS)]
                for user in users:
                    await user.send("/start")
                    for n in range(MESSAGES - 1):
                        await user.send(f"message {n}")
                # Some replies are out, most wait for their chat's next second.
                await emu.wait_until(lambda: len(emu.requests_for("sendMessage")) >= PROSPECTS, 60)
                await asyncio.sleep(0.5)
            finally:
                first.send_signal(signal.SIGKILL)
                await first.wait()
            mid = await _replies(url)
            assert mid["planned"] > 0, mid  # the kill left replies waiting

            second = await _start(url, emu.base_url, workdir, log)
            try:
                for _ in range(600):
                    statuses = await _replies(url)
                    settled = not (statuses["planned"] or statuses["sending"])
                    if settled and sum(statuses.values()) >= PROSPECTS * MESSAGES:
                        break
                    await asyncio.sleep(0.1)
            finally:
                second.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(second.wait(), 30)
                except TimeoutError:
                    second.kill()
                    await second.wait()
        statuses = await _replies(url)
        output = (tmp_path / "process.log").read_text(errors="replace")[-3000:]
        assert set(statuses) <= {"sent", "unknown"}, (statuses, output)
        # Every message sent was answered once: one reply per update, in its chat.
        assert sum(statuses.values()) == PROSPECTS * MESSAGES, (statuses, output)
        delivered = Counter(
            int(r.params["chat_id"]) for r in emu.requests_for("sendMessage") if r.status == 200
        )
        # What was on the wire at the kill may be in doubt, nothing else; nothing twice.
        assert statuses["unknown"] <= 10, statuses
        assert sum(delivered.values()) >= statuses["sent"]
        assert sum(delivered.values()) <= statuses["sent"] + statuses["unknown"]
        assert all(count <= MESSAGES for count in delivered.values()), delivered
        assert emu.stats.too_many_requests == 0
