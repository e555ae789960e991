"""The /campaigns report: counts per campaign and step, and its Telegram-safe formatting."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core.models import StageEvent, Touch
from funnel.core.telegram_text import check_telegram_html
from funnel.reports.campaign_effect import (
    CampaignReport,
    CampaignStats,
    StepStats,
    campaign_report,
)
from handlers.i18n import LANGUAGES, t
from handlers.views.campaigns import format_campaign_report_html, format_campaign_report_text
from tests.test_campaigns import NOON, SCRIPT, add_lead


async def add_touch(
    sessions: async_sessionmaker[AsyncSession], lead_id: int, step: int = 1, **fields: Any
) -> None:
    values: dict[str, Any] = {
        "lead_id": lead_id,
        "campaign": "nurture_dialogue",
        "step": step,
        "cycle": 1,
        "due_at": NOON,
        "created_at": NOON,
    }
    values.update(fields)
    async with sessions() as session:
        session.add(Touch(**values))
        await session.commit()


async def add_event(
    sessions: async_sessionmaker[AsyncSession], lead_id: int, to_stage: str, at: datetime
) -> None:
    async with sessions() as session:
        session.add(StageEvent(lead_id=lead_id, from_stage="engaged", to_stage=to_stage, at=at,
                               cause="answered"))  # fmt: skip
        await session.commit()


async def test_counts_per_campaign_and_step(sessions: Any) -> None:
    sent_at = NOON + timedelta(hours=1)
    leads = [await add_lead(sessions) for _ in range(8)]
    await add_touch(sessions, leads[0], status="sent", sent_at=sent_at, replied_at=sent_at)
    await add_touch(sessions, leads[1], status="sent", sent_at=sent_at, postponed=2)
    await add_touch(sessions, leads[2], status="sent", sent_at=sent_at)
    await add_touch(sessions, leads[3], status="cancelled", reason="replied")
    await add_touch(sessions, leads[4], status="cancelled", reason="replied")
    await add_touch(sessions, leads[5], status="cancelled", reason="opted_out")
    await add_touch(sessions, leads[6], status="failed", reason="blocked")
    await add_touch(sessions, leads[7], status="unknown", sent_at=sent_at)
    await add_touch(sessions, leads[0], step=2, status="planned", postponed=1)
    # Moved on within the window (counts), too late (does not), into the exit (does not).
    await add_event(sessions, leads[0], "qualified", sent_at + timedelta(days=2))
    await add_event(sessions, leads[1], "qualified", sent_at + timedelta(days=8))
    await add_event(sessions, leads[2], "disqualified", sent_at + timedelta(hours=2))
    async with sessions() as session:
        report = await campaign_report(session, SCRIPT, NOON + timedelta(days=10))
    dialogue = next(c for c in report.campaigns if c.id == "nurture_dialogue")
    first, second = dialogue.steps
    assert (first.total, first.sent, first.failed, first.unknown) == (8, 3, 1, 1)
    assert first.cancelled == {"replied": 2, "opted_out": 1}
    assert (first.postponed, first.replied, first.advanced) == (1, 1, 1)
    assert (second.total, second.planned, second.postponed) == (1, 1, 1)
    assert second.after == timedelta(hours=24)
    assert [c.id for c in report.campaigns] == [c.id for c in SCRIPT.campaigns]

    html = format_campaign_report_html(report, lang="ru")
    assert check_telegram_html(html) is None
    assert "Stopped &lt;answering&gt;" in html
    assert "ответил 2" in html
    text = format_campaign_report_text(report, lang="ru")
    assert "Stopped <answering>" in text
    assert "отправлено 3" in text
    english = format_campaign_report_html(report, lang="en")
    assert check_telegram_html(english) is None
    assert "replied 2" in english and "sent 3" in english and "after 1d" in english


async def test_an_empty_report_says_so(sessions: Any) -> None:
    async with sessions() as session:
        report = await campaign_report(session, SCRIPT, NOON)
    assert report.empty
    assert t("campaigns.empty", lang="ru") in format_campaign_report_html(report, lang="ru")
    assert "No messages have been sent yet." in format_campaign_report_html(report, lang="en")


async def test_touches_of_a_removed_campaign_are_still_shown(sessions: Any) -> None:
    lead_id = await add_lead(sessions)
    await add_touch(sessions, lead_id, campaign="old_campaign", status="sent", sent_at=NOON)
    async with sessions() as session:
        report = await campaign_report(session, SCRIPT, NOON)
    old = next(c for c in report.campaigns if c.id == "old_campaign")
    assert (old.in_script, old.steps[0].sent) == (False, 1)


titles = st.text(alphabet=st.sampled_from("ab<>&\"' Жж"), min_size=1, max_size=64)


@settings(max_examples=50, deadline=None)
@given(
    names=st.lists(titles, min_size=1, max_size=40),
    steps=st.integers(min_value=1, max_value=6),
    sent=st.integers(min_value=0, max_value=10**6),
)
def test_property_html_is_valid_and_fits_telegram(names: list[str], steps: int, sent: int) -> None:
    report = CampaignReport(
        NOON,
        [
            CampaignStats(
                f"c{i}",
                "nurture",
                name,
                [
                    StepStats(
                        n,
                        timedelta(days=n),
                        total=sent + 3,
                        sent=sent,
                        cancelled={"replied": 2, "x<y": 1},
                        replied=sent // 2,
                    )
                    for n in range(1, steps + 1)
                ],
            )
            for i, name in enumerate(names)
        ],
    )
    for lang in LANGUAGES:
        html = format_campaign_report_html(report, lang=lang)
        assert len(html) <= 4096
        assert check_telegram_html(html) is None
