"""The morning digest reaches every admin with yesterday's leads, payments and the leak."""

from __future__ import annotations

from datetime import timedelta

from funnel.core.clock import FakeClock
from tests.e2e.conftest import World


async def test_the_daily_digest(world: World, clock: FakeClock) -> None:
    for name, answers in [("Анна", ["Сменить профессию", "В ближайшие 2 недели"]),
                          ("Иван", [])]:  # fmt: skip
        user = world.user(name)
        await user.send("/start ads")
        message = await user.next_message()
        for label in answers:
            await user.press(message, label)
            message = await user.next_message()
    await world.admin.send("/paid 1 6900")
    await world.admin.next_message()
    clock.advance(timedelta(days=1))
    jobs = {job.id for job in world.app.scheduler.get_jobs()}
    assert "daily_digest" in jobs
    await world.app.send_digest()
    digest = (await world.admin.next_message()).plain_text
    assert "Новых лидов: 2" in digest
    assert "Ответил на первый вопрос: 1 (50%)" in digest
    assert "Оплат: 1" in digest and "6\u202f900\xa0₽" in digest
    assert "Больше всего теряем" in digest
