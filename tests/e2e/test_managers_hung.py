"""A managers' chat whose sends hang (a stuck connection, a long throttle) holds up nobody
else: the card buttons' writes are committed before their Telegram calls, so while those
calls wait, other prospects are answered as usual, and what the managers are told is what
the database holds."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import select

from funnel.core.models import AmountPrompt, Lead, ManagerTake
from tests.e2e.conftest import HOT, World, qualify

# Each send to the managers' chat (card edits, the amount prompt) takes this long: far past
# the one second the other prospects may wait.
HUNG_SECONDS = 10.0
OTHERS_WITHIN_SECONDS = 1.0


async def test_a_hung_managers_chat_while_every_card_button_is_pressed(world: World) -> None:
    await qualify(world, HOT, "Анна", username="anna")
    card = await world.managers.next_message()
    async with world.sessions() as session:
        lead_id = (await session.scalars(select(Lead.id))).one()
    colleague = world.emu.add_user("Менеджер Ира")
    world.managers.add_member(colleague)
    third = world.emu.add_user("Менеджер Пётр")
    world.managers.add_member(third)
    world.emu.slow_chat(world.managers.id, HUNG_SECONDS)
    started = time.monotonic()

    # Every button of the card: each tap is answered after its commit, before the hung
    # send; the release waits behind the same manager's take (one user's updates in order).
    take = await world.manager.press(card, "🙋 Беру")
    taken = await world.manager.wait_for_answer(take, timeout=3)
    assert taken.text is not None and "Лид ваш" in taken.text
    paid = await colleague.press(card, "💰 Оплатил")
    unfit = await third.press(card, "🚫 Не подходит")
    release = await world.manager.press_data(card, f"m:release:{lead_id}")
    for tap in (paid, unfit):
        await colleague.wait_for_answer(tap, timeout=3)
    assert time.monotonic() - started < HUNG_SECONDS, "the taps waited for the hung chat"

    # Meanwhile, new prospects are answered at their usual pace, for as long as the chat
    # hangs (the take's edit, then the release's behind it).
    waits: list[float] = []
    while time.monotonic() - started < HUNG_SECONDS * 1.5:
        prospect = world.user(f"Гость {len(waits)}")
        sent = time.monotonic()
        await prospect.send("/start")
        await prospect.next_message(timeout=HUNG_SECONDS * 3)
        waits.append(time.monotonic() - sent)
        await asyncio.sleep(0.2)
    assert len(waits) > 10
    assert max(waits) <= OTHERS_WITHIN_SECONDS, f"slowest /start answer: {max(waits):.2f}s"

    # The hung sends arrive in the end, and say what was committed.
    prompt = await world.managers.wait_for(
        lambda m: "Сумма оплаты" in m.plain_text, timeout=HUNG_SECONDS * 3
    )
    await world.manager.wait_for_answer(release, timeout=HUNG_SECONDS * 3)
    async with world.sessions() as session:
        rows = (await session.scalars(select(AmountPrompt))).all()
        assert [(r.chat_id, r.message_id, r.lead_id) for r in rows] == [
            (world.managers.id, prompt.message_id, lead_id)
        ]
        take_row = (await session.scalars(select(ManagerTake))).one()
        assert take_row.manager_id == world.manager.id
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        assert lead.stage == world.app.scripts.current.roles.exit
        # Not a fit ended the take, or the release did: the lead is nobody's.
        assert lead.manager_id is None and take_row.released_at is not None
    world.emu.slow_chat(world.managers.id, None)
