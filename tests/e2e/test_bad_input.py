"""Everything a real chat throws at the bot: each gets a sensible reply or is ignored on
purpose, nothing crashes, nothing odd is stored, and Telegram would accept every request
(the emulator enforces its limits; the harness checks each request against the spec)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select
from telegram_emulator.users import SimUser

from funnel.core.models import Answer, Lead, StageEvent, Touch
from tests.e2e.conftest import World


async def started(world: World) -> SimUser:
    user = world.user("Пётр")
    await user.send("/start")
    await user.next_message()
    return user


async def count(world: World, model: type, *where: object) -> int:
    async with world.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)))


async def nothing_sent_after(user: SimUser) -> None:
    """Proves the bot stayed silent: the next thing it says answers a later /help."""
    await user.send("/help")
    reply = await user.next_message()
    assert "/stop" in reply.plain_text


NON_TEXT: dict[str, Callable[[SimUser], Awaitable[object]]] = {
    "sticker": lambda u: u.send_sticker(),
    "photo": lambda u: u.send_photo(caption="<b>вот</b>"),
    "voice": lambda u: u.send_voice(),
    "contact": lambda u: u.send_contact("+79990001122"),
    "location": lambda u: u.send_location(),
}


@pytest.mark.parametrize("kind", NON_TEXT)
async def test_non_text_gets_the_question_again(world: World, kind: str) -> None:
    user = await started(world)
    await NON_TEXT[kind](user)
    reply = await user.next_message()
    assert "только текст и кнопки" in reply.plain_text and "Вопрос 1 из 4" in reply.plain_text
    assert reply.labels[0] == "Сменить профессию"
    assert await count(world, Answer) == 0


async def test_a_5000_character_message(world: World) -> None:
    user = await started(world)
    await user.send("а" * 5000)
    reply = await user.next_message()
    assert "длинный" in reply.plain_text
    assert await count(world, Answer) == 0


@pytest.mark.parametrize("text", ["<b>жирный</b>", "3 < 5 & 6", "&amp; <a href='x'>", "</i>"])
async def test_html_looking_text_is_stored_as_text(world: World, text: str) -> None:
    user = await started(world)
    await user.send(text)
    reply = await user.next_message()
    assert "Вопрос 2 из 4" in reply.plain_text
    async with world.sessions() as session:
        assert (await session.scalars(select(Answer.value))).one() == text


async def test_an_edited_message_is_ignored_on_purpose(world: World) -> None:
    user = await started(world)
    sent = await user.send("Хочу в аналитику")
    await user.next_message()
    await user.edit(sent, "Просто интересно")
    await nothing_sent_after(user)
    async with world.sessions() as session:
        assert (await session.scalars(select(Answer.value))).one() == "Хочу в аналитику"


@pytest.mark.parametrize(
    "data",
    ["a:budget:full", "a:need:hacker", "b:no_such_button", "s:drop_tables", "garbage",
     "a:" + "x" * 62, "a:need:career:extra", "b:" + "щ" * 31],
)  # fmt: skip
async def test_forged_or_stale_buttons(world: World, data: str) -> None:
    user = await started(world)
    question = user.last_message
    assert question is not None
    tap = await user.press_data(question, data)
    reply = await user.next_message()
    assert "Вопрос 1 из 4" in reply.plain_text
    assert await count(world, Answer) == 0
    lead_stage = await count(world, Lead, Lead.stage == "new")
    assert lead_stage == 1
    await user.wait_for_answer(tap)


async def test_a_double_tap_counts_once(world: World) -> None:
    user = await started(world)
    question = user.last_message
    assert question is not None
    await asyncio.gather(user.press(question, "Сменить профессию"),
                         user.press(question, "Сменить профессию"))  # fmt: skip
    replies = [await user.next_message(), await user.next_message()]
    assert any("Вопрос 2 из 4" in r.plain_text for r in replies)
    assert await count(world, Answer) == 1
    async with world.sessions() as session:
        assert (await session.scalars(select(Lead.score))).one() == 30


async def test_start_three_times_fast(world: World) -> None:
    user = world.user()
    await asyncio.gather(*(user.send("/start vk") for _ in range(3)))
    for _ in range(3):
        await user.next_message()
    assert await count(world, Lead) == 1
    assert await count(world, StageEvent) == 1


async def test_a_group_the_bot_was_added_to_is_ignored(world: World) -> None:
    stranger = world.user("Гость")
    group = world.emu.add_group("Случайный чат", members=[stranger])
    await group.add_bot(by=stranger)
    await group.send(stranger, "/start")
    await group.send(stranger, "привет")
    await nothing_sent_after(stranger)
    assert group.messages == []
    assert await count(world, Lead) == 0


async def test_a_user_who_blocks_the_bot(world: World) -> None:
    user = await started(world)
    await user.block()
    async with world.sessions() as session:
        for _ in range(50):
            lead = (await session.scalars(select(Lead))).one()
            if lead.blocked_at is not None:
                break
            await asyncio.sleep(0.02)
            session.expire_all()
    assert lead.blocked_at is not None
    assert await count(world, Touch, Touch.status == "planned") == 0


async def test_admin_commands_tell_a_stranger_nothing(world: World) -> None:
    user = await started(world)
    for command in ("/stats", "/paid 1 100", "/export", "/funnel", "/lead 1", "/reload"):
        await user.send(command)
        reply = await user.next_message()
        assert "кнопкой" in reply.plain_text, command
        assert reply.photo is None and reply.document is None
    assert await count(world, Answer) == 0
