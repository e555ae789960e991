"""/forget means forgotten everywhere: no name, username, Telegram id or answer is left in
any table, the managers' cards are edited to say so, and the CRM hears of it through the
same outbox (with its idempotency key)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text

from funnel.core.models import Answer, Base, Lead, Notification
from handlers.i18n import t
from tests.e2e.conftest import HOT, World, qualify

# The fake CRM's fixtures are shared with the hand-off tests.
from tests.e2e.test_handoff import FakeCrm, delivered
from tests.e2e.test_handoff import crm as crm
from tests.e2e.test_handoff import crm_world as crm_world

NAME, USERNAME = "Анна", "anna_k"


async def every_value(world: World) -> str:
    """Every value of every table, as one text to search."""
    values: list[str] = []
    async with world.sessions() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(text(f"SELECT * FROM {table.name}"))).all()
            values.extend(f"{table.name}:{value}" for row in rows for value in row)
    return "\n".join(values)


async def test_forget_erases_the_person_edits_the_cards_and_tells_the_crm(
    crm_world: World,
    crm: FakeCrm,
) -> None:
    world = crm_world
    user = await qualify(world, HOT, NAME, username=USERNAME)
    card = await world.managers.next_message()
    assert NAME in card.plain_text
    await delivered(world)
    [lead_post] = await crm.wait_for(1)
    assert lead_post.body["event"] == "lead" and lead_post.body["username"] == USERNAME

    await user.send("/forget")
    confirm = await user.next_message()
    await user.press(confirm, "Да, удалить")
    done = await user.next_message()
    assert "удалены" in done.plain_text
    await delivered(world)

    # The card in the managers' chat no longer shows the person.
    edited = next(m for m in world.managers.messages if m.message_id == card.message_id)
    assert edited.plain_text == t("card.erased", lang="ru", lead=1)
    assert edited.buttons == [] or edited.buttons is None or not any(edited.buttons)
    # The CRM was told, with a key of its own that stays the same on a retry.
    received = await crm.wait_for(2)
    forgotten = received[1]
    assert forgotten.body["event"] == "forgotten" and forgotten.body["lead_id"] == 1
    assert forgotten.headers["Idempotency-Key"] == forgotten.body["idempotency_key"]
    assert set(forgotten.body) == {"event", "idempotency_key", "lead_id", "forgotten_at"}

    everything = await every_value(world)
    for trace in (NAME, USERNAME, str(user.id), str(user.chat_id), "Сменить профессию"):
        assert trace not in everything, trace
    async with world.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        assert lead.deleted_at is not None and lead.stage  # the count stays
        answers = (await session.scalars(select(Answer))).all()
        assert answers and all(a.value is None and a.option is None for a in answers)
        kinds = {n.kind: n.status for n in (await session.scalars(select(Notification)))}
        assert kinds["card_erasure"] == "sent" and kinds["crm_forgotten"] == "sent"


async def test_forget_before_the_card_left_cancels_it(world: World) -> None:
    """A card still waiting is never sent once the lead asked to be forgotten."""
    world.emu.fail_next("sendMessage", error_code=429, retry_after=1, chat_id=world.managers.id)
    user = await qualify(world, HOT, NAME, username=USERNAME)
    await delivered(world)
    await user.send("/forget")
    await user.press(await user.next_message(), "Да, удалить")
    await user.next_message()
    world.app.clock.advance(3600)  # type: ignore[attr-defined]
    await delivered(world)
    assert world.managers.messages == []
    async with world.sessions() as session:
        statuses: dict[str, Any] = {
            n.kind: n.status for n in (await session.scalars(select(Notification)))
        }
    assert statuses == {"manager_card": "cancelled"}
