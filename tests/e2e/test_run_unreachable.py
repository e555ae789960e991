"""`python -m bot run` while Telegram cannot be reached: one line per try, backoff, no
traceback; SIGTERM ends it at once; once the server answers, the bot starts and serves."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator

from tests.botapi_spec import assert_requests_valid

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Running:
    process: asyncio.subprocess.Process
    lines: list[tuple[float, str]] = field(default_factory=list)

    async def wait_for(self, pattern: str, count: int = 1, timeout: float = 60) -> list[float]:  # noqa: ASYNC109
        """When each of the first `count` stderr lines matching `pattern` came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = [at for at, line in self.lines if re.fullmatch(pattern, line)]
            if len(seen) >= count:
                return seen[:count]
            assert self.process.returncode is None, self.stderr
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {count} x {pattern!r} in:\n{self.stderr}")

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)


@asynccontextmanager
async def bot_run(port: int, database: Path) -> AsyncIterator[Running]:
    env = {
        **os.environ,
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "ADMIN_IDS": "1",
        "MANAGER_CHAT_ID": "-1001",
        # Every role set, so the start-up has nothing to warn about (the offers need it).
        "PAYMENT_PROVIDER_TOKEN": "381764678:TEST:100500",
        "TICK_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Running(process)

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            running.lines.append((time.monotonic(), raw.decode().rstrip("\n")))

    reading = asyncio.create_task(read())
    try:
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
        await process.wait()
        await reading


async def stop(running: Running) -> None:
    running.process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(running.process.wait(), timeout=10)
    assert code == 0, running.stderr
    await asyncio.sleep(0.1)  # the last lines
    assert "Traceback" not in running.stderr and DEFAULT_TOKEN not in running.stderr


async def test_an_unreachable_telegram_is_retried_with_one_line_per_try(tmp_path: Path) -> None:
    port = closed_port()
    retry = (
        rf"telegram: cannot reach http://127\.0\.0\.1:{port} \(ClientConnectorError\); "
        r"retrying in (\d+) s"
    )
    async with bot_run(port, tmp_path / "bot.sqlite3") as running:
        first, second = await running.wait_for(retry, count=2)
        assert second - first >= 4.5  # the first pause is 5 s, the next ones longer
        started = time.monotonic()
        await stop(running)
        assert time.monotonic() - started < 5
    tries = [re.fullmatch(retry, line) for _, line in running.lines]
    assert all(tries), running.stderr  # one line per try, and nothing else
    assert [m[1] for m in tries if m] == ["5", "10"]


async def test_the_bot_starts_once_telegram_answers(tmp_path: Path) -> None:
    port = closed_port()
    async with bot_run(port, tmp_path / "bot.sqlite3") as running:
        await running.wait_for(r"telegram: cannot reach .*; retrying in 5 s")
        emu = TelegramEmulator(rate_per_second=1000, chat_rate_per_second=200, chat_burst=50)
        await emu.start(port=port)
        try:
            await running.wait_for(rf"telegram: reached http://127\.0\.0\.1:{port}; starting")
            user = emu.add_user("Катя")
            await user.send("/start habr")
            first = await user.next_message(timeout=30)
            assert "Вопрос 1 из 4" in first.plain_text
            await stop(running)
            assert_requests_valid(emu.requests)
        finally:
            await emu.stop()
    assert len(running.lines) == 2, running.stderr
