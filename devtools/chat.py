"""`python -m bot chat`: talk to the bot yourself, offline. The real bot runs on the local
emulator; your lines are a prospect's messages, and a number taps that button."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage

from bot.app import App
from bot.settings import Settings

DATABASE = Path("data") / "chat.sqlite3"
HELP = "Type a message, a number to tap that button, /start to begin, or Ctrl+D to leave."


def show(message: BotMessage) -> None:
    print(f"\n🤖 {message.plain_text}")
    for number, label in enumerate(message.labels, 1):
        print(f"   [{number}] {label}")


async def run_chat(settings: Settings) -> int:
    emu = TelegramEmulator()
    await emu.start()
    you = emu.add_user("Гость", username="guest")
    chat_settings = settings.offline(emu.base_url, DATABASE, you.id)
    app = App(chat_settings, token=DEFAULT_TOKEN)
    await app.start()
    print(f"{HELP}\nYou are also an admin here: try /stats or /campaigns. Data: {DATABASE}")
    loop = asyncio.get_running_loop()
    try:
        await you.send("/start chat")
        while True:
            try:
                while True:
                    show(await you.next_message(timeout=0.7))
            except TimeoutError:
                pass
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            text = line.strip()
            last = you.last_message
            if text.isdigit() and last is not None and 1 <= int(text) <= len(last.labels):
                await you.press(last, last.labels[int(text) - 1])
            elif text:
                await you.send(text)
    finally:
        await app.stop()
        await emu.stop()
    return 0
