"""A prospect's whole dialogue through the real bot and the emulator: to each outcome, the
hand-off card, a restart of the bot mid-dialogue, and the database after each."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.users import SimUser

from bot.app import App
from funnel.core.clock import FakeClock
from funnel.core.models import Answer, Lead, StageEvent
from tests.e2e.conftest import HOT, World, fast_limiter, qualify, settings_for


async def lead_of(world: World, user: SimUser) -> Lead:
    async with world.sessions() as session:
        return (await session.scalars(select(Lead).where(Lead.user_id == user.id))).one()


async def stages_of(world: World, lead_id: int) -> list[str]:
    async with world.sessions() as session:
        rows = await session.scalars(
            select(StageEvent.to_stage)
            .where(StageEvent.lead_id == lead_id)
            .order_by(StageEvent.id)
        )
        return list(rows)


async def answer(user: SimUser, label: str) -> str:
    """Taps `label` on the bot's last message; returns the text of the bot's answer."""
    question = user.last_message
    assert question is not None
    await user.press(question, label)
    reply = await user.next_message()
    return reply.plain_text


async def test_a_hot_lead_books_and_reaches_the_managers(world: World) -> None:
    user = world.user("Анна", username="anna")
    await user.send("/start vk_ads")
    first = await user.next_message()
    assert "Анна" in first.plain_text and "Вопрос 1 из 4" in first.plain_text
    assert first.labels[0] == "Сменить профессию"

    assert "Вопрос 2 из 4" in await answer(user, "Сменить профессию")
    assert "Вопрос 3 из 4" in await answer(user, "В ближайшие 2 недели")
    assert "Вопрос 4 из 4" in await answer(user, "Готов(а) оплатить сразу")
    outcome = await answer(user, "Я сам(а)")
    assert "отлично подходите" in outcome and "Менеджер" in outcome

    card = await world.managers.next_message()
    assert "Анна" in card.plain_text and "vk_ads" in card.plain_text and "100" in card.plain_text
    assert "🙋 Беру" in card.labels

    assert "Менеджер" in await answer(user, "📅 Записаться на консультацию")
    lead = await lead_of(world, user)
    assert (lead.stage, lead.source, lead.score, lead.temperature) == (
        "consultation", "vk_ads", 100, "hot"
    )  # fmt: skip
    assert await stages_of(world, lead.id) == ["new", "engaged", "qualified", "consultation"]
    # Every tap was answered: no spinner left on the phone.
    assert len(user.callback_answers) == 5


async def test_not_a_fit_ends_politely(world: World) -> None:
    user = world.user()
    await user.send("/start")
    await user.next_message()
    await answer(user, "Просто интересно")
    await answer(user, "Пока не планирую")
    await answer(user, "Пока дорого")
    outcome = await answer(user, "Я сам(а)")
    assert "не нужен" in outcome
    lead = await lead_of(world, user)
    assert (lead.stage, lead.exit_reason) == ("disqualified", "just_curious")
    assert world.managers.messages == []


async def test_the_dialogue_survives_a_restart(
    world: World, tmp_path: Path, clock: FakeClock
) -> None:
    user = world.user()
    await user.send("/start blog")
    await user.next_message()
    await answer(user, "Расти в текущей работе")
    shown = user.last_message
    assert shown is not None and "Вопрос 2 из 4" in shown.plain_text

    await world.app.stop()
    settings = settings_for(world.emu, tmp_path)
    again = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.start(scheduler=False)
    try:
        # The button shown before the restart still works: the position is in the database.
        await user.press(shown, "В течение месяца")
        assert "Вопрос 3 из 4" in (await user.next_message()).plain_text
    finally:
        await again.stop()
    async with again.sessions() as session:
        answers = (await session.scalars(select(Answer.question).order_by(Answer.id))).all()
    assert answers == ["need", "timing"]


async def test_a_known_lead_continues_or_starts_over(world: World) -> None:
    user = world.user()
    await user.send("/start")
    await user.next_message()
    await answer(user, "Сменить профессию")
    await user.send("/start")
    prompt = await user.next_message()
    assert prompt.labels == ["▶️ Продолжить", "🔄 Начать сначала"]
    assert "Вопрос 2 из 4" in await answer(user, "▶️ Продолжить")
    await user.send("/start")
    await user.next_message()
    assert "Вопрос 1 из 4" in await answer(user, "🔄 Начать сначала")


async def test_a_hot_lead_is_promised_a_manager_only_when_there_is_one(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, world: World
) -> None:
    promise = "Менеджер уже получил вашу заявку"
    with_managers = await qualify(world, HOT, "Анна")
    outcome = with_managers.last_message
    assert outcome is not None and promise in outcome.plain_text
    await world.app.stop()

    alone = App(settings_for(emu, tmp_path / "alone"), token=DEFAULT_TOKEN, clock=clock,
                limiter=fast_limiter())  # fmt: skip
    await alone.start(scheduler=False)
    try:
        nobody = await qualify(World(emu, alone, world.admin, world.manager, world.managers),
                               HOT, "Ира")  # fmt: skip
        alone_outcome = nobody.last_message
        assert alone_outcome is not None and alone_outcome.buttons  # the booking offer
        assert promise not in alone_outcome.plain_text
    finally:
        await alone.stop()
