"""Campaign planning on a real SQLite database with a fake clock, and the pure decisions
about a due touch (send, cancel, postpone) and what it says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import db
from funnel.core import store
from funnel.core.models import JobMark, Lead, Touch
from funnel.followups import planning, rendering, touch_queue
from funnel.followups.decision import Cancel, Postpone, Send, decide
from funnel.script.loading import parse_script
from funnel.script.schema import Script
from tests.conftest import TEST_TEXTS_YAML

ZONE = ZoneInfo("Europe/Moscow")
# Tuesday 12:00 in Moscow: inside the 10:00–21:00 window.
NOON = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)

SCRIPT_YAML = (
    """
format: 1
id: test
version: "1"
language: en
school: Test School
course: Python
stages:
  - {id: new, title: New}
  - {id: engaged, title: Engaged}
  - {id: qualified, title: Qualified}
  - {id: consultation, title: Booked}
  - {id: customer, title: Customer}
  - {id: loyal, title: Loyal}
exit_stages:
  - {id: disqualified, title: Not a fit}
"""
    + TEST_TEXTS_YAML
    + """questions:
  - id: need
    text: "Q{question_number}: why?"
    options:
      - {id: career, label: Career, score: 30}
      - {id: fun, label: Fun, score: 0}
  - id: timing
    text: "Q{question_number} of {questions_total}: when?"
    options:
      - {id: now, label: Now, score: 30}
      - {id: not_now, label: Not now, score: 0}
disqualifiers:
  - {id: not_now, when: {timing: not_now}}
buttons:
  book: {label: Book, stage: consultation, notify_managers: true}
  ready_now: {label: Ready now, do: restart}
  nps_9: {label: "9", nps: 9, stage: loyal}
outcomes:
  thresholds: {hot: 50, warm: 20}
  hot: {stage: qualified, text: Hot}
  warm: {stage: qualified, text: Warm}
  cold: {stage: qualified, text: Cold}
  disqualified: {stage: disqualified, text: Later}
send_window: {start: "10:00", end: "21:00"}
frequency_cap: {messages: 2, per: 1d}
campaigns:
  - id: nurture_dialogue
    kind: nurture
    title: "Stopped <answering>"
    stages: [engaged]
    steps:
      - after: 1h
        with_question: true
        text: "{first_name}, continue from question {question_number}?"
      - {after: 23h, with_question: true, text: "Second nudge"}
  - id: nurture_qualified
    kind: nurture
    title: Qualified, not booked
    stages: [qualified]
    steps:
      - {after: 1d, text: Case study, buttons: [book]}
      - {after: 2d, text: Free lesson, buttons: [book]}
      - {after: 4d, text: Offer, buttons: [book], notify_managers: true}
  - id: winback_not_now
    kind: winback
    title: Not now
    stages: [disqualified]
    exit_reasons: [not_now]
    steps:
      - {after: 30d, text: "Is now a good time?", buttons: [ready_now]}
  - id: postsale_nps
    kind: postsale
    title: NPS
    stages: [customer]
    steps:
      - {after: 7d, text: "Rate us", buttons: [nps_9]}
"""
)


def make_script(source: str = SCRIPT_YAML, **replace: str) -> Script:
    for old, new in replace.items():
        source = source.replace(old, new)
    return parse_script(source, "test.yaml")


SCRIPT = make_script()


async def add_lead(
    sessions: async_sessionmaker[AsyncSession],
    *,
    stage: str = "engaged",
    at: datetime = NOON,
    chat_id: int | None = None,
    position: str | None = "timing",
    **fields: Any,
) -> int:
    async with sessions() as session:
        count = await session.scalar(select(func.count()).select_from(Lead)) or 0
        user_id = fields.pop("user_id", 10_000 + count)
        lead = store.new_lead(
            store.Profile(user_id=user_id, chat_id=chat_id or user_id, first_name="Ann"),
            source="test",
            stage=stage,
            position=position,
            version="test@1",
            at=at,
        )
        for name, value in fields.items():
            setattr(lead, name, value)
        session.add(lead)
        await session.commit()
        return lead.id


async def touches(sessions: async_sessionmaker[AsyncSession]) -> list[Touch]:
    async with sessions() as session:
        return list((await session.scalars(select(Touch).order_by(Touch.id))).all())


async def plan(
    sessions: async_sessionmaker[AsyncSession], now: datetime, script: Script = SCRIPT
) -> int:
    async with sessions() as session:
        count = await planning.plan_touches(session, script, now)
        await session.commit()
        return count


# -- planning -----------------------------------------------------------------------------


async def test_silent_engaged_lead_gets_step_one_after_an_hour(sessions: Any) -> None:
    lead_id = await add_lead(sessions, at=NOON)
    assert await plan(sessions, NOON + timedelta(minutes=59)) == 0
    assert await plan(sessions, NOON + timedelta(hours=1)) == 1
    [touch] = await touches(sessions)
    assert (touch.lead_id, touch.campaign, touch.step, touch.cycle) == (
        lead_id,
        "nurture_dialogue",
        1,
        1,
    )
    assert touch.due_at == NOON + timedelta(hours=1)
    assert touch.status == "planned"
    # Step two only once its own offset (1 h + 23 h) has passed.
    assert await plan(sessions, NOON + timedelta(hours=23, minutes=59)) == 0
    assert await plan(sessions, NOON + timedelta(hours=24)) == 1
    assert [t.step for t in await touches(sessions)] == [1, 2]


async def test_planning_is_idempotent(sessions: Any) -> None:
    for _ in range(5):
        await add_lead(sessions, at=NOON)
    later = NOON + timedelta(hours=2)
    assert await plan(sessions, later) == 5
    for _ in range(3):
        assert await plan(sessions, later) == 0
    # Even with the watermarks forgotten, the unique key holds.
    async with sessions() as session:
        await session.execute(delete(JobMark))
        await session.commit()
    assert await plan(sessions, later) == 0
    assert len(await touches(sessions)) == 5


async def test_after_downtime_only_the_latest_due_step_is_planned(sessions: Any) -> None:
    await add_lead(sessions, stage="qualified", at=NOON)
    await plan(sessions, NOON + timedelta(days=3, hours=1))
    assert [(t.campaign, t.step) for t in await touches(sessions)] == [("nurture_qualified", 2)]


async def test_filters_exit_reason_and_reachability(sessions: Any) -> None:
    wanted = await add_lead(sessions, stage="disqualified", exit_reason="not_now")
    await add_lead(sessions, stage="disqualified", exit_reason="other")
    await add_lead(sessions, stage="disqualified", exit_reason="not_now", opted_out_at=NOON)
    await add_lead(sessions, stage="disqualified", exit_reason="not_now", blocked_at=NOON)
    await add_lead(sessions, stage="disqualified", exit_reason="not_now", deleted_at=NOON)
    await plan(sessions, NOON + timedelta(days=30))
    assert [t.lead_id for t in await touches(sessions)] == [wanted]


async def test_a_new_cycle_starts_the_campaign_again(sessions: Any) -> None:
    lead_id = await add_lead(sessions, at=NOON)
    await plan(sessions, NOON + timedelta(hours=1))
    # The lead writes at 13:30 (a new cycle) and falls silent again.
    async with sessions() as session:
        lead = await session.get(Lead, lead_id)
        assert lead is not None
        store.start_cycle(lead, NOON + timedelta(hours=1, minutes=30))
        await session.commit()
    assert await plan(sessions, NOON + timedelta(hours=2, minutes=29)) == 0
    assert await plan(sessions, NOON + timedelta(hours=2, minutes=30)) == 1
    assert [(t.step, t.cycle) for t in await touches(sessions)] == [(1, 1), (1, 2)]


async def test_a_late_commit_behind_the_watermark_is_still_planned(sessions: Any) -> None:
    await plan(sessions, NOON + timedelta(hours=1))  # watermark at NOON
    # A dialogue stamped its cycle a minute before the watermark but committed after it.
    await add_lead(sessions, at=NOON - timedelta(minutes=1))
    assert await plan(sessions, NOON + timedelta(hours=1, seconds=5)) == 1


async def test_catching_up_a_large_backlog_goes_chunk_by_chunk(sessions: Any) -> None:
    for i in range(7):
        await add_lead(sessions, at=NOON + timedelta(seconds=i))
    later = NOON + timedelta(hours=2)
    counts = []
    for _ in range(4):
        async with sessions() as session:
            counts.append(await planning.plan_touches(session, SCRIPT, later, chunk=3))
            await session.commit()
    assert counts == [3, 3, 1, 0]


async def test_concurrent_planners_never_double_a_touch(sessions: Any) -> None:
    for i in range(30):
        await add_lead(sessions, at=NOON + timedelta(minutes=i))
    moments = [NOON + timedelta(hours=1, minutes=m) for m in (0, 10, 20, 30, 40)]

    async def planner(moment: datetime) -> int:
        return await plan(sessions, moment)

    results = await asyncio.gather(*(planner(m) for m in moments * 3))
    assert sum(results) == len(await touches(sessions))
    keys = [(t.lead_id, t.campaign, t.step, t.cycle) for t in await touches(sessions)]
    assert len(keys) == len(set(keys)) == 30


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    starts=st.lists(st.integers(min_value=0, max_value=48 * 60), min_size=1, max_size=8),
    ticks=st.lists(st.integers(min_value=0, max_value=72 * 60), min_size=1, max_size=12),
    replies=st.lists(st.integers(min_value=0, max_value=72 * 60), max_size=4),
)
async def test_property_one_touch_per_key_and_only_when_due(
    tmp_path_factory: pytest.TempPathFactory,
    starts: list[int],
    ticks: list[int],
    replies: list[int],
) -> None:
    """Whatever the order of ticks and replies: never two touches for one key, never a touch
    before its offset, and every step whose time came is planned for the current cycle."""
    path = tmp_path_factory.mktemp("prop") / "db.sqlite3"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    await db.migrate(engine)
    sessions = db.sessionmaker(engine)
    try:
        leads = [await add_lead(sessions, at=NOON + timedelta(minutes=s)) for s in starts]
        events = sorted([(t, "tick") for t in ticks] + [(r, "reply") for r in replies])
        for minute, kind in events:
            now = NOON + timedelta(minutes=minute)
            if kind == "reply":
                async with sessions() as session:
                    lead = await session.get(Lead, leads[minute % len(leads)])
                    assert lead is not None
                    if lead.cycle_started_at <= now:
                        store.start_cycle(lead, now)
                    await session.commit()
            else:
                await asyncio.gather(plan(sessions, now), plan(sessions, now))
        found = await touches(sessions)
        keys = [(t.lead_id, t.campaign, t.step, t.cycle) for t in found]
        assert len(keys) == len(set(keys))
        last_tick = NOON + timedelta(minutes=max(ticks))
        async with sessions() as session:
            current = {lead.id: lead for lead in (await session.scalars(select(Lead))).all()}
        for touch in found:
            assert touch.created_at >= touch.due_at
        for lead in current.values():
            mine = {(t.step) for t in found if t.lead_id == lead.id and t.cycle == lead.cycle}
            elapsed = last_tick - lead.cycle_started_at
            if timedelta(hours=1) <= elapsed < timedelta(hours=24):
                assert 1 in mine
            if elapsed >= timedelta(hours=24):
                assert 2 in mine
    finally:
        await engine.dispose()


# -- deciding -----------------------------------------------------------------------------


def _lead(**fields: Any) -> Lead:
    values: dict[str, Any] = {
        "id": 1,
        "chat_id": 5,
        "stage": "engaged",
        "cycle": 1,
        "position": "timing",
        "first_name": "Ann",
        "opted_out_at": None,
        "blocked_at": None,
        "deleted_at": None,
        "exit_reason": None,
        "temperature": None,
    }
    values.update(fields)
    return Lead(**values)


def _touch(**fields: Any) -> Touch:
    values: dict[str, Any] = {
        "id": 1,
        "lead_id": 1,
        "campaign": "nurture_dialogue",
        "step": 1,
        "cycle": 1,
        "due_at": NOON,
        "status": "planned",
    }
    values.update(fields)
    return Touch(**values)


@pytest.mark.parametrize(
    ("lead", "touch", "expected"),
    [
        (None, {}, Cancel("forgotten")),
        ({"deleted_at": NOON}, {}, Cancel("forgotten")),
        ({"blocked_at": NOON}, {}, Cancel("blocked")),
        ({"opted_out_at": NOON}, {}, Cancel("opted_out")),
        ({"stage": "qualified", "cycle": 2}, {}, Cancel("stage_changed")),
        ({"cycle": 2}, {}, Cancel("replied")),
        ({}, {"campaign": "gone"}, Cancel("campaign_removed")),
        ({}, {"step": 9}, Cancel("campaign_removed")),
        (
            {"stage": "disqualified", "exit_reason": "other"},
            {"campaign": "winback_not_now"},
            Cancel("not_eligible"),
        ),
        ({}, {}, Send()),
    ],
)
def test_decide_checks_the_lead_again(
    lead: dict[str, Any] | None, touch: dict[str, Any], expected: object
) -> None:
    subject = None if lead is None else _lead(**lead)
    assert decide(_touch(**touch), subject, SCRIPT, NOON, [], ZONE) == expected


def test_quiet_hours_postpone_to_the_next_opening() -> None:
    late = datetime(2026, 3, 3, 19, 30, tzinfo=UTC)  # 22:30 in Moscow
    decision = decide(_touch(), _lead(), SCRIPT, late, [], ZONE)
    assert decision == Postpone(datetime(2026, 3, 4, 7, 0, tzinfo=UTC), "quiet_hours")


def test_the_cap_postpones_until_the_oldest_send_leaves() -> None:
    sent = [NOON - timedelta(hours=23), NOON - timedelta(hours=1)]
    decision = decide(_touch(), _lead(), SCRIPT, NOON, sent, ZONE)
    assert decision == Postpone(NOON + timedelta(hours=1), "frequency_cap")
    # When the slot frees at night, the touch waits for the window as well.
    sent = [NOON - timedelta(hours=5), NOON - timedelta(hours=1)]
    decision = decide(_touch(), _lead(), SCRIPT, NOON, sent, ZONE)
    assert decision == Postpone(datetime(2026, 3, 4, 7, 0, tzinfo=UTC), "frequency_cap")


# -- rendering ----------------------------------------------------------------------------


def test_a_nudge_shows_the_open_question_and_the_stop_button() -> None:
    campaign = SCRIPT.campaign("nurture_dialogue")
    assert campaign is not None
    reply = rendering.render_touch(SCRIPT, campaign, 1, _lead(first_name="<Ann>"))
    assert reply.text == "&lt;Ann&gt;, continue from question 2?"
    labels = [[b.label for b in row] for row in reply.buttons]
    assert labels == [["Now"], ["Not now"], ["Stop messages"]]
    assert reply.buttons[0][0].kind == "answer"
    assert (reply.buttons[0][0].key, reply.buttons[0][0].value) == ("timing", "now")
    stop = reply.buttons[-1][0]
    assert (stop.kind, stop.key) == ("system", "stop")


def test_every_touch_of_every_campaign_ends_with_the_stop_button() -> None:
    for campaign in SCRIPT.campaigns:
        for step in range(1, len(campaign.steps) + 1):
            reply = rendering.render_touch(SCRIPT, campaign, step, _lead(position=None))
            assert reply.buttons[-1] == (rendering.stop_button(SCRIPT),)
            for row in reply.buttons:
                assert len(row) >= 1


def test_cancel_pending_after_opt_out_is_respected_by_planning() -> None:
    # Opted-out leads are filtered in SQL; the same rule is in decide() for touches planned
    # before the opt-out.
    decision = decide(_touch(), _lead(opted_out_at=NOON), SCRIPT, NOON, [], ZONE)
    assert decision == Cancel("opted_out")


async def test_claim_refuses_a_touch_whose_lead_replied(sessions: Any) -> None:
    lead_id = await add_lead(sessions, at=NOON)
    await plan(sessions, NOON + timedelta(hours=1))
    [touch] = await touches(sessions)
    async with sessions() as session:
        await session.execute(update(Lead).where(Lead.id == lead_id).values(cycle=2))
        await session.commit()
    async with sessions() as session:
        claimed = await touch_queue.claim_for_sending(session, [touch.id], NOON)
        await session.commit()
    assert claimed == set()
    [touch] = await touches(sessions)
    assert touch.status == "planned"


# -- an edited campaign applies to the leads already in its stages -------------------------


async def test_a_campaign_that_newly_covers_a_stage_plans_the_leads_already_there(
    sessions: Any,
) -> None:
    # Two days ago a lead booked a consultation; no campaign covered that stage then.
    booked = await add_lead(sessions, stage="consultation", at=NOON - timedelta(days=2))
    silent = await add_lead(sessions, stage="qualified", at=NOON - timedelta(hours=30))
    for hours in range(0, 48, 6):  # the scheduler ticked all along: watermarks are at NOW
        await plan(sessions, NOON - timedelta(hours=hours))
    assert [(t.lead_id, t.campaign, t.step) for t in await touches(sessions)] == [
        (silent, "nurture_qualified", 1)
    ]
    # The marketer adds consultation to the nurture and reloads.
    edited = make_script(
        **{"    stages: [qualified]\n": "    stages: [qualified, consultation]\n"}
    )
    assert await plan(sessions, NOON, edited) == 1
    planned = [(t.lead_id, t.campaign, t.step) for t in await touches(sessions)]
    # Booked two days ago: step 2 (1 d + 2 d) is not due yet, step 1 is.
    assert planned == [(silent, "nurture_qualified", 1), (booked, "nurture_qualified", 1)]
    # Nothing doubles: the same script again, later ticks, the old script back.
    for script in (edited, edited, SCRIPT, edited):
        assert await plan(sessions, NOON + timedelta(minutes=5), script) == 0
    keys = [(t.lead_id, t.campaign, t.step, t.cycle) for t in await touches(sessions)]
    assert len(keys) == len(set(keys)) == 2


async def test_a_widened_filter_looks_again_at_leads_behind_the_watermark(sessions: Any) -> None:
    # Out of the dialogue 31 days ago for another reason than "not now".
    lead_id = await add_lead(
        sessions, stage="disqualified", exit_reason="just_curious", at=NOON - timedelta(days=31)
    )
    for days in (2, 1, 0):
        assert await plan(sessions, NOON - timedelta(days=days)) == 0
    # The win-back now takes every disqualified lead.
    everyone = make_script(**{"    exit_reasons: [not_now]\n": ""})
    assert await plan(sessions, NOON, everyone) == 1
    [touch] = await touches(sessions)
    assert (touch.lead_id, touch.campaign, touch.due_at) == (
        lead_id, "winback_not_now", NOON - timedelta(days=1)
    )  # fmt: skip
    assert await plan(sessions, NOON + timedelta(hours=1), everyone) == 0


async def test_watermarks_of_an_old_definition_are_dropped(sessions: Any) -> None:
    await add_lead(sessions, at=NOON)
    await plan(sessions, NOON + timedelta(hours=1))
    edited = make_script(**{"    stages: [engaged]\n": "    stages: [new, engaged]\n"})
    await plan(sessions, NOON + timedelta(hours=1), edited)
    async with sessions() as session:
        names = set((await session.scalars(select(JobMark.name))).all())
    expected = {
        planning.mark_name(c, n) for c in edited.campaigns for n in range(1, len(c.steps) + 1)
    }
    assert names == expected
    # A text-only edit keeps the watermark: nothing to look at again.
    reworded = make_script(**{"Second nudge": "Another nudge"})
    assert {
        planning.mark_name(c, n) for c in reworded.campaigns for n in range(1, len(c.steps) + 1)
    } == {planning.mark_name(c, n) for c in SCRIPT.campaigns for n in range(1, len(c.steps) + 1)}
