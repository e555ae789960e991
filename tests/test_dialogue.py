"""The dialogue as transactions, called directly (no Telegram): answers, scores, stage
moves and their log, stale buttons, restarts, opting out and forgetting."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.clock import FakeClock
from funnel.core.models import Answer, Lead, StageEvent, Touch
from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue, Result
from funnel.reports.funnel_report import funnel_report
from funnel.reports.periods import Period
from funnel.script.schema import Script

ANN = Profile(user_id=501, chat_id=501, first_name="Аня <script>", username="ann")
Act = Callable[[Dialogue], Awaitable[Result]]


async def run(sessions: async_sessionmaker[AsyncSession], script: Script, clock: FakeClock,
              act: Act) -> Result:  # fmt: skip
    async with sessions() as session:
        result = await act(Dialogue(session, script, clock))
        await session.commit()
        return result


async def lead_of(sessions: async_sessionmaker[AsyncSession], user_id: int = 501) -> Lead:
    async with sessions() as session:
        lead = (await session.scalars(select(Lead).where(Lead.user_id == user_id))).one()
        return lead


async def events(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str | None, str]]:
    async with sessions() as session:
        rows = await session.execute(
            select(StageEvent.from_stage, StageEvent.to_stage).order_by(StageEvent.id)
        )
        return [(a, b) for a, b in rows.all()]


async def answer_all(sessions: async_sessionmaker[AsyncSession], script: Script,
                     clock: FakeClock, choices: list[str]) -> Result:  # fmt: skip
    result = Result()
    for question, option in zip(["need", "timing", "budget", "authority"], choices, strict=False):
        result = await run(
            sessions, script, clock, lambda d, q=question, o=option: d.answer(ANN, q, option_id=o)
        )
    return result


async def test_start_creates_the_lead_with_its_source(sessions, script, clock) -> None:
    result = await run(sessions, script, clock, lambda d: d.start(ANN, "vk_ads"))
    lead = await lead_of(sessions)
    assert (lead.stage, lead.source, lead.position) == ("new", "vk_ads", "need")
    assert await events(sessions) == [(None, "new")]
    [reply] = result.replies
    # The name is the user's text: escaped, never markup.
    assert "Аня &lt;script&gt;" in reply.text and "<script>" not in reply.text
    assert next(b.label for row in reply.buttons for b in row) == "Сменить профессию"


async def test_a_hot_lead_is_qualified_and_handed_off(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    result = await answer_all(sessions, script, clock, ["career", "now", "full", "self"])
    lead = await lead_of(sessions)
    assert (lead.stage, lead.score, lead.temperature, lead.position) == (
        "qualified", 100, "hot", None
    )  # fmt: skip
    assert await events(sessions) == [
        (None, "new"), ("new", "engaged"), ("engaged", "qualified")
    ]  # fmt: skip
    assert result.handoff == lead.id
    assert "Менеджер" in result.replies[0].text
    labels = [b.key for row in result.replies[0].buttons for b in row]
    assert labels == ["book", "trial"]


async def test_warm_and_cold_follow_the_thresholds(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    await answer_all(sessions, script, clock, ["project", "later", "installments", "family"])
    lead = await lead_of(sessions)
    assert (lead.score, lead.temperature) == (45, "warm")


async def test_a_hard_disqualifier_ends_the_dialogue(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    result = await answer_all(sessions, script, clock, ["curious", "not_now", "low", "self"])
    lead = await lead_of(sessions)
    assert (lead.stage, lead.exit_reason, lead.temperature) == (
        "disqualified", "just_curious", None
    )  # fmt: skip
    assert "не нужен" in result.replies[0].text
    assert result.handoff is None


async def test_a_stale_button_changes_nothing(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    result = await run(sessions, script, clock,
                       lambda d: d.answer(ANN, "budget", option_id="full"))  # fmt: skip
    assert "устарела" in result.replies[0].text
    assert "Зачем вам Python" in result.replies[0].text
    lead = await lead_of(sessions)
    assert (lead.position, lead.score) == ("need", 0)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Answer)) == 0


async def test_an_unknown_option_is_not_stored(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    result = await run(sessions, script, clock,
                       lambda d: d.answer(ANN, "need", option_id="hacker"))  # fmt: skip
    # A button for an option the question does not have was never offered: a stale one.
    assert result.replies[0].text.startswith(script.texts.stale_button)
    assert "Вопрос 1 из 4" in result.replies[0].text
    assert (await lead_of(sessions)).position == "need"
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Answer)) == 0


async def test_typed_answers(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    # Typing a button's label is that answer.
    await run(sessions, script, clock, lambda d: d.answer(ANN, None, text="сменить профессию"))
    assert (await lead_of(sessions)).position == "timing"
    # "timing" takes no free text: the question again, nothing stored.
    result = await run(sessions, script, clock, lambda d: d.answer(ANN, None, text="завтра"))
    assert "кнопкой" in result.replies[0].text
    assert (await lead_of(sessions)).position == "timing"


async def test_free_text_is_stored_within_bounds(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    result = await run(sessions, script, clock, lambda d: d.answer(ANN, None, text="я" * 5000))
    assert "длинный" in result.replies[0].text
    await run(sessions, script, clock,
              lambda d: d.answer(ANN, None, text="  Хочу в\x00 аналитику <b>  "))  # fmt: skip
    async with sessions() as session:
        [answer] = (await session.scalars(select(Answer))).all()
    assert (answer.question, answer.option, answer.value) == ("need", None, "Хочу в аналитику <b>")


async def test_start_three_times_makes_one_lead(sessions, script, clock) -> None:
    for _ in range(3):
        result = await run(sessions, script, clock, lambda d: d.start(ANN, "vk"))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 1
    assert await events(sessions) == [(None, "new")]
    assert "Зачем вам Python" in result.replies[0].text


async def test_a_known_lead_may_continue_or_start_over(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    await answer_all(sessions, script, clock, ["career", "now"])
    result = await run(sessions, script, clock, lambda d: d.start(ANN, "other_source"))
    assert [b.key for row in result.replies[0].buttons for b in row] == ["continue", "restart"]
    assert (await lead_of(sessions)).source == "direct"  # the first touch keeps the credit
    result = await run(sessions, script, clock, lambda d: d.system(ANN, "continue"))
    assert "Вопрос 3 из 4" in result.replies[0].text
    await run(sessions, script, clock, lambda d: d.system(ANN, "restart"))
    lead = await lead_of(sessions)
    assert (lead.position, lead.score) == ("need", 0)
    await answer_all(sessions, script, clock, ["curious", "month", "low", "self"])
    assert (await lead_of(sessions)).score == 30


async def test_stop_and_start_again(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    await run(sessions, script, clock, lambda d: d.stop(ANN))
    assert (await lead_of(sessions)).opted_out_at is not None
    result = await run(sessions, script, clock, lambda d: d.start(ANN, None))
    assert (await lead_of(sessions)).opted_out_at is None
    assert "вернулись" in result.replies[0].text


async def test_forget_erases_the_person_and_keeps_the_count(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, "vk"))
    await run(sessions, script, clock, lambda d: d.answer(ANN, None, text="Моя тайна"))
    await run(sessions, script, clock, lambda d: d.forget(ANN))
    async with sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        answers = (await session.scalars(select(Answer))).all()
    assert (lead.user_id, lead.chat_id, lead.first_name, lead.username) == (None,) * 4
    assert lead.deleted_at is not None and lead.source == "vk"
    assert [a.value for a in answers] == [None]
    # Coming back later is a new, separate lead.
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Lead)) == 2


async def test_a_customer_never_falls_back(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    await answer_all(sessions, script, clock, ["career", "now", "full", "self"])
    await run(sessions, script, clock, lambda d: d.press(ANN, "book"))
    async with sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        from funnel.handoff.purchases import record_purchase

        await record_purchase(session, script, lead, 6900, "RUB", None, clock.now())
        await session.commit()
    await run(sessions, script, clock, lambda d: d.system(ANN, "restart"))
    await answer_all(sessions, script, clock, ["curious", "not_now", "low", "self"])
    assert (await lead_of(sessions)).stage == "customer"


ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("start"), st.sampled_from([None, "vk", "ads"])),
        st.tuples(st.just("answer"), st.sampled_from(
            [("need", "career"), ("need", "curious"), ("timing", "not_now"), ("timing", "now"),
             ("budget", "full"), ("authority", "self"), ("need", "bogus")])),
        st.tuples(st.just("text"), st.text(max_size=30)),
        st.tuples(st.just("press"), st.sampled_from(["book", "trial", "nps_9", "nope", "stop"])),
        st.tuples(st.just("system"), st.sampled_from(["continue", "restart", "stale"])),
    ),
    max_size=14,
)  # fmt: skip


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(actions=ACTIONS)
async def test_the_log_always_explains_the_lead(sessions, script, clock, actions) -> None:
    """Whatever a prospect does, the stage log chains and ends at the lead's stage, and the
    score is the sum of the answers that count."""
    user = Profile(user_id=hash(str(actions)) % 10**9 + 10**6, chat_id=1)
    user = Profile(user_id=user.user_id, chat_id=user.user_id)
    await run(sessions, script, clock, lambda d: d.start(user, None))
    for kind, arg in actions:
        act: Act
        if kind == "start":
            act = lambda d, a=arg: d.start(user, a)  # noqa: E731
        elif kind == "answer":
            act = lambda d, a=arg: d.answer(user, a[0], option_id=a[1])  # noqa: E731
        elif kind == "text":
            act = lambda d, a=arg: d.answer(user, None, text=a)  # noqa: E731
        elif kind == "press":
            act = lambda d, a=arg: d.press(user, a)  # noqa: E731
        else:
            act = lambda d, a=arg: d.system(user, a)  # noqa: E731
        result = await run(sessions, script, clock, act)
        assert all(1 <= len(r.text) <= 4096 for r in result.replies)
        clock.advance(60)
    async with sessions() as session:
        lead = (await session.scalars(select(Lead).where(Lead.user_id == user.user_id))).one()
        log = (await session.execute(
            select(StageEvent.from_stage, StageEvent.to_stage)
            .where(StageEvent.lead_id == lead.id).order_by(StageEvent.id)
        )).all()  # fmt: skip
        counted = await session.scalar(
            select(func.coalesce(func.sum(Answer.score), 0)).where(
                Answer.lead_id == lead.id, Answer.superseded.is_(False), Answer.question != "nps"
            )
        )
    assert log[0][0] is None
    assert all(prev[1] == cur[0] for prev, cur in itertools.pairwise(log))
    assert log[-1][1] == lead.stage
    assert lead.score == counted
    # The rollups the all-time report reads follow every write the dialogue makes.
    async with sessions() as session:
        kept = await funnel_report(session, script, now=clock.now(), period=Period("all"))
        logged = await funnel_report(
            session, script, now=clock.now(), period=Period("all"), from_log=True
        )
    assert kept.to_json() == logged.to_json()


async def test_a_removed_question_continues_at_the_next_unanswered(
    sessions, script, clock
) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    await run(sessions, script, clock, lambda d: d.answer(ANN, "need", option_id="career"))
    # The marketer drops the "timing" question while Ann stands at it.
    data = script.model_dump()
    data["questions"] = [q for q in data["questions"] if q["id"] != "timing"]
    data["disqualifiers"], data["campaigns"] = [], []
    edited = Script.model_validate(data)
    result = await run(sessions, edited, clock,
                       lambda d: d.answer(ANN, "timing", option_id="now"))  # fmt: skip
    assert "устарела" in result.replies[0].text
    assert "бюджет" in result.replies[0].text
    assert (await lead_of(sessions)).position == "budget"


async def nps_answers(sessions: async_sessionmaker[AsyncSession]) -> list[str | None]:
    async with sessions() as session:
        return list(await session.scalars(select(Answer.value).where(Answer.question == "nps")))


async def test_a_button_counts_only_where_the_script_offers_it(sessions, script, clock) -> None:
    await run(sessions, script, clock, lambda d: d.start(ANN, None))
    # At question 1 neither an NPS score nor a booking is on the lead's screen.
    for button in ("nps_10", "book"):
        result = await run(sessions, script, clock, lambda d, b=button: d.press(ANN, b))
        assert result.replies[0].text.startswith(script.texts.stale_button)
        assert result.handoff is None
    assert await events(sessions) == [(None, "new")]
    assert await nps_answers(sessions) == []
    # The hot outcome offers booking: it counts, and moves the lead along the funnel.
    await answer_all(sessions, script, clock, ["career", "now", "full", "self"])
    result = await run(sessions, script, clock, lambda d: d.press(ANN, "book"))
    assert result.handoff is not None and (await lead_of(sessions)).stage == "consultation"
    # The outcome has no NPS scale; only the post-sale touch has, once it was sent.
    result = await run(sessions, script, clock, lambda d: d.press(ANN, "nps_10"))
    assert result.replies[0].text.startswith(script.texts.stale_button)
    async with sessions() as session:
        lead = (await session.scalars(select(Lead))).one()
        from funnel.handoff.purchases import record_purchase

        await record_purchase(session, script, lead, 6900, "RUB", None, clock.now())
        await session.commit()
    result = await run(sessions, script, clock, lambda d: d.press(ANN, "nps_10"))
    assert result.replies[0].text.startswith(script.texts.stale_button)  # not sent yet
    async with sessions() as session:
        session.add(Touch(lead_id=lead.id, campaign="postsale_nps", step=1, cycle=0,
                          due_at=clock.now(), status="sent", sent_at=clock.now(),
                          created_at=clock.now()))  # fmt: skip
        await session.commit()
    await run(sessions, script, clock, lambda d: d.press(ANN, "nps_10"))
    assert await nps_answers(sessions) == ["10"]
    assert (await lead_of(sessions)).stage == "loyal"
    # Loyal now, the lead has left the campaign's stages: a second score is stale.
    result = await run(sessions, script, clock, lambda d: d.press(ANN, "nps_9"))
    assert result.replies[0].text.startswith(script.texts.stale_button)
    assert await nps_answers(sessions) == ["10"]
