"""The hand-off outbox called directly (no Telegram): which rows a hot moment makes and the
key that keeps a double tap to one, claiming, retries with backoff, giving up, recovery
after a crash, and the CRM's JSON."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.clock import FakeClock
from funnel.core.models import Lead, Notification
from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue, Result
from funnel.handoff import crm, notifications
from funnel.handoff.notifications import CRM_WEBHOOK, MANAGER_CARD, Claimed, Outcome
from funnel.script.schema import Script

ANN = Profile(user_id=701, chat_id=701, first_name="Аня", last_name="Смирнова", username="ann")
HOT = ["career", "now", "full", "self"]
WARM = ["project", "later", "installments", "family"]
Sessions = async_sessionmaker[AsyncSession]


async def step(sessions: Sessions, script: Script, clock: FakeClock, act: str, *args: str,
               fail: bool = False) -> tuple[Result, int]:  # fmt: skip
    """One update the way the prospect handler runs it: the dialogue, then the hand-off rows
    in the same transaction, one commit (or a rollback when `fail`)."""
    async with sessions() as session:
        dialogue = Dialogue(session, script, clock)
        if act == "start":
            result = await dialogue.start(ANN, None)
        elif act == "answer":
            result = await dialogue.answer(ANN, args[0], option_id=args[1])
        elif act == "press":
            result = await dialogue.press(ANN, args[0])
        else:
            result = await dialogue.restart(ANN)
        kinds = notifications.kinds_for(
            hot=result.handoff is not None, qualified=result.qualified, cards=True, crm=True
        )
        planned = 0
        if kinds and result.lead_id is not None:
            lead = await session.get(Lead, result.lead_id)
            assert lead is not None
            planned = await notifications.plan(session, lead, kinds, clock.now())
        if fail:
            await session.rollback()
        else:
            await session.commit()
        return result, planned


async def qualify(sessions: Sessions, script: Script, clock: FakeClock, choices: list[str],
                  *, fail: bool = False) -> tuple[Result, int]:  # fmt: skip
    questions = ["need", "timing", "budget", "authority"]
    for question, option in zip(questions[:-1], choices[:-1], strict=True):
        await step(sessions, script, clock, "answer", question, option)
    return await step(sessions, script, clock, "answer", "authority", choices[-1], fail=fail)


async def rows(sessions: Sessions) -> list[Notification]:
    async with sessions() as session:
        query = select(Notification).order_by(Notification.id)
        return list((await session.scalars(query)).all())


def test_hot_moments_make_cards_and_the_crm_hears_of_qualified_leads() -> None:
    assert notifications.kinds_for(hot=True, qualified=True, cards=True, crm=True) == [
        MANAGER_CARD, CRM_WEBHOOK
    ]  # fmt: skip
    assert notifications.kinds_for(hot=False, qualified=True, cards=True, crm=True) == [
        CRM_WEBHOOK
    ]  # fmt: skip
    assert notifications.kinds_for(hot=True, qualified=False, cards=True, crm=False) == [
        MANAGER_CARD
    ]  # fmt: skip
    assert notifications.kinds_for(hot=True, qualified=True, cards=False, crm=False) == []
    assert notifications.kinds_for(hot=False, qualified=False, cards=True, crm=True) == []


async def test_a_hot_verdict_plans_a_card_and_a_webhook_in_its_transaction(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    result, planned = await qualify(sessions, script, clock, HOT)
    assert result.handoff is not None and result.qualified and planned == 2
    card, webhook = await rows(sessions)
    assert (card.kind, webhook.kind) == (MANAGER_CARD, CRM_WEBHOOK)
    assert card.occasion == webhook.occasion
    assert card.occasion.startswith("qualified:a")
    assert (card.status, card.attempts, card.due_at, card.sent_at) == (
        "planned", 0, clock.now(), None
    )  # fmt: skip


async def test_a_rolled_back_update_leaves_no_row(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    _, planned = await qualify(sessions, script, clock, HOT, fail=True)
    assert planned == 2
    assert await rows(sessions) == []


async def test_a_double_tap_is_one_moment_and_starting_over_is_a_new_one(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    await qualify(sessions, script, clock, HOT)
    _, booked = await step(sessions, script, clock, "press", "book")
    _, again = await step(sessions, script, clock, "press", "book")
    _, other = await step(sessions, script, clock, "press", "trial")
    assert (booked, again, other) == (2, 0, 0)
    moments = {row.occasion for row in await rows(sessions)}
    assert len(moments) == 2  # the hot verdict and the booking
    # Starting over and qualifying hot again is a new attempt: the managers hear of it.
    await step(sessions, script, clock, "restart")
    _, requalified = await qualify(sessions, script, clock, HOT)
    assert requalified == 2
    assert len({row.occasion for row in await rows(sessions)}) == 3


async def test_a_warm_lead_goes_to_the_crm_only(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    result, planned = await qualify(sessions, script, clock, WARM)
    assert (result.handoff, result.qualified, planned) == (None, True, 1)
    [row] = await rows(sessions)
    assert row.kind == CRM_WEBHOOK


async def test_a_disqualified_lead_makes_no_row(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    result, planned = await qualify(sessions, script, clock, ["curious", "not_now", "low", "self"])
    assert (result.handoff, result.qualified, planned) == (None, False, 0)


async def test_claiming_takes_due_rows_once(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    await qualify(sessions, script, clock, HOT)
    async with sessions() as session:
        first = await notifications.claim_due(session, clock.now(), limit=1)
        rest = await notifications.claim_due(session, clock.now(), limit=10)
        again = await notifications.claim_due(session, clock.now(), limit=10)
        await session.commit()
    assert [c.kind for c in first + rest] == [MANAGER_CARD, CRM_WEBHOOK]
    assert again == []
    assert all(c.attempts == 1 for c in first + rest)
    assert {row.status for row in await rows(sessions)} == {"sending"}


async def test_a_retry_waits_its_turn_and_a_late_answer_does_not_undo_recovery(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    await qualify(sessions, script, clock, HOT)
    async with sessions() as session:
        card, webhook = await notifications.claim_due(session, clock.now(), limit=10)
        await session.commit()
    retry = notifications.retry_or_give_up(webhook, clock.now(), "HTTP 500")
    async with sessions() as session:
        await notifications.record(session, [retry], clock.now())
        await session.commit()
    async with sessions() as session:
        assert await notifications.claim_due(session, clock.now(), limit=10) == []
        later = await notifications.claim_due(session, clock.now() + timedelta(seconds=15), 10)
        await session.commit()
    assert [(c.kind, c.attempts) for c in later] == [(CRM_WEBHOOK, 2)]
    # A crash: the card may have left (unknown, never resent); the webhook goes again.
    async with sessions() as session:
        recovered = await notifications.recover_interrupted(session, clock.now())
        await session.commit()
    assert recovered.unknown_cards == [(card.id, card.lead_id)]
    assert recovered.replanned_webhooks == 1
    # The old process's answer arrives after all: recovery's decision stands.
    async with sessions() as session:
        await notifications.record(session, [Outcome(card.id, "sent")], clock.now())
        await session.commit()
    statuses = {row.kind: row.status for row in await rows(sessions)}
    assert statuses == {MANAGER_CARD: "unknown", CRM_WEBHOOK: "planned"}


def test_backoff_doubles_up_to_an_hour() -> None:
    delays = [notifications.retry_delay(n).total_seconds() for n in range(1, 12)]
    assert delays[:5] == [15, 30, 60, 120, 240]
    assert max(delays) == 3600 and delays[-1] == 3600
    assert notifications.retry_delay(10_000) == timedelta(hours=1)


def test_a_day_of_failures_gives_up(clock: FakeClock) -> None:
    start = clock.now()
    row = Claimed(1, 1, CRM_WEBHOOK, "qualified:a1:e1", attempts=3, created_at=start)
    retry = notifications.retry_or_give_up(row, start, "HTTP 502")
    assert (retry.status, retry.retry_at) == ("planned", start + timedelta(seconds=60))
    asked = notifications.retry_or_give_up(
        row, start, "429", not_before=start + timedelta(minutes=5)
    )
    assert asked.retry_at == start + timedelta(minutes=5)
    late = notifications.retry_or_give_up(row, start + timedelta(hours=24), "HTTP 502")
    assert late.status == "failed" and late.retry_at is None
    assert late.error == "gave up after 3 tries: HTTP 502"


async def test_the_crm_payload_describes_the_lead(
    sessions: Sessions, script: Script, clock: FakeClock
) -> None:
    await step(sessions, script, clock, "start")
    await qualify(sessions, script, clock, HOT)
    [card, webhook] = await rows(sessions)
    key = crm.idempotency_key(webhook.id, webhook.lead_id, webhook.occasion, webhook.created_at)
    assert key == crm.idempotency_key(
        webhook.id, webhook.lead_id, webhook.occasion, webhook.created_at
    )
    assert key != crm.idempotency_key(card.id, card.lead_id, card.occasion, card.created_at)
    async with sessions() as session:
        lead = await session.get(Lead, webhook.lead_id)
        assert lead is not None
        payload = await crm.lead_payload(session, script, lead, key)
    assert payload["idempotency_key"] == key
    assert (payload["lead_id"], payload["name"], payload["username"]) == (
        lead.id, "Аня Смирнова", "ann"
    )  # fmt: skip
    assert payload["link"] == "https://t.me/ann"
    assert (payload["source"], payload["stage"], payload["temperature"], payload["score"]) == (
        "direct", "qualified", "hot", 100
    )  # fmt: skip
    assert [(a["question"], a["option"], a["value"]) for a in payload["answers"]][:2] == [
        ("need", "career", "Сменить профессию"),
        ("timing", "now", "В ближайшие 2 недели"),
    ]
    assert payload["reasons"][0] == "need: Сменить профессию (+30)"
    assert payload["created_at"] == clock.now().isoformat()
