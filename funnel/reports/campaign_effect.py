"""The campaigns' effect for the owner's /campaigns, as data: per campaign and step, what was
planned, sent, postponed, cancelled (and why), failed or left unknown, and what the leads did
next; with a holdout, the lift: how many more of the messaged moved on than of those held out
(handlers/views/campaigns.py renders it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Lead, StageEvent, Touch
from funnel.experiments import stats as ab_stats
from funnel.experiments.holdout import HELD_OUT
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
    held_out: int = 0  # due to a lead of the holdout: recorded when it would have been sent
    held_out_advanced: int = 0  # of those, moved on within ADVANCE_WINDOW anyway

    @property
    def cancelled_total(self) -> int:
        return sum(self.cancelled.values())

    @property
    def lift(self) -> Lift | None:
        """Messaged against held out, once both groups have someone."""
        if not self.sent or not self.held_out:
            return None
        return Lift(self.sent, self.advanced, self.held_out, self.held_out_advanced)


@dataclass(frozen=True)
class Lift:
    """What the messages did beyond what would have happened anyway: the rate of moving on of
    the messaged minus that of the holdout, with Newcombe's 95% interval."""

    sent: int
    advanced: int
    held_out: int
    held_out_advanced: int

    @property
    def messaged_rate(self) -> float:
        return self.advanced / self.sent

    @property
    def holdout_rate(self) -> float:
        return self.held_out_advanced / self.held_out

    @property
    def difference(self) -> float:
        return self.messaged_rate - self.holdout_rate

    @property
    def interval(self) -> ab_stats.Interval:
        return ab_stats.newcombe(self.held_out_advanced, self.held_out, self.advanced, self.sent)

    @property
    def anyway(self) -> int:
        """Of the messaged who moved on, about how many would have without the message."""
        return min(self.advanced, round(self.sent * self.holdout_rate))


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


# Broadcasts' touches ("broadcast:<id>") have their own report: /broadcasts.
BROADCASTS = "broadcast:"


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
    # A held-out touch has no send time: its due_at is when it would have been sent.
    since = func.coalesce(Touch.sent_at, Touch.due_at)
    moved_on = exists().where(
        StageEvent.lead_id == Touch.lead_id,
        StageEvent.at > since,
        StageEvent.at <= _plus_window(session, since),
        StageEvent.to_stage.not_in(exit_stages),
    )
    measured = (Touch.status == "sent") & Touch.sent_at.is_not(None)
    advanced_query = (
        select(Touch.campaign, Touch.step, Touch.status, func.count())
        .where(measured | (Touch.status == HELD_OUT), moved_on)
        .group_by(Touch.campaign, Touch.step, Touch.status)
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
        if campaign_id.startswith(BROADCASTS):
            continue
        stats = step_of(campaign_id, step)
        stats.total += count
        stats.postponed += int(late or 0)
        if status == "cancelled":
            key = reason or "other"
            stats.cancelled[key] = stats.cancelled.get(key, 0) + count
        elif status in ("planned", "sending", "sent", "failed", "unknown", HELD_OUT):
            setattr(stats, status, getattr(stats, status) + count)
        if status == "sent":
            stats.replied += int(replied or 0)
    for campaign_id, step, status, count in (await session.execute(advanced_query)).all():
        if campaign_id.startswith(BROADCASTS):
            continue
        if status == HELD_OUT:
            step_of(campaign_id, step).held_out_advanced += count
        else:
            step_of(campaign_id, step).advanced += count
    return CampaignReport(now, list(by_campaign.values()))
