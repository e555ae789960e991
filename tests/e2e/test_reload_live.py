"""Reloading the script while prospects talk: `/reload` says what changed, a file changed on
disk (or SIGHUP) is read again by itself and the admins are told, a broken file keeps the last
good script and names the wrong line, and every lead keeps the version it started with."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from sqlalchemy import select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator

from funnel.core.clock import FakeClock
from funnel.core.models import Lead
from tests.conftest import RU_SCRIPT
from tests.e2e.conftest import running_world

RU = RU_SCRIPT.read_text(encoding="utf-8")
ROOT = Path(__file__).resolve().parents[2]


def edited(version: str) -> str:
    """A new version: a question reworded, the welcome reworded, a campaign added."""
    source = RU.replace('version: "2026-11-1"', f'version: "{version}"', 1)
    source = source.replace("Зачем вам Python?", "Для чего вам Python?", 1)
    source = source.replace("это займёт минуту", "это быстро", 1)
    added = """  - id: winback_customer
    kind: winback
    title: "Возврат: давно оплатил"
    stages: [customer]
    steps:
      - after: 60d
        text: "{first_name}, у нас новый поток курса «{course}»."
"""
    # At the end of the campaigns' list: the next top-level line after `campaigns:`.
    lines = source.splitlines(keepends=True)
    start = lines.index("campaigns:\n")
    end = next(
        (n for n in range(start + 1, len(lines)) if lines[n][:1] not in ("", " ", "-", "\n")),
        len(lines),
    )
    while end > start + 1 and lines[end - 1].startswith("#"):
        end -= 1  # the comment above the next section stays with it
    return "".join(lines[:end]) + added + "".join(lines[end:])


async def test_reload_replies_with_what_changed(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(RU, encoding="utf-8")
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as world:
        path.write_text(edited("v2"), encoding="utf-8")
        await world.admin.send("/reload")
        reply = (await world.admin.next_message()).plain_text
        assert "python_course@v2 загружен" in reply
        assert "python_course@2026-11-1 → стало: python_course@v2" in reply
        lines = reply.splitlines()
        questions = lines.index("Вопросы (+ добавлены, − удалены, ~ изменены):")
        assert lines[questions + 1] == "~ need"
        texts = lines.index("Тексты (+ добавлены, − удалены, ~ изменены):")
        assert lines[texts + 1] == "+ campaigns.winback_customer.steps.1.text"
        assert lines[texts + 2] == "~ texts.welcome"
        campaigns = lines.index("Кампании (+ добавлены, − удалены, ~ изменены):")
        assert lines[campaigns + 1] == "+ winback_customer"
        # The same file again: nothing changed.
        await world.admin.send("/reload")
        assert "Изменений нет." in (await world.admin.next_message()).plain_text


async def test_a_file_changed_on_disk_is_reloaded_and_admins_are_told(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(RU, encoding="utf-8")
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as world:
        app = world.app
        await app.watch_script()  # nothing changed: nothing said
        path.touch()  # touched, same content: nothing said either
        await app.watch_script()

        broken = RU.replace("    bant: timing\n", "    bant: timing\n    bant: need\n", 1)
        path.write_text(broken, encoding="utf-8")
        await app.watch_script()
        told = (await world.admin.next_message()).plain_text
        line = broken[: broken.index("bant: timing\n    bant: need")].count("\n") + 2
        assert told.startswith("📝 Файл сценария изменился на диске.")
        assert "Сценарий не принят, работает прежний." in told
        assert f"{path}:{line}: 'bant' is written twice" in told
        assert app.scripts.current.version == "2026-11-1"
        await app.watch_script()  # the same broken file is not announced twice

        path.write_text(edited("v3"), encoding="utf-8")
        await app.watch_script()
        told = (await world.admin.next_message()).plain_text
        assert told.startswith("📝 Файл сценария изменился на диске.")
        assert "python_course@v3 загружен" in told and "~ need" in told
        assert app.scripts.current.version == "v3"
        # Two announcements in all: the refusal once, the new version once.
        assert len(world.admin.messages) == 2


async def test_sighup_reads_the_script_again(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(RU, encoding="utf-8")
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as world:
        path.write_text(edited("v4"), encoding="utf-8")
        world.app.reload_on_signal()
        told = (await world.admin.next_message()).plain_text
        assert told.startswith("📝 Сценарий перечитан по сигналу SIGHUP.")
        assert "python_course@v4 загружен" in told
        # A second SIGHUP with nothing new still answers: the operator asked.
        world.app.reload_on_signal()
        assert "Изменений нет." in (await world.admin.next_message()).plain_text


async def test_every_lead_keeps_the_version_it_started_with(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "script.yaml"
    path.write_text(RU, encoding="utf-8")
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as world:
        early = world.user("Мария")
        await early.send("/start")
        question = await early.next_message()

        path.write_text(edited("v5"), encoding="utf-8")
        await world.app.watch_script()
        await world.admin.next_message()

        # The early lead goes on (with the new wording) and stays counted under its version.
        await early.press(question, "Сменить профессию")
        await early.next_message()
        late = world.user("Пётр")
        await late.send("/start")
        assert "Для чего вам Python?" in (await late.next_message()).plain_text
        async with world.sessions() as session:
            versions = dict(
                (await session.execute(select(Lead.first_name, Lead.script_version))).all()
            )
        assert versions == {"Мария": "python_course@2026-11-1", "Пётр": "python_course@v5"}


async def test_kill_hup_makes_the_running_process_read_the_script(
    emu: TelegramEmulator, tmp_path: Path
) -> None:
    """`python -m bot run` as its own process: SIGHUP reloads, and the admin is told."""
    admin = emu.add_user("Owner")
    path = tmp_path / "script.yaml"
    path.write_text(RU, encoding="utf-8")
    env = {
        **os.environ,
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": emu.base_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'run.sqlite3'}",
        "SCRIPT_PATH": str(path),
        "ADMIN_IDS": str(admin.id),
        "TICK_SECONDS": "3600",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await admin.send("/start")  # answered once the bot runs: the signal handler is set
        await admin.next_message(timeout=30)
        path.write_text(edited("v6"), encoding="utf-8")
        process.send_signal(signal.SIGHUP)
        told = await admin.wait_for(lambda m: "python_course@v6" in m.plain_text, timeout=15)
        assert "SIGHUP" in told.plain_text and "~ need" in told.plain_text
        assert process.returncode is None  # reloaded, not stopped
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await process.wait()
