"""The managers' loop through the emulator: a lead a manager takes hears no nurture until the
manager gives it back (or goes silent), then the campaign of its stage starts again; a hot
card nobody takes is reminded in the managers' chat and escalated to the admins, on time,
within working hours, once each across a restart; forged or stale buttons change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from telegram_emulator.server import DEFAULT_TOKEN, TelegramEmulator
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from bot.app import App
from funnel.core.clock import FakeClock
from funnel.core.models import Lead, ManagerTake, Notification, StageEvent, Touch
from tests.e2e.conftest import HOT, WARM, World, fast_limiter, qualify, running_world

TAKE = "🙋 Беру"
RELEASE = "↩️ Вернуть боту"
PAID = "💰 Оплатил"
UNFIT = "🚫 Не подходит"
# The first nurture step of a qualified lead (scripts/ru.yaml, nurture_qualified, after 1d).
NUDGE = "История выпускницы"


async def hot_lead(world: World, name: str = "Анна") -> tuple[SimUser, BotMessage]:
    """A hot prospect and their card in the managers' chat, delivered and recorded."""
    user = await qualify(world, HOT, name, username=name.lower())
    card = await world.managers.next_message()
    await world.app.handoff.settle()
    return user, card


async def take(world: World, card: BotMessage, manager: SimUser | None = None) -> str:
    tap = await (manager or world.manager).press(card, TAKE)
    answer = await (manager or world.manager).wait_for_answer(tap)
    return answer.text or ""


async def lead_row(world: World, name: str = "Анна") -> Lead:
    async with world.sessions() as session:
        return (await session.scalars(select(Lead).where(Lead.first_name == name))).one()


async def nudges(world: World, user: SimUser) -> list[str]:
    return [m.plain_text for m in user.messages if NUDGE in m.plain_text]


async def follow_up(world: World, clock: FakeClock, delta: timedelta) -> None:
    """Funnel time passes; the scheduler's jobs run as they would (several ticks)."""
    steps = 4
    for _ in range(steps):
        clock.advance(delta / steps)
        await world.app.managers.tick()
        await world.app.outbox.tick()
        await world.app.handoff.tick()
    await world.app.handoff.settle()


async def test_a_taken_lead_gets_no_nudge_until_released_then_the_right_one(
    world: World, clock: FakeClock
) -> None:
    user, card = await hot_lead(world)
    assert "Лид ваш" in await take(world, card)
    edited = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    assert RELEASE in edited.labels and TAKE not in edited.labels
    assert "Рассылки бота на паузе" in edited.plain_text
    before = len(user.messages)
    # Two days: the nurture's first step (1d) would have gone out; the manager is talking.
    await follow_up(world, clock, timedelta(days=2))
    assert len(user.messages) == before
    async with world.sessions() as session:
        touches = (await session.scalars(select(Touch))).all()
    assert touches and {(t.status, t.reason) for t in touches} == {("cancelled", "manager_owns")}

    tap = await world.manager.press(edited, RELEASE)
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "снова у бота" in answer.text
    back = await world.managers.wait_for(lambda m: "В работе у" not in m.plain_text)
    assert TAKE in back.labels and "на паузе" not in back.plain_text
    lead = await lead_row(world)
    assert lead.manager_id is None
    # Nothing piled up for the release: the campaign starts again from it, one step at a time.
    await follow_up(world, clock, timedelta(hours=12))
    assert len(user.messages) == before
    await follow_up(world, clock, timedelta(hours=13))
    assert len(await nudges(world, user)) == 1
    assert len(user.messages) == before + 1
    async with world.sessions() as session:
        [take_row] = (await session.scalars(select(ManagerTake))).all()
    assert (take_row.release_cause, take_row.manager_id) == ("released", world.manager.id)


async def test_not_a_fit_ends_the_take_and_the_lead_leaves_the_nurture(
    world: World, clock: FakeClock
) -> None:
    user, card = await hot_lead(world)
    await take(world, card)
    edited = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    await world.manager.press(edited, UNFIT)
    await world.managers.wait_for(
        lambda m: "Не подходит" in m.plain_text and "Этап" in m.plain_text
    )
    lead = await lead_row(world)
    assert (lead.stage, lead.manager_id) == ("disqualified", None)
    before = len(user.messages)
    await follow_up(world, clock, timedelta(days=20))
    # No campaign of the shipped script is for a lead a manager ruled out.
    assert len(user.messages) == before
    async with world.sessions() as session:
        [row] = (await session.scalars(select(ManagerTake))).all()
    assert row.release_cause == "unfit" and row.released_at is not None


async def test_silence_gives_the_lead_back_to_the_follow_ups(
    world: World, clock: FakeClock
) -> None:
    user, card = await hot_lead(world)
    await take(world, card)
    edited = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    before = len(user.messages)
    # Day 2: the manager records a payment attempt (opens the amount prompt): activity.
    await follow_up(world, clock, timedelta(days=2))
    await world.manager.press(edited, PAID)
    await world.managers.wait_for(lambda m: "Сумма оплаты" in m.plain_text)
    await follow_up(world, clock, timedelta(days=2))  # day 4: 2 days since the activity
    assert (await lead_row(world)).manager_id == world.manager.id
    assert len(user.messages) == before
    await follow_up(world, clock, timedelta(days=1, hours=1))  # 3 days of silence
    lead = await lead_row(world)
    assert lead.manager_id is None
    async with world.sessions() as session:
        [row] = (await session.scalars(select(ManagerTake))).all()
    assert row.release_cause == "silence"
    # The card says so: free to take again, through the outbox.
    card_now = next(m for m in world.managers.messages if m.message_id == card.message_id)
    assert TAKE in card_now.labels and "В работе у" not in card_now.plain_text
    await follow_up(world, clock, timedelta(days=1))
    assert len(await nudges(world, user)) == 1


def reminders(world: World) -> list[BotMessage]:
    return [m for m in world.managers.messages if m.plain_text.startswith("⏰")]


def escalations(world: World) -> list[BotMessage]:
    return [m for m in world.admin.messages if m.plain_text.startswith("🚨")]


async def restart(world: World, clock: FakeClock) -> App:
    """A second process on the same database, as after a kill -9: started up, not polling."""
    again = App(world.app.settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await again.prepare()
    return again


async def test_an_untaken_hot_lead_is_reminded_then_escalated_once_each(
    world: World, clock: FakeClock
) -> None:
    _, card = await hot_lead(world)
    clock.advance(timedelta(minutes=14, seconds=59))
    await world.app.managers.tick()
    assert reminders(world) == []
    clock.advance(1)
    await world.app.managers.tick()
    [reminder] = reminders(world)
    assert reminder.reply_to_message_id == card.message_id
    assert "Лид #1" in reminder.plain_text and "15" in reminder.plain_text
    again = await restart(world, clock)
    try:
        await again.managers.tick()
        clock.advance(timedelta(minutes=14))
        await again.managers.tick()
        assert len(reminders(world)) == 1 and escalations(world) == []
        clock.advance(timedelta(minutes=1))
        await again.managers.tick()
        await again.managers.tick()
    finally:
        await again.stop()
    [escalation] = escalations(world)
    assert "Лид #1 (Анна)" in escalation.plain_text and "30" in escalation.plain_text
    assert "/lead 1" in escalation.plain_text  # where the admin reads the whole lead
    await world.app.managers.tick()
    clock.advance(timedelta(hours=5))
    await world.app.managers.tick()
    assert len(reminders(world)) == 1 and len(escalations(world)) == 1
    async with world.sessions() as session:
        kinds = (
            await session.execute(
                select(Notification.kind, Notification.status).where(
                    Notification.kind.in_(("sla_reminder", "sla_escalation"))
                )
            )
        ).all()
    assert sorted(kinds) == [("sla_escalation", "sent"), ("sla_reminder", "sent")]


async def test_a_reminder_a_crash_interrupted_is_never_sent_again(
    world: World, clock: FakeClock
) -> None:
    await hot_lead(world)
    clock.advance(timedelta(minutes=15))
    async with world.sessions() as session:
        # The tick planned the reminder and claimed it; then kill -9 before the answer.
        await world.app.managers._plan()
        await session.execute(
            update(Notification)
            .where(Notification.kind == "sla_reminder")
            .values(status="sending", attempts=1)
        )
        await session.commit()
    again = await restart(world, clock)
    try:
        await again.managers.tick()
        await again.handoff.tick()
    finally:
        await again.stop()
    assert reminders(world) == []  # may have reached the chat; never doubled
    async with world.sessions() as session:
        status = await session.scalar(
            select(Notification.status).where(Notification.kind == "sla_reminder")
        )
    assert status == "unknown"


async def test_a_lead_taken_in_time_is_never_reminded(world: World, clock: FakeClock) -> None:
    _, card = await hot_lead(world)
    clock.advance(timedelta(minutes=10))
    await take(world, card)
    clock.advance(timedelta(hours=1))
    await world.app.managers.tick()
    # Released later: the card was taken in time, still no reminder for it.
    edited = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    await world.manager.press(edited, RELEASE)
    await world.managers.wait_for(lambda m: "В работе у" not in m.plain_text)
    clock.advance(timedelta(hours=1))
    await world.app.managers.tick()
    assert reminders(world) == [] and escalations(world) == []
    async with world.sessions() as session:
        [row] = (await session.scalars(select(ManagerTake))).all()
    assert row.taken_at - row.called_at == timedelta(minutes=10)


@pytest.fixture
def late_clock() -> FakeClock:
    # Tuesday 23:00 in Moscow (20:00 UTC): the managers have gone home.
    return FakeClock(datetime(2026, 3, 3, 20, 0, tzinfo=UTC))


@pytest.fixture
async def late_world(
    emu: TelegramEmulator, tmp_path: Path, late_clock: FakeClock
) -> AsyncIterator[World]:
    async with running_world(
        emu, tmp_path, late_clock, manager_take_minutes=20, manager_escalate_minutes=40
    ) as running:
        yield running


async def test_outside_working_hours_the_clock_waits_for_opening_time(
    late_world: World, late_clock: FakeClock
) -> None:
    world, clock = late_world, late_clock
    await hot_lead(world)
    clock.advance(timedelta(minutes=30))
    await world.app.managers.tick()
    assert reminders(world) == []
    # Wednesday 10:19 Moscow: 19 working minutes.
    clock.set(datetime(2026, 3, 4, 7, 19, tzinfo=UTC))
    await world.app.managers.tick()
    assert reminders(world) == []
    clock.set(datetime(2026, 3, 4, 7, 20, tzinfo=UTC))
    await world.app.managers.tick()
    assert len(reminders(world)) == 1
    clock.set(datetime(2026, 3, 4, 7, 59, tzinfo=UTC))
    await world.app.managers.tick()
    assert escalations(world) == []
    clock.set(datetime(2026, 3, 4, 8, 0, tzinfo=UTC))
    await world.app.managers.tick()
    assert len(escalations(world)) == 1


async def ledger(world: World) -> tuple[object, ...]:
    async with world.sessions() as session:
        leads = await session.execute(
            select(Lead.id, Lead.stage, Lead.manager_id, Lead.cycle).order_by(Lead.id)
        )
        counts = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (StageEvent, ManagerTake)
        ]
        released = await session.scalar(
            select(func.count()).where(ManagerTake.released_at.is_not(None))
        )
    return (tuple(leads.all()), *counts, released)


async def test_a_release_from_someone_else_or_for_nothing_changes_nothing(
    world: World, clock: FakeClock
) -> None:
    _, card = await hot_lead(world)
    anna = (await lead_row(world)).id
    await qualify(world, WARM, "Борис", username="boris")  # warm: no card
    boris = (await lead_row(world, "Борис")).id
    chat = world.managers.id
    # Not taken yet: "back to the bot" (a stale button) has nothing to give back.
    tap = await world.manager.press_data(card, world.signed(chat, f"m:release:{anna}"))
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "ни у кого" in answer.text
    await take(world, card)
    edited = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    before = await ledger(world)
    # A colleague cannot take a lead away, nor release it.
    ira = world.emu.add_user("Ира")
    world.managers.add_member(ira)
    # The "take" the card had before it was edited.
    tap = await ira.press_data(edited, world.signed(chat, f"m:take:{anna}"))
    answer = await ira.wait_for_answer(tap)
    assert answer.text is not None and "уже в работе у Менеджер Олег" in answer.text
    tap = await ira.press(edited, RELEASE)
    answer = await ira.wait_for_answer(tap)
    assert answer.text is not None and "уже в работе у Менеджер Олег" in answer.text
    # Someone in the chat who is not a manager (restricted: may read, not act).
    stranger = world.emu.add_user("Чужой")
    world.managers.add_member(stranger, status="restricted")
    tap = await stranger.press_data(edited, world.signed(chat, f"m:release:{anna}"))
    answer = await stranger.wait_for_answer(tap)
    assert answer.text is not None and "только для менеджеров" in answer.text
    # A release for a lead this card is not about (even signed for this chat).
    tap = await world.manager.press_data(edited, world.signed(chat, f"m:release:{boris}"))
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "не из этого чата" in answer.text
    for data in (f"m:release:{anna}:1", "m:release:", f"m:release:0{anna}"):
        tap = await world.manager.press_data(edited, world.signed(chat, data))
        answer = await world.manager.wait_for_answer(tap)
        assert answer.text is not None and "ничего не изменилось" in answer.text
    after = await ledger(world)
    assert after == before
    # A double tap on the owner's release: the second finds nothing to give back.
    first = await world.manager.press(edited, RELEASE)
    second = await world.manager.press_data(edited, world.signed(chat, f"m:release:{anna}"))
    answers = [await world.manager.wait_for_answer(q) for q in (first, second)]
    assert sorted("снова у бота" in (a.text or "") for a in answers) == [False, True]
    async with world.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ManagerTake)) == 1


async def test_buttons_for_a_forgotten_lead_are_refused(world: World, clock: FakeClock) -> None:
    user, card = await hot_lead(world)
    await take(world, card)
    edited = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    anna = (await lead_row(world)).id
    await user.send("/forget")
    confirm = await user.next_message()
    await user.press(confirm, "Да, удалить")
    await user.next_message()
    await world.app.handoff.tick()
    await world.app.handoff.settle()
    for data in (f"m:release:{anna}", f"m:take:{anna}"):
        # "take" from the card before it was taken, "release" from the card now.
        tap = await world.manager.press_data(edited, world.signed(world.managers.id, data))
        answer = await world.manager.wait_for_answer(tap)
        assert answer.text is not None and "удалён" in answer.text
    # The forgotten lead stays in the managers' numbers, as a number.
    async with world.sessions() as session:
        [row] = (await session.scalars(select(ManagerTake))).all()
    assert row.lead_id == anna and row.released_at is None
    await world.admin.send("/managers")
    report = await world.admin.next_message()
    assert "Менеджер Олег" in report.plain_text and "Взято: 1" in report.plain_text
    assert "Анна" not in report.plain_text


async def test_managers_shows_who_took_and_who_sold(world: World, clock: FakeClock) -> None:
    _, card = await hot_lead(world, "Анна")
    _, second = await hot_lead(world, "Вера")
    clock.advance(timedelta(minutes=6))
    await take(world, card)
    await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    ira = world.emu.add_user("Ира", last_name="<b>Смирнова</b>")
    world.managers.add_member(ira)
    clock.advance(timedelta(minutes=2))
    await take(world, second, ira)
    await world.manager.press(card, PAID)
    prompt = await world.managers.wait_for(lambda m: "Сумма оплаты" in m.plain_text)
    await world.managers.send(world.manager, "13 800", reply_to=prompt.message_id)
    await world.managers.wait_for(lambda m: "записана" in m.plain_text)
    await world.admin.send("/managers 7d")
    report = await world.admin.next_message()
    text = report.plain_text
    assert text.startswith("👥 Менеджеры, 7d")
    assert "1. Менеджер Олег" in text and "2. Ира <b>Смирнова</b>" in text  # shown, escaped
    assert "Взято: 2 · медиана 7\u00a0мин" in text  # 6 and 8 minutes
    assert "Запись: 0 · оплата: 1 (100%)" in text and "Выручка: 13\u202f800\u00a0₽" in text
    assert "&lt;b&gt;" in report.text
    assert all(len(line) <= 40 for line in text.splitlines())


@pytest.mark.parametrize(
    ("args", "reply"),
    [("abc", "/managers [7d"), ("7d 30d", "/managers [7d"), ("99999d", "/managers [7d"),
     ("2026-02-30", "/managers [7d"), ("0001-01-01", "/managers [7d"), ("я" * 3000, "/managers")],
)  # fmt: skip
async def test_managers_with_a_bad_period_says_how_to_write_it(
    world: World, args: str, reply: str
) -> None:
    await world.admin.send(f"/managers {args}")
    answer = await world.admin.next_message()
    assert reply in answer.plain_text and len(answer.plain_text) < 400
    assert "Менеджеры," not in answer.plain_text


async def test_managers_is_for_admins_only(world: World) -> None:
    user = world.user("Пётр")
    await user.send("/managers")
    answer = await user.next_message()
    assert "Менеджеры" not in answer.plain_text
    await world.managers.send(world.manager, "/managers")
    assert not any("👥" in m.plain_text for m in world.managers.messages)
