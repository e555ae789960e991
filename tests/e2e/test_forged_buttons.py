"""A button counts only if the bot offered it: forged, copied or pre-signature callback data,
and signed data for a button the lead's state does not offer, move nothing (no answer, no
score, no stage, no card) and are answered exactly like a stale button."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from telegram_emulator.state import BotMessage
from telegram_emulator.users import SimUser

from funnel.core.models import AmountPrompt, Answer, Lead, Notification, Purchase, StageEvent
from handlers.callbacks import Signer
from handlers.i18n import t
from tests.e2e.conftest import HOT, World, qualify

STALE = "Эта кнопка уже устарела — вот актуальный вопрос."


async def ledger(world: World) -> tuple[object, ...]:
    """Everything a refused press must leave as it was."""
    async with world.sessions() as session:
        leads = await session.execute(
            select(Lead.id, Lead.stage, Lead.score, Lead.position, Lead.manager_id).order_by(
                Lead.id
            )
        )
        counts = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (StageEvent, Answer, Notification, Purchase, AmountPrompt)
        ]
    return (tuple(leads.all()), *counts)


async def at_question_one(world: World, name: str = "Пётр") -> tuple[SimUser, BotMessage]:
    user = world.user(name)
    await user.send("/start")
    return user, await user.next_message()


async def no_card_goes_out(world: World) -> None:
    """The hand-off has delivered everything it had: the managers' chat got nothing."""
    await world.app.handoff.tick()
    await world.app.handoff.settle()
    assert world.managers.messages == []


async def stale_reply(user: SimUser, message: BotMessage, data: str) -> BotMessage:
    tap = await user.press_data(message, data)
    reply = await user.next_message()
    await user.wait_for_answer(tap)
    return reply


def forgeries(world: World, user: SimUser, data: str) -> list[str]:
    """`data` unsigned (as a client forges it, or as buttons were before signing), with
    a made-up tag, signed for another chat, and signed with another bot's key."""
    other = world.app.signer.sign(data, user.id + 1)
    made_up = f"{data}:AAAAAAAAAAA"
    foreign = Signer.from_token("1:another-bot").sign(data, user.id)
    return [data, made_up, other, foreign]


@pytest.mark.parametrize("data", ["b:nps_10", "b:book", "a:budget:full", "a:need:hacker"])
async def test_a_forged_button_moves_nothing_and_reads_as_stale(world: World, data: str) -> None:
    user, question = await at_question_one(world)
    before = await ledger(world)
    for forged in forgeries(world, user, data):
        reply = await stale_reply(user, question, forged)
        assert reply.plain_text.startswith(STALE)
        assert "Вопрос 1 из 4" in reply.plain_text
        assert reply.labels == question.labels
    assert await ledger(world) == before
    await no_card_goes_out(world)


@pytest.mark.parametrize("data", ["b:nps_10", "b:book", "a:budget:full", "a:timing:now"])
async def test_a_signed_button_the_lead_was_not_offered_moves_nothing(
    world: World, data: str
) -> None:
    """Behind the signature the funnel checks the lead's state: an NPS score or a booking
    at question 1, or an answer to a question not asked, was never on the lead's screen."""
    user, question = await at_question_one(world)
    before = await ledger(world)
    reply = await stale_reply(user, question, world.signed(user.id, data))
    assert reply.plain_text.startswith(STALE) and "Вопрос 1 из 4" in reply.plain_text
    assert await ledger(world) == before
    await no_card_goes_out(world)


async def test_a_forged_press_is_answered_exactly_as_a_stale_one(world: World) -> None:
    user, question = await at_question_one(world)
    await user.press(question, HOT[0])
    await user.next_message()
    # A real stale button: question 1's, once the lead stands at question 2.
    stale = await stale_reply(user, question, question.callback_data[0])
    forged = await stale_reply(user, question, "b:nps_10")
    assert (forged.plain_text, forged.labels) == (stale.plain_text, stale.labels)
    assert "Вопрос 2 из 4" in stale.plain_text


async def test_a_button_copied_from_another_chat_is_stale(world: World) -> None:
    anna, anna_question = await at_question_one(world, "Анна")
    boris, boris_question = await at_question_one(world, "Борис")
    before = await ledger(world)
    # Anna's genuine "career" button, sent from Boris's chat.
    copied = anna_question.callback_data[0]
    reply = await stale_reply(boris, boris_question, copied)
    assert reply.plain_text.startswith(STALE)
    assert await ledger(world) == before
    # In Anna's own chat the very same data is her answer.
    await anna.press_data(anna_question, copied)
    assert "Вопрос 2 из 4" in (await anna.next_message()).plain_text


async def test_the_genuine_buttons_still_count(world: World) -> None:
    user = await qualify(world, HOT)
    outcome = user.last_message
    assert outcome is not None
    await world.managers.next_message()  # the hot verdict's card
    await user.press(outcome, "📅 Записаться на консультацию")
    assert "Менеджер" in (await user.next_message()).plain_text
    async with world.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        scores = (await session.scalars(select(Answer.score))).all()
    assert lead.stage == "consultation" and sum(scores) == lead.score
    # An NPS score is offered only by the post-sale touch: not on this outcome.
    reply = await stale_reply(user, outcome, world.signed(user.id, "b:nps_10"))
    assert reply.plain_text.startswith(STALE)
    async with world.sessions() as session:
        assert (await session.scalars(select(Lead.stage))).one() == "consultation"
        assert await session.scalar(select(func.count()).where(Answer.question == "nps")) == 0


async def test_a_forged_card_button_in_the_managers_chat_changes_nothing(world: World) -> None:
    user = await qualify(world, HOT, "Анна")
    card = await world.managers.next_message()
    await world.app.handoff.settle()
    async with world.sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
    before = await ledger(world)
    data = f"m:paid:{lead.id}"
    chat = world.managers.id
    for forged in [
        data,
        f"{data}:AAAAAAAAAAA",
        world.app.signer.sign(data, user.id),  # signed for the lead's chat
        world.app.signer.sign(data, chat - 1),  # for another group
        Signer.from_token("1:another-bot").sign(data, chat),
    ]:
        tap = await world.manager.press_data(card, forged)
        answer = await world.manager.wait_for_answer(tap)
        # The managers' chat's answer to any button that is not a card's.
        assert answer.text == t("manager.not_a_button", lang="ru")
    assert await ledger(world) == before
    assert len(world.managers.messages) == 1  # no amount prompt
    # The card's own button asks for the amount.
    tap = await world.manager.press(card, "💰 Оплатил")
    await world.manager.wait_for_answer(tap)
    prompt = await world.managers.next_message()
    assert str(lead.id) in prompt.plain_text


@pytest.mark.parametrize("data", ["s:restart", "s:forget_yes"])
async def test_a_forged_system_button_does_not_reset_or_erase(world: World, data: str) -> None:
    """The dialogue's own operations are always on offer, so only the signature keeps a
    forged "start over" or "erase me" out."""
    user, question = await at_question_one(world)
    await user.press(question, HOT[0])
    await user.next_message()
    before = await ledger(world)
    for forged in forgeries(world, user, data):
        reply = await stale_reply(user, question, forged)
        assert reply.plain_text.startswith(STALE) and "Вопрос 2 из 4" in reply.plain_text
    assert await ledger(world) == before
    async with world.sessions() as session:
        assert (await session.scalars(select(Lead.deleted_at))).one() is None
