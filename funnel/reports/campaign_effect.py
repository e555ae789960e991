"""The campaigns' effect for the owner's /campaigns, as data: per campaign and step, what was
planned, sent, postponed, cancelled (and why), failed or left unknown, and what the leads did
next (handlers/views/campaigns.py renders it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Lead, StageEvent, Touch
from funnel.script.schema import Script

# A stage move this soon after a touch counts as the touch's effect.
ADVANCE_WINDOW = timedelta(days=7)


@dataclass
class StepStats:
    step: int
    after: timedelta  # from the start of the cycle
    total: int = 0
    planned: int = 0  # waiting to be sent
    sending: int = 0
    sent: int = 0
    postponed: int = 0  # touches postponed at least once (quiet hours, cap, flood control)
    cancelled: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    unknown: int = 0
    replied: int = 0  # sent and answered within a day
    advanced: int = 0  # sent and moved on in the funnel within ADVANCE_WINDOW

    @property
    def cancelled_total(self) -> int:
        return sum(self.cancelled.values())


@dataclass
class CampaignStats:
    id: str
    kind: str
    title: str
    steps: list[StepStats]
    in_script: bool = True


@dataclass
class CampaignReport:
    now: datetime
    campaigns: list[CampaignStats]
    advance_window: timedelta = ADVANCE_WINDOW

    @property
    def empty(self) -> bool:
        return not any(s.total for c in self.campaigns for s in c.steps)


def _plus_window(session: AsyncSession, column: Any) -> Any:
    """`column + ADVANCE_WINDOW` in SQL for the session's dialect."""
    if session.get_bind().dialect.name == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS.ffffff'; datetime() answers in the same order.
        return func.datetime(column, f"+{int(ADVANCE_WINDOW.total_seconds())} seconds")
    return column + literal(ADVANCE_WINDOW)


def _real_lead() -> Any:
    """Touches of test leads (/test_funnel) are in no report."""
    return ~exists().where(Lead.id == Touch.lead_id, Lead.is_test.is_(True))


async def campaign_report(session: AsyncSession, script: Script, now: datetime) -> CampaignReport:
    """Counts from the touches table (one grouped scan) and the stage log."""
    postponed = func.sum(case((Touch.postponed > 0, 1), else_=0))
    grouped = select(
        Touch.campaign,
        Touch.step,
        Touch.status,
        Touch.reason,
        func.count(),
        postponed,
        func.count(Touch.replied_at),
    ).group_by(Touch.campaign, Touch.step, Touch.status, Touch.reason)
    grouped = grouped.where(_real_lead())
    exit_stages = [s.id for s in script.exit_stages]
    moved_on = exists().where(
        StageEvent.lead_id == Touch.lead_id,
        StageEvent.at > Touch.sent_at,
        StageEvent.at <= _plus_window(session, Touch.sent_at),
        StageEvent.to_stage.not_in(exit_stages),
    )
    advanced_query = (
        select(Touch.campaign, Touch.step, func.count())
        .where(and_(Touch.status == "sent", Touch.sent_at.is_not(None)), moved_on)
        .group_by(Touch.campaign, Touch.step)
    )
    advanced_query = advanced_query.where(_real_lead())

    by_campaign: dict[str, CampaignStats] = {}
    for campaign in script.campaigns:
        steps = [StepStats(n, after) for n, after in enumerate(campaign.offsets(), 1)]
        by_campaign[campaign.id] = CampaignStats(campaign.id, campaign.kind, campaign.title, steps)

    def step_of(campaign_id: str, step: int) -> StepStats:
        stats = by_campaign.get(campaign_id)
        if stats is None:
            stats = CampaignStats(campaign_id, "", campaign_id, [], in_script=False)
            by_campaign[campaign_id] = stats
        for existing in stats.steps:
            if existing.step == step:
                return existing
        added = StepStats(step, timedelta(0))
        stats.steps.append(added)
        stats.steps.sort(key=lambda s: s.step)
        return added

    for campaign_id, step, status, reason, count, late, replied in (
        await session.execute(grouped)
    ).all():
        stats = step_of(campaign_id, step)
        stats.total += count
        stats.postponed += int(late or 0)
        if status == "cancelled":
            key = reason or "other"
            stats.cancelled[key] = stats.cancelled.get(key, 0) + count
        elif status in ("planned", "sending", "sent", "failed", "unknown"):
            setattr(stats, status, getattr(stats, status) + count)
        if status == "sent":
            stats.replied += int(replied or 0)
    for campaign_id, step, count in (await session.execute(advanced_query)).all():
        step_of(campaign_id, step).advanced += count
    return CampaignReport(now, list(by_campaign.values()))
