"""Malformed admin commands through the emulator: each gets a short reply that Telegram
accepts (the emulator refuses a message over 4096 characters or with broken HTML), and
nothing is recorded."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from funnel.core.inputs import MAX_ARG
from funnel.core.models import AdSpend, Lead, Purchase, StageEvent
from tests.e2e.conftest import HOT, World, qualify

INVISIBLE = "\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"


async def ask(world: World, command: str) -> str:
    await world.admin.send(command)
    return (await world.admin.next_message()).plain_text


async def ledger(world: World) -> tuple[object, ...]:
    """What a refused command must leave as it was: leads, the stage log, money."""
    async with world.sessions() as session:
        leads = (await session.execute(select(Lead.id, Lead.stage).order_by(Lead.id))).all()
        counts = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (StageEvent, Purchase, AdSpend)
        ]
    return (tuple(leads), *counts)


@pytest.mark.parametrize(
    ("command", "reason", "usage"),
    [
        ("/lead 99999999999999999999", "слишком большой", "/lead <номер лида"),
        ("/lead #2147483648", "слишком большой", "/lead <номер лида"),
        ("/lead ²", "цифры 0–9", "/lead <номер лида"),
        ("/lead ١", "цифры 0–9", "/lead <номер лида"),
        ("/lead 0", "больше 0", "/lead <номер лида"),
        ("/lead @", "username", "/lead <номер лида"),
        ("/lead", "", "/lead <номер лида"),
        ("/paid ² 100", "цифры 0–9", "/paid <номер лида"),
        ("/paid 99999999999999999999 100", "слишком большой", "/paid <номер лида"),
        ("/paid #1 0.001", "больше 0", "/paid <номер лида"),
        ("/paid #1 0,004", "больше 0", "/paid <номер лида"),
        ("/paid #1 ²", "не сумма", "/paid <номер лида"),
        ("/paid #1 1e3", "не сумма", "/paid <номер лида"),
        ("/paid #1 99999999999999999999", "меньше 1 000 000 000", "/paid <номер лида"),
        ("/paid #1 100 рубли", "не код валюты", "/paid <номер лида"),
        ("/spend vk_ads 0.001", "больше 0", "/spend <источник>"),
        ("/spend " + "s" * 65 + " 100", "Источник", "/spend <источник>"),
        ("/stats 7d " + "s" * 65, "Источник", "/stats [7d"),
        ("/stats 9999-12-31", "вне допустимого диапазона", "/stats [7d"),
        ("/funnel 0001-01-01", "вне допустимого диапазона", "/funnel [7d"),
        ("/sources ²d", "не понят", "/sources [7d"),
    ],
)
async def test_a_malformed_command_gets_a_reason_and_the_usage(
    world: World, command: str, reason: str, usage: str
) -> None:
    await qualify(world, HOT, "Анна", username="anna")
    before = await ledger(world)
    reply = await ask(world, command)
    assert reason in reply and usage in reply
    assert len(reply) < 400
    assert await ledger(world) == before


@pytest.mark.parametrize("command", ["/stats all", "/funnel", "/sources", "/export", "/lead",
                                     "/paid 1", "/spend"])  # fmt: skip
async def test_an_over_long_argument_gets_a_short_too_long(world: World, command: str) -> None:
    name = command.split()[0]
    reply = await ask(world, f"{command} {'ы' * 4000}")
    assert "Слишком длинно" in reply and f"{name} " in reply
    assert len(reply) < 300
    reply = await ask(world, f"{command} {'x' * (MAX_ARG + 1)} 100")
    assert "Слишком длинно" in reply and f"{name} " in reply


async def test_what_the_admin_typed_is_quoted_back_cut_and_escaped(world: World) -> None:
    await world.admin.send("/lead <b>1</b>&amp;" + "\u202e" + "x" * 150)
    reply = await world.admin.next_message()
    assert "«<b>1</b>&amp;x" in reply.plain_text  # shown as typed, not as markup
    assert "<b>1</b>" not in reply.text and "\u202e" not in reply.text
    assert len(reply.plain_text) < 200
    assert "не найден" in await ask(world, "/lead @nobody_" + "\u202e" * 3)
    assert "\u202e" not in world.admin.messages[-1].text


async def test_a_payment_that_rounds_to_zero_is_not_recorded(world: World) -> None:
    await qualify(world, HOT, "Анна", username="anna")
    assert "больше 0" in await ask(world, "/paid #1 0.001")
    assert "больше 0" in await ask(world, "/paid @anna 0.004")
    async with world.sessions() as session:
        assert (await session.scalars(select(Purchase))).all() == []
        assert (await session.scalars(select(Lead.stage))).one() == "qualified"
    # Half a kopeck rounds up: that is a payment.
    assert "Оплата 0.01 RUB от лида #1 записана" in await ask(world, "/paid #1 0.005")
    async with world.sessions() as session:
        assert [float(p.amount) for p in (await session.scalars(select(Purchase)))] == [0.01]


async def test_names_reach_the_admin_without_invisible_characters(world: World) -> None:
    user = world.emu.add_user("Ан\u202eна\u200b", last_name="\u2066Смир\u200fнова\u2069\ufeff")
    await user.send("/start vk_ads")
    message = await user.next_message()
    for label in HOT:
        await user.press(message, label)
        message = await user.next_message()
    await world.admin.send("/lead 1")
    card = await world.admin.next_message()
    assert "Лид #1 · Анна Смирнова" in card.plain_text
    assert not set(card.text) & set(INVISIBLE)
