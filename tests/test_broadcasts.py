"""The broadcast domain without Telegram: what the admin types (text, buttons, time), the
sticky A/B arm, the decision at send time, recipients written in batches that resume after
a stop, and the report's arithmetic."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.broadcasts import broadcasts
from funnel.broadcasts.broadcasts import (
    arm_of,
    broadcast_report,
    check_text,
    decide,
    parse_buttons,
    parse_send_at,
    write_recipients,
)
from funnel.broadcasts.segments import parse_segment
from funnel.core import store
from funnel.core.errors import InputError
from funnel.core.models import Broadcast, BroadcastRecipient, Lead, Touch
from funnel.followups.decision import Cancel, Postpone, Send
from funnel.script.schema import Script

ZONE = ZoneInfo("Europe/Moscow")
NOON = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)  # 12:00 in Moscow


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("   ", "broadcast.text_empty"),
        ("<b>open", "broadcast.text_html"),
        ("a & b", "broadcast.text_html"),
        ("<script>x</script>", "broadcast.text_html"),
        ("Цена {price}", "broadcast.text_placeholder"),
        ("x" * 4097, "broadcast.text_too_long"),
        ("{first_name}" * 70, "broadcast.text_too_long"),  # 70 names of 64 letters
        ("x" * 20000, "broadcast.text_too_long"),
        ("&lt;" * 9000, "broadcast.text_too_long"),
    ],
)
def test_bad_texts_are_refused(text: str, code: str) -> None:
    with pytest.raises(InputError) as caught:
        check_text(text)
    assert caught.value.code == code


def test_good_texts_pass() -> None:
    assert check_text("  <b>Привет</b>, {first_name} &amp; {course}!  ") == (
        "<b>Привет</b>, {first_name} &amp; {course}!"
    )
    assert check_text("x" * 4096) == "x" * 4096
    assert check_text("&lt;" * 4096) == "&lt;" * 4096  # 4096 characters as the reader sees


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "broadcast.buttons_empty"),
        ("just a label", "broadcast.button_format"),
        ("| https://example.com", "broadcast.button_format"),
        ("Site |", "broadcast.button_format"),
        ("Site | example.com", "broadcast.button_url"),
        ("Site | javascript:alert(1)", "broadcast.button_url"),
        ("Site | https://exa mple.com", "broadcast.button_url"),
        ("Site | https://" + "a" * 600, "broadcast.button_url"),
        ("x" * 65 + " | reply", "broadcast.button_label"),
        ("A | reply\nB | reply", "broadcast.two_reply_buttons"),
        ("\n".join(f"B{i} | https://e.com/{i}" for i in range(7)), "broadcast.too_many_buttons"),
    ],
)
def test_bad_buttons_are_refused(text: str, code: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_buttons(text)
    assert caught.value.code == code


def test_buttons_parse() -> None:
    assert parse_buttons("Сайт | https://example.com/a?b=1\n\n  Интересно | REPLY ") == [
        {"label": "Сайт", "url": "https://example.com/a?b=1"},
        {"label": "Интересно", "reply": True},
    ]


def test_the_time_is_read_in_the_schools_zone() -> None:
    assert parse_send_at("2026-03-03 15:00", NOON, ZONE) == NOON + timedelta(hours=3)
    assert parse_send_at("2026-03-03T12:00", NOON, ZONE) == NOON
    for text, code in [
        ("tomorrow", "broadcast.time_format"),
        ("2026-02-30 10:00", "broadcast.time_format"),
        ("2026-03-03 25:00", "broadcast.time_format"),
        ("2026-03-03 11:00", "broadcast.time_past"),
        ("2028-03-03 11:00", "broadcast.time_too_far"),
    ]:
        with pytest.raises(InputError) as caught:
            parse_send_at(text, NOON, ZONE)
        assert caught.value.code == code, text


def test_the_arm_is_sticky_and_splits_evenly() -> None:
    arms = [arm_of(7, lead, True) for lead in range(1, 4001)]
    assert arms == [arm_of(7, lead, True) for lead in range(1, 4001)]
    counts = Counter(arms)
    assert 1850 < counts["a"] < 2150
    # Another broadcast splits the same leads differently; without a split everyone gets A.
    assert arms != [arm_of(8, lead, True) for lead in range(1, 4001)]
    assert {arm_of(7, lead, False) for lead in range(1, 100)} == {"a"}


def _lead(**fields: object) -> Lead:
    lead = store.new_lead(
        store.Profile(user_id=1, chat_id=1, first_name="Ann"),
        source="vk_ads", stage="qualified", position=None, version="python_course@1", at=NOON,
    )  # fmt: skip
    lead.id = 1
    for name, value in fields.items():
        setattr(lead, name, value)
    return lead


def test_the_decision_at_send_time(script: Script) -> None:
    cast = Broadcast(id=1, status="running", text_a="Hi", buttons=[])
    assert decide(_lead(), cast, script, NOON, [], ZONE) == Send()
    # A reply since the launch (a new cycle) does not make the broadcast obsolete.
    assert decide(_lead(cycle=5), cast, script, NOON, [], ZONE) == Send()
    assert decide(_lead(opted_out_at=NOON), cast, script, NOON, [], ZONE) == Cancel("opted_out")
    assert decide(_lead(blocked_at=NOON), cast, script, NOON, [], ZONE) == Cancel("blocked")
    assert decide(_lead(chat_id=None), cast, script, NOON, [], ZONE) == Cancel("forgotten")
    assert decide(None, cast, script, NOON, [], ZONE) == Cancel("forgotten")
    stopped = Broadcast(id=1, status="cancelled", text_a="Hi", buttons=[])
    assert decide(_lead(), stopped, script, NOON, [], ZONE) == Cancel("campaign_removed")
    assert decide(_lead(), None, script, NOON, [], ZONE) == Cancel("campaign_removed")
    # The script's cap (2 a day) and window (10:00–21:00 Moscow) hold.
    capped = decide(_lead(), cast, script, NOON, [NOON - timedelta(hours=h) for h in (1, 2)], ZONE)
    assert isinstance(capped, Postpone) and capped.why == "frequency_cap"
    night = NOON + timedelta(hours=10)  # 22:00 in Moscow
    late = decide(_lead(), cast, script, night, [], ZONE)
    assert isinstance(late, Postpone) and late.why == "quiet_hours"
    assert late.until == datetime(2026, 3, 4, 7, 0, tzinfo=UTC)


async def _leads(session: AsyncSession, n: int) -> list[int]:
    ids = []
    for i in range(n):
        lead = store.new_lead(
            store.Profile(user_id=500 + i, chat_id=500 + i, first_name="Ann"),
            source="vk_ads", stage="new", position="need", version="python_course@1", at=NOON,
        )  # fmt: skip
        session.add(lead)
        await session.flush()
        ids.append(lead.id)
    await session.commit()
    return ids


async def test_recipients_are_written_in_batches_that_resume(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    async with sessions() as session:
        ids = await _leads(session, 5)
        segment = parse_segment("source=vk_ads", script)
        cast = await broadcasts.schedule(session, segment, "Hi", NOON, NOON, 5)
        cast.text_b = "Hi B"
        await session.commit()
        cast_id = cast.id
    # Two batches of two, then "a stop": the next call resumes after the cursor.
    for expected in (2, 2):
        async with sessions() as session:
            written = await write_recipients(session, script, NOON, batch=2)
            await session.commit()
        assert written is not None and written.recipients == expected and written.more
    async with sessions() as session:
        # A lead who opted out after the launch but before its batch is not written.
        late = await session.get(Lead, ids[4])
        assert late is not None
        late.opted_out_at = NOON
        await session.commit()
    async with sessions() as session:
        written = await write_recipients(session, script, NOON, batch=2)
        await session.commit()
    assert written is not None and written.recipients == 0 and not written.more
    async with sessions() as session:
        assert await write_recipients(session, script, NOON, batch=2) is None
        rows = (await session.execute(select(BroadcastRecipient.lead_id, BroadcastRecipient.arm)
                                      .order_by(BroadcastRecipient.lead_id))).all()  # fmt: skip
        assert [lead for lead, _ in rows] == ids[:4]
        assert all(arm == arm_of(cast_id, lead, True) for lead, arm in rows)
        touches = (await session.scalars(select(Touch).order_by(Touch.lead_id))).all()
        assert [(t.lead_id, t.campaign, t.step, t.cycle, t.status) for t in touches] == [
            (lead, f"broadcast:{cast_id}", 1, 0, "planned") for lead in ids[:4]
        ]
        stored = await session.get(Broadcast, cast_id)
        assert stored is not None and stored.status == "running" and stored.recipients == 4


async def test_a_broadcast_waits_for_its_time_and_can_be_cancelled(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    async with sessions() as session:
        await _leads(session, 3)
        segment = parse_segment("all", script)
        later = await broadcasts.schedule(session, segment, "Later", NOON + timedelta(hours=2),
                                          NOON, 3)  # fmt: skip
        now = await broadcasts.schedule(session, segment, "Now", NOON, NOON, 3)
        await session.commit()
        later_id, now_id = later.id, now.id
    async with sessions() as session:
        first = await write_recipients(session, script, NOON)
        await session.commit()
        assert first is not None and first.broadcast_id == now_id
        assert await write_recipients(session, script, NOON) is None
        cast = await session.get(Broadcast, now_id)
        assert cast is not None
        assert await broadcasts.cancel(session, cast) == 3
        await session.commit()
        statuses = await session.scalars(select(Touch.reason).where(Touch.status == "cancelled"))
        assert list(statuses) == ["campaign_removed"] * 3
    async with sessions() as session:
        written = await write_recipients(session, script, NOON + timedelta(hours=2))
        assert written is not None and written.broadcast_id == later_id


async def test_the_report_counts_replies_and_moves_within_the_window(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    async with sessions() as session:
        ids = await _leads(session, 4)
        cast = await broadcasts.schedule(session, parse_segment("all", script), "Hi", NOON,
                                         NOON, 4)  # fmt: skip
        await session.commit()
        await write_recipients(session, script, NOON)
        await session.commit()
        touches = {t.lead_id: t for t in await session.scalars(select(Touch))}
        for lead_id in ids[:3]:
            touches[lead_id].status, touches[lead_id].sent_at = "sent", NOON
        touches[ids[3]].status, touches[ids[3]].reason = "failed", "blocked"
        leads = {lead.id: lead for lead in await session.scalars(select(Lead))}
        # Lead 0 wrote back a day later and moved on; lead 1 wrote back after the window;
        # lead 2 tapped the reply button.
        leads[ids[0]].last_inbound_at = NOON + timedelta(days=1)
        store.log_stage(session, leads[ids[0]], "engaged", "answer", NOON + timedelta(days=1))
        leads[ids[1]].last_inbound_at = NOON + timedelta(days=9)
        store.log_stage(session, leads[ids[1]], "engaged", "answer", NOON + timedelta(days=9))
        # ...but it answered a question on day 3: a reply inside the window all the same.
        store.add_answer(session, leads[ids[1]], "timing", "now", "now", 0,
                         NOON + timedelta(days=3))  # fmt: skip
        # Lead 3 was blocked: its answers count for nothing (it got no broadcast).
        store.add_answer(session, leads[ids[3]], "need", "career", "career", 0,
                         NOON + timedelta(days=1))  # fmt: skip
        # Lead 2 tapped the reply button and answered a question on day 2, then wrote again
        # after the window: the answer inside the window counts once.
        assert await broadcasts.record_quick_reply(session, cast.id, ids[2], NOON)
        store.add_answer(session, leads[ids[2]], "need", "career", "career", 0,
                         NOON + timedelta(days=2))  # fmt: skip
        leads[ids[2]].last_inbound_at = NOON + timedelta(days=9)
        assert not await broadcasts.record_quick_reply(session, cast.id + 1, ids[2], NOON)
        await session.commit()
        report = await broadcast_report(session, cast, script, NOON + timedelta(days=10))
    [arm] = report.arms
    assert (arm.recipients, arm.delivered, arm.blocked, arm.replied, arm.converted) == (
        4, 3, 1, 3, 1
    )  # fmt: skip
    assert report.state == "finished"
    assert (report.progress.sent, report.progress.blocked, report.progress.planned) == (3, 1, 0)
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(BroadcastRecipient)) == 4
