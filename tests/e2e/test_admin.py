"""The owner's commands and the managers' cards through the emulator."""

from __future__ import annotations

import io

from openpyxl import load_workbook
from sqlalchemy import select
from telegram_emulator.users import SimUser

from funnel.core.models import AdSpend, Lead, Purchase
from tests.e2e.conftest import HOT, World, qualify


async def hot_lead(world: World, name: str = "Анна") -> SimUser:
    return await qualify(world, HOT, name, username=name.lower())


async def ask(world: World, command: str) -> str:
    await world.admin.send(command)
    return (await world.admin.next_message()).plain_text


async def test_stats_sources_lead_paid_spend(world: World) -> None:
    await hot_lead(world)
    stats = await ask(world, "/stats")
    assert "Прошёл квалификацию" in stats and "100%" in stats
    assert "vk_ads" in await ask(world, "/stats 7d vk_ads")
    assert "/stats" in await ask(world, "/stats yesterdayish")
    assert "записан" in await ask(world, "/spend vk_ads 10000")
    assert "Оплатил" in await ask(world, "/paid @анна 6900")
    assert "не найден" in await ask(world, "/paid 999 6900")
    assert "<сумма>" in await ask(world, "/paid 1 -5")
    sources = await ask(world, "/sources")
    assert "vk_ads" in sources
    card = await ask(world, "/lead 1")
    assert "Анна" in card and "Сменить профессию" in card
    async with world.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        assert lead.stage == "customer"
        assert len((await session.scalars(select(Purchase))).all()) == 1
        assert len((await session.scalars(select(AdSpend))).all()) == 1


async def test_the_chart_is_a_photo_and_the_export_a_document(world: World) -> None:
    await hot_lead(world)
    await world.admin.send("/funnel 30d")
    photo = await world.admin.next_message(timeout=20)
    assert photo.photo is not None and photo.photo.data is not None
    assert photo.photo.data.startswith(b"\x89PNG")
    await world.admin.send("/export")
    document = await world.admin.next_message()
    assert document.document is not None and document.document.data is not None
    assert document.document.file_name.endswith(".xlsx")
    book = load_workbook(io.BytesIO(document.document.data))
    leads = list(book.worksheets[0].iter_rows(values_only=True))
    assert "vk_ads" in leads[1] and "Сменить профессию" in leads[1]
    assert isinstance(leads[1][0], int)
    await world.admin.send("/export 30d csv")
    document = await world.admin.next_message()
    assert document.document is not None and document.document.data is not None
    assert document.document.file_name.endswith(".csv")
    text = document.document.data.decode("utf-8-sig")
    assert "Сменить профессию" in text and "vk_ads" in text
    # A wrong word gets the usage, not a file.
    for wrong in ("/export 30d csv xlsx", "/export 30d 7d", "/export pdf"):
        await world.admin.send(wrong)
        reply = await world.admin.next_message()
        assert reply.document is None and "/export" in reply.plain_text


async def test_campaigns_and_reload(world: World) -> None:
    assert "Кампании" in await ask(world, "/campaigns")
    assert "загружен" in await ask(world, "/reload")


async def test_a_manager_takes_a_card_and_a_second_cannot(world: World) -> None:
    await hot_lead(world)
    card = await world.managers.next_message()
    second = world.emu.add_user("Менеджер Ира")
    world.managers.add_member(second)
    stranger = world.user("Посторонний")
    world.managers.add_member(stranger, status="left")

    await world.manager.press(card, "🙋 Беру")
    await world.managers.wait_for(lambda m: "В работе у Менеджер Олег" in m.plain_text)
    tap = await second.press(world.managers.messages[0], "💰 Оплатил")
    await second.wait_for_answer(tap)
    async with world.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
    assert lead.manager_id == world.manager.id
    # The card lost its "take" button; pressing it from an old copy is refused.
    forged = await second.press_data(card, world.signed(card.chat_id, f"m:take:{lead.id}"))
    answer = await second.wait_for_answer(forged)
    assert answer.text is not None and "уже в работе" in answer.text
    async with world.sessions() as session:
        assert (await session.scalars(select(Lead.manager_id))).one() == world.manager.id


async def test_a_manager_records_a_payment_by_reply(world: World) -> None:
    await hot_lead(world)
    card = await world.managers.next_message()
    await world.manager.press(card, "💰 Оплатил")
    prompt = await world.managers.wait_for(lambda m: "Сумма оплаты" in m.plain_text)
    await world.managers.send(world.manager, "13 800", reply_to=prompt.message_id)
    await world.managers.wait_for(lambda m: "записана" in m.plain_text)
    async with world.sessions() as session:
        purchase = (await session.scalars(select(Purchase))).one()
    assert float(purchase.amount) == 13800
