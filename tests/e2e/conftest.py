"""End-to-end harness: the real bot (App: aiogram over HTTP, the database of
tests/engines.py, the dispatcher) talks to the local Telegram emulator; tests act as users
and read what the bot sent. Every request the bot made is checked against the Bot API spec
at the end of each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.users import SimGroup, SimUser

from bot.app import App
from bot.ratelimit import RateLimiter
from bot.settings import Settings
from funnel.core.clock import FakeClock
from tests import engines
from tests.botapi_spec import assert_requests_valid


@dataclass
class World:
    emu: TelegramEmulator
    app: App
    admin: SimUser
    manager: SimUser
    managers: SimGroup

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.app.sessions

    def user(self, first_name: str = "Мария", username: str | None = None) -> SimUser:
        return self.emu.add_user(first_name, username=username)

    def signed(self, chat_id: int, data: str) -> str:
        """`data` as the bot signs a button it sends to `chat_id`: a button of an older
        version of a message (a card since edited), or one the checks behind the signature
        must still refuse. Unsigned data is stale before any handler sees it."""
        return self.app.signer.sign(data, chat_id)


# The shipped Russian script's buttons for a hot and for a warm prospect.
HOT = ["Сменить профессию", "В ближайшие 2 недели", "Готов(а) оплатить сразу", "Я сам(а)"]
WARM = ["Для своего проекта", "Через 2–3 месяца", "Удобнее в рассрочку", "Решаем вместе с семьёй"]


async def qualify(
    world: World, answers: list[str], name: str = "Анна", username: str | None = None
) -> SimUser:
    """A prospect from vk_ads who taps `answers` one question after another."""
    user = world.user(name, username=username)
    await user.send("/start vk_ads")
    message = await user.next_message()
    for label in answers:
        await user.press(message, label)
        message = await user.next_message()
    return user


def fast_limiter() -> RateLimiter:
    """Generous limits: most tests are about the dialogue, not Telegram's pace."""
    return RateLimiter(rate_per_second=1000, chat_rate_per_second=200, chat_burst=50)


def settings_for(emu: TelegramEmulator, tmp_path: Path, **extra: object) -> Settings:
    values: dict[str, object] = {
        "bot_token": DEFAULT_TOKEN,
        "telegram_api_url": emu.base_url,
        "database_url": engines.database_url(tmp_path),
        "tick_seconds": 3600,
        **extra,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator(rate_per_second=1000, chat_rate_per_second=200, chat_burst=50)
    await emulator.start()
    try:
        yield emulator
        assert_requests_valid(emulator.requests)
    finally:
        await emulator.stop()


@asynccontextmanager
async def running_world(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, **extra: object
) -> AsyncIterator[World]:
    """An admin, a managers' group with the bot in it, and the bot running (no scheduler:
    tests tick themselves); `extra` adds settings."""
    admin = emu.add_user("Owner", username="owner")
    manager = emu.add_user("Менеджер Олег", username="oleg")
    managers = emu.add_group("Отдел продаж", members=[manager])
    settings = settings_for(
        emu, tmp_path, admin_ids=str(admin.id), manager_chat_id=managers.id, **extra
    )
    app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await app.start(scheduler=False)
    await managers.add_bot(by=manager)
    try:
        yield World(emu, app, admin, manager, managers)
    finally:
        await app.stop()


@pytest.fixture
async def world(emu: TelegramEmulator, tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    async with running_world(emu, tmp_path, clock) as running:
        yield running
