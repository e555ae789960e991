"""`python -m bot run` as its own process against the emulator: a dialogue, a kill -9 in the
middle, a new process, and the dialogue goes on from the button the user was shown."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator

from tests import engines

ROOT = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def bot_process(emu: TelegramEmulator, database: str) -> AsyncIterator[None]:
    env = {
        **os.environ,
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": emu.base_url,
        "DATABASE_URL": database,
        "TICK_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()


async def test_a_dialogue_survives_kill_9_of_the_bot_process(
    emu: TelegramEmulator, tmp_path: Path
) -> None:
    user = emu.add_user("Катя")
    database = engines.database_url(tmp_path, "run.sqlite3")
    async with bot_process(emu, database):
        await user.send("/start habr")
        first = await user.next_message(timeout=30)
        assert "Вопрос 1 из 4" in first.plain_text
        await user.press(first, "Сменить профессию")
        second = await user.next_message(timeout=10)
        assert "Вопрос 2 из 4" in second.plain_text
    # Killed with -9 above; a new process finds the position in the database.
    async with bot_process(emu, database):
        await user.press(second, "В течение месяца")
        third = await user.next_message(timeout=30)
        assert "Вопрос 3 из 4" in third.plain_text
        await user.send("/start")
        prompt = await user.next_message(timeout=10)
        assert "▶️ Продолжить" in prompt.labels
    assert len([m for m in user.messages if "Вопрос 2 из 4" in m.plain_text]) == 1
