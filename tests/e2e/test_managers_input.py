"""The managers' chat under forged and odd input: every button pressed there is answered,
an action counts only on a card the bot sent to that chat, and an amount only as a reply to
the bot's own prompt."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update
from telegram_emulator.state import BotMessage

from funnel.core.models import Answer, Lead, Notification, Purchase, StageEvent
from tests.e2e.conftest import HOT, WARM, World, qualify

INVISIBLE = "\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"


async def ledger(world: World) -> tuple[object, ...]:
    """Everything a refused button or reply must leave as it was."""
    async with world.sessions() as session:
        leads = await session.execute(
            select(Lead.id, Lead.stage, Lead.manager_id, Lead.manager_name).order_by(Lead.id)
        )
        counts = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (StageEvent, Purchase, Answer)
        ]
    return (tuple(leads.all()), *counts)


async def hot_card(world: World, name: str = "Анна") -> BotMessage:
    """A hot lead's card, delivered and recorded as sent."""
    await qualify(world, HOT, name, username=name.lower())
    card = await world.managers.next_message()
    await world.app.handoff.settle()
    return card


async def lead_id(world: World, name: str) -> int:
    async with world.sessions() as session:
        return (await session.scalars(select(Lead.id).where(Lead.first_name == name))).one()


@pytest.mark.parametrize(
    "data",
    ["m:take:abc", "m:take:", "m:take:99999999999999999999", "m:take:-1", "m:take:0",
     "m:take:٣", "m:take:01", "m:take:1:2", "m:steal:1", "m:", "a:need:career", "s:restart",
     "b:book", "garbage", ""],
)  # fmt: skip
async def test_any_other_button_in_the_managers_chat_is_answered(world: World, data: str) -> None:
    card = await hot_card(world)
    before = await ledger(world)
    tap = await world.manager.press_data(card, data)
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "ничего не изменилось" in answer.text
    assert await ledger(world) == before
    assert len(world.managers.messages) == 1  # no prompt, no new card


@pytest.mark.parametrize("act", ["take", "paid", "unfit"])
async def test_a_forged_button_for_a_lead_without_a_card_changes_nothing(
    world: World, act: str
) -> None:
    card = await hot_card(world, "Анна")
    await qualify(world, WARM, "Борис", username="boris")  # warm: no card
    boris = await lead_id(world, "Борис")
    before = await ledger(world)
    # Signed for this chat (as if the key were known): the card check still refuses it.
    tap = await world.manager.press_data(card, world.signed(card.chat_id, f"m:{act}:{boris}"))
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "не из этого чата" in answer.text
    assert await ledger(world) == before
    assert len(world.managers.messages) == 1
    assert world.managers.messages[0].plain_text == card.plain_text  # the card not edited


async def test_a_card_recorded_elsewhere_is_not_honoured_here(world: World) -> None:
    card = await hot_card(world)
    anna = await lead_id(world, "Анна")
    async with world.sessions() as session:
        await session.execute(
            update(Notification).values(chat_id=world.managers.id, message_id=card.message_id + 7)
        )
        await session.commit()
    before = await ledger(world)
    tap = await world.manager.press(card, "🙋 Беру")
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "не из этого чата" in answer.text
    assert await ledger(world) == before
    # Where it really landed, the same button works.
    async with world.sessions() as session:
        await session.execute(update(Notification).values(message_id=card.message_id))
        await session.commit()
    tap = await world.manager.press(card, "🙋 Беру")
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "Лид ваш" in answer.text
    async with world.sessions() as session:
        taker = await session.scalar(select(Lead.manager_id).where(Lead.id == anna))
    assert taker == world.manager.id


async def test_a_card_telegram_refused_carries_no_action(world: World) -> None:
    card = await hot_card(world)
    async with world.sessions() as session:
        await session.execute(update(Notification).values(status="failed"))
        await session.commit()
    before = await ledger(world)
    tap = await world.manager.press(card, "🚫 Не подходит")
    answer = await world.manager.wait_for_answer(tap)
    assert answer.text is not None and "не из этого чата" in answer.text
    assert await ledger(world) == before


async def prompt_for(world: World, card: BotMessage) -> BotMessage:
    await world.manager.press(card, "💰 Оплатил")
    return await world.managers.wait_for(lambda m: "Сумма оплаты" in m.plain_text)


@pytest.mark.parametrize(
    ("amount", "reason"),
    [("0.001", "больше 0"), ("0", "больше 0"), ("-100", "больше 0"), ("²", "не сумма"),
     ("１００", "не сумма"), ("99999999999999999999", "меньше 1 000 000 000"),
     ("ы" * 4000, "слишком длинная")],
)  # fmt: skip
async def test_a_bad_amount_is_refused_and_nothing_recorded(
    world: World, amount: str, reason: str
) -> None:
    card = await hot_card(world)
    prompt = await prompt_for(world, card)
    before = await ledger(world)
    await world.managers.send(world.manager, amount, reply_to=prompt.message_id)
    reply = await world.managers.wait_for(lambda m: m.reply_to_message_id is not None)
    assert reason in reply.plain_text and len(reply.plain_text) < 200
    assert await ledger(world) == before


async def test_an_amount_counts_only_as_a_reply_to_the_bots_own_prompt(world: World) -> None:
    card = await hot_card(world)
    anna = await lead_id(world, "Анна")
    # A person writes the prompt's words; a reply to them is conversation, not a payment.
    fake = await world.managers.send(world.manager, f"Сумма оплаты для лида #{anna}:")
    await world.managers.send(world.manager, "6900", reply_to=fake.message_id)
    prompt = await prompt_for(world, card)
    await world.managers.send(world.manager, "13 800", reply_to=prompt.message_id)
    done = await world.managers.wait_for(lambda m: "записана" in m.plain_text)
    assert "13800.00 RUB" in done.plain_text
    # Replying to the bot's confirmation (it names the lead too) is no payment either.
    await world.managers.send(world.manager, "100", reply_to=done.message_id)
    await world.manager.press(card, "🙋 Беру")  # something the bot does answer, afterwards
    await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    async with world.sessions() as session:
        amounts = [float(p.amount) for p in (await session.scalars(select(Purchase)))]
    assert amounts == [13800]
    assert sum("записана" in m.plain_text for m in world.managers.messages) == 1


async def test_an_amount_for_a_lead_whose_card_failed_is_not_recorded(world: World) -> None:
    card = await hot_card(world)
    prompt = await prompt_for(world, card)
    async with world.sessions() as session:
        await session.execute(update(Notification).values(status="failed"))
        await session.commit()
    before = await ledger(world)
    await world.managers.send(world.manager, "6900", reply_to=prompt.message_id)
    reply = await world.managers.wait_for(lambda m: m.reply_to_message_id is not None)
    assert "не из этого чата" in reply.plain_text
    assert await ledger(world) == before


async def test_names_reach_the_managers_without_invisible_characters(world: World) -> None:
    user = world.emu.add_user("Ан\u202eна\u200b", last_name="\u2066Смир\u200fнова\u2069\ufeff")
    await user.send("/start vk_ads")
    message = await user.next_message()
    for label in HOT:
        await user.press(message, label)
        message = await user.next_message()
    card = await world.managers.next_message()
    assert "Лид #1: Анна Смирнова" in card.plain_text
    assert not set(card.text) & set(INVISIBLE)
    # The manager's own name is shown plain as well.
    sneaky = world.emu.add_user("Ира\u202e", last_name="\u200bМенеджер")
    world.managers.add_member(sneaky)
    await world.app.handoff.settle()
    await sneaky.press(card, "🙋 Беру")
    taken = await world.managers.wait_for(lambda m: "В работе у" in m.plain_text)
    assert "В работе у Ира Менеджер" in taken.plain_text
    assert not set(taken.text) & set(INVISIBLE)
