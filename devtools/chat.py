"""`python -m bot chat`: talk to the bot yourself, offline. The real bot runs on the local
emulator; your lines are a prospect's messages, and a number taps that button.

`--script PATH` tries a script being edited; `--time-scale N` goes through it as a test run
(/test_funnel N): the campaigns' delays divided by N, so nurture and win-back arrive while you
watch, and nothing of it counts in the chat database's reports."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from bot.app import App
from bot.settings import Settings

DATABASE = Path("data") / "chat.sqlite3"
HELP = "Type a message, a number to tap that button, /start to begin, or Ctrl+D to leave."


def show(message: BotMessage) -> None:
    print(f"\n🤖 {message.plain_text}")
    for number, label in enumerate(message.labels, 1):
        print(f"   [{number}] {label}")


# With a time scale, the outbox looks for due nudges every second.
TEST_TICK_SECONDS = 1.0


async def run_chat(
    settings: Settings, script: Path | None = None, time_scale: float | None = None
) -> int:
    if script is not None:
        problems = _problems(script)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
    emu = TelegramEmulator()
    await emu.start()
    you = emu.add_user("Гость", username="guest")
    extra: dict[str, object] = {}
    if script is not None:
        extra["script_path"] = script
    if time_scale is not None:
        extra["tick_seconds"] = min(settings.tick_seconds, TEST_TICK_SECONDS)
    chat_settings = settings.offline(emu.base_url, DATABASE, you.id, **extra)
    app = App(chat_settings, token=DEFAULT_TOKEN)
    await app.start()
    print(f"{HELP}\nYou are also an admin here: try /stats or /campaigns. Data: {DATABASE}")
    if time_scale is not None:
        print(f"A test run: campaign delays divided by {time_scale:g}; /test_funnel stop ends it.")
    loop = asyncio.get_running_loop()
    # The bot's messages are shown as they come, also while you think: nudges arrive alone.
    printing = asyncio.create_task(_print_messages(you))
    try:
        await you.send(f"/test_funnel {time_scale:g}" if time_scale is not None else "/start chat")
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            text = line.strip()
            last = you.last_message
            if text.isdigit() and last is not None and 1 <= int(text) <= len(last.labels):
                await you.press(last, last.labels[int(text) - 1])
            elif text:
                await you.send(text)
        await asyncio.sleep(0.7)  # the answer to the last line, before leaving
    finally:
        printing.cancel()
        await app.stop()
        await emu.stop()
    return 0


async def _print_messages(you: SimUser) -> None:
    while True:
        try:
            show(await you.next_message(timeout=3600))
        except TimeoutError:
            continue


def _problems(script: Path) -> list[str]:
    from funnel.script.loading import ScriptError, load_script

    try:
        load_script(script)
    except ScriptError as e:
        return e.problems
    return []
