"""A school whose script is in English gets the bot's own replies in English: the admin's
commands (refused and accepted) and the managers' card buttons, prompt and answers. No
Cyrillic letter in any of them (the Russian tests prove Russian)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from funnel.core.clock import FakeClock
from funnel.core.inputs import MAX_ARG
from funnel.core.models import AmountPrompt, Lead, Purchase
from handlers.i18n import t
from tests.e2e.conftest import World, qualify, running_world

ROOT = Path(__file__).resolve().parent.parent.parent
# The English script's buttons for a hot prospect.
HOT_EN = ["To change careers", "Within the next 2 weeks", "I'm ready to pay in full", "I do"]
CYRILLIC = re.compile("[\u0400-\u04ff]")
TAKE, PAID, UNFIT = "🙋 I'll take it", "💰 Paid", "🚫 Not a fit"


@pytest.fixture
async def world(emu: Any, tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    extra = {"script_path": ROOT / "scripts" / "en.yaml"}
    async with running_world(emu, tmp_path, clock, **extra) as running:
        yield running


def english(text: str | None) -> str:
    assert text, "no text"
    assert not CYRILLIC.search(text), text
    return text


async def ask(world: World, command: str) -> str:
    await world.admin.send(command)
    return english((await world.admin.next_message()).plain_text)


async def hot_card(world: World, name: str = "Anna") -> Any:
    """A hot lead's card (the managers' newest message with the card's buttons), delivered
    and recorded as sent."""
    seen = {m.message_id for m in world.managers.messages}
    await qualify(world, HOT_EN, name, username=name.lower())
    card = await world.managers.wait_for(lambda m: m.message_id not in seen and UNFIT in m.labels)
    await world.app.handoff.settle()
    return card


async def prompt_row(world: World, message_id: int) -> AmountPrompt:
    """The prompt's row, committed just after the prompt was sent."""
    for _ in range(100):
        async with world.sessions() as session:
            row = await session.get(AmountPrompt, (world.managers.id, message_id))
        if row is not None:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"no amount prompt row for message {message_id}")


@pytest.mark.parametrize(
    ("command", "reason", "usage"),
    [
        ("/paid #1 abc", "is not an amount", "/paid <lead number or @username>"),
        ("/paid #1 0.001", "greater than 0", "/paid <lead number"),
        ("/paid #1 99999999999999999999", "less than 1 000 000 000", "/paid <lead number"),
        ("/paid #1 100 rubles", "not a currency code", "/paid <lead number"),
        ("/paid ² 100", "digits 0–9", "/paid <lead number"),
        ("/lead ²", "Lead number «²» is not understood", "/lead <lead number"),
        ("/lead #2147483648", "too large", "/lead <lead number"),
        ("/lead 0", "greater than 0", "/lead <lead number"),
        ("/lead @", "username", "/lead <lead number"),
        ("/spend " + "s" * 65 + " 100", "Source: at most 64", "/spend <source>"),
        ("/stats yesterday", "is not understood", "/stats [7d"),
        ("/stats 0d", "number of days", "/stats [7d"),
        ("/funnel 0001-01-01", "out of range", "/funnel [7d"),
        ("/stats " + "x" * (MAX_ARG + 1), "Too long: each word", "/stats [7d"),
        ("/paid 1 " + "ы" * 4000, "Too long: at most 400", "/paid <lead number"),
    ],
)
async def test_a_malformed_command_is_refused_in_english(
    world: World, command: str, reason: str, usage: str
) -> None:
    await qualify(world, HOT_EN, "Anna", username="anna")
    reply = await ask(world, command)
    assert reason in reply and usage in reply, reply


async def test_accepted_commands_answer_in_english(world: World) -> None:
    await qualify(world, HOT_EN, "Anna", username="anna")
    assert "Lead «999» not found." in await ask(world, "/paid 999 6900")
    assert "/paid <lead number" in await ask(world, "/paid 1")
    paid = await ask(world, "/paid @anna 6900")
    assert paid == "Payment of 6900.00 RUB from lead #1 recorded. Stage: Paid."
    spend = await ask(world, "/spend vk_ads 10000 usd")
    assert spend == "Spend of 10000.00 USD on “vk_ads” recorded."


async def test_the_managers_card_buttons_prompt_and_answers_are_in_english(
    world: World,
) -> None:
    card = await hot_card(world)
    assert card.labels == [TAKE, PAID, UNFIT]
    tap = await world.manager.press(card, TAKE)
    answer = await world.manager.wait_for_answer(tap)
    assert english(answer.text) == "The lead is yours. Write to them soon."
    edited = await world.managers.wait_for(
        lambda m: m.message_id == card.message_id and TAKE not in m.labels
    )
    # The owner may give the lead back to the bot's follow-ups.
    assert edited.labels == ["↩️ Back to the bot", PAID, UNFIT]

    await world.manager.press(card, PAID)
    prompt = await world.managers.wait_for(lambda m: "Payment amount for lead" in m.plain_text)
    assert english(prompt.plain_text).startswith("Payment amount for lead #1 ")
    await prompt_row(world, prompt.message_id)
    await world.managers.send(world.manager, "-5", reply_to=prompt.message_id)
    refused = await world.managers.wait_for(lambda m: "greater than 0" in m.plain_text)
    english(refused.plain_text)
    await world.managers.send(world.manager, "6 900", reply_to=prompt.message_id)
    done = await world.managers.wait_for(lambda m: "recorded" in m.plain_text)
    assert english(done.plain_text) == "Payment of 6900.00 RUB from lead #1 recorded. Stage: Paid."

    second = await hot_card(world, "Boris")
    tap = await world.manager.press(second, UNFIT)
    answer = await world.manager.wait_for_answer(tap)
    assert english(answer.text) == "Marked as not a fit."
    async with world.sessions() as session:
        stages = dict((await session.execute(select(Lead.first_name, Lead.stage))).all())
        amounts = [float(p.amount) for p in await session.scalars(select(Purchase))]
    assert stages == {"Anna": "customer", "Boris": "disqualified"}
    assert amounts == [6900]


async def test_the_amount_is_matched_by_the_prompts_message_not_its_words(world: World) -> None:
    card = await hot_card(world)
    await world.manager.press(card, PAID)
    prompt = await world.managers.wait_for(lambda m: "Payment amount" in m.plain_text)
    assert (await prompt_row(world, prompt.message_id)).lead_id == 1
    # A reply to any other of the bot's messages (the card names the lead too) is no payment.
    await world.managers.send(world.manager, "100", reply_to=card.message_id)
    await world.managers.send(world.manager, "200", reply_to=prompt.message_id)
    await world.managers.wait_for(lambda m: "recorded" in m.plain_text)
    async with world.sessions() as session:
        amounts = [float(p.amount) for p in await session.scalars(select(Purchase))]
    assert amounts == [200]


def test_the_russian_and_english_buttons_differ() -> None:
    assert t("card.button.take", lang="ru") == "🙋 Беру"
    assert t("card.button.take", lang="en") == TAKE
