"""SIGTERM loses nothing: managers' cards waiting for the group's per-minute limit stay
planned through a graceful stop (none becomes "unknown") and each is delivered once after
the restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator

from bot.app import App
from bot.ratelimit import RateLimiter
from funnel.core.clock import FakeClock
from funnel.core.models import Notification
from tests.e2e.conftest import HOT, World, fast_limiter, qualify, settings_for


async def card_statuses(app: App) -> list[str]:
    async with app.sessions() as session:
        query = select(Notification.status).where(Notification.kind == "manager_card")
        return sorted((await session.scalars(query)).all())


async def test_cards_waiting_for_the_group_limit_survive_a_graceful_stop(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    manager = emu.add_user("Менеджер Олег", username="oleg")
    managers = emu.add_group("Отдел продаж", members=[manager])
    settings = settings_for(emu, tmp_path, manager_chat_id=managers.id)
    # Two cards a minute for the group: the third and fourth wait for a slot.
    slow = RateLimiter(rate_per_second=1000, chat_rate_per_second=200, chat_burst=50,
                       group_per_minute=2)  # fmt: skip
    app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=slow)
    await app.start(scheduler=False)
    await managers.add_bot(by=manager)
    world = World(emu, app, manager, manager, managers)
    for i in range(4):
        await qualify(world, HOT, f"Лид{i}", username=f"lead{i}")
    await managers.wait_for_count(2)
    await asyncio.sleep(0.5)
    assert await card_statuses(app) == ["planned", "planned", "sent", "sent"]
    await app.stop()  # what SIGTERM does
    assert await card_statuses(app) == ["planned", "planned", "sent", "sent"]

    again = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.prepare()
    try:
        await again.handoff.tick()
        assert await card_statuses(again) == ["sent"] * 4
    finally:
        await again.stop()
    texts = [m.plain_text for m in managers.messages]
    assert len(texts) == 4
    assert sorted(t.split(":")[1].split()[0] for t in texts) == [f"Лид{i}" for i in range(4)]
