"""The campaigns' effect for the owner's /campaigns: per campaign and step, what was planned,
sent, postponed, cancelled (and why), failed or left unknown, and what the leads did next."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any

from sqlalchemy import and_, case, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import StageEvent, Touch
from funnel.script.schema import Script

# A stage move this soon after a touch counts as the touch's effect.
ADVANCE_WINDOW = timedelta(days=7)
TELEGRAM_LIMIT = 4096
REASONS_RU = {
    "replied": "ответил",
    "stage_changed": "сменил этап",
    "opted_out": "отписался",
    "blocked": "заблокировал",
    "forgotten": "удалил данные",
    "not_eligible": "не подходит",
    "campaign_removed": "шаг удалён",
}


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

    def share(self, part: int) -> str:
        return f"{100 * part / self.sent:.0f}%" if self.sent else "—"


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


# -- formatting ---------------------------------------------------------------------------


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}д" if days else "", f"{hours}ч" if hours else "",
             f"{minutes}м" if minutes else ""]  # fmt: skip
    return " ".join(p for p in parts if p) or "0м"


def _cancelled(step: StepStats) -> str:
    if not step.cancelled:
        return "0"
    reasons = ", ".join(
        f"{REASONS_RU.get(reason, reason)} {n}"
        for reason, n in sorted(step.cancelled.items(), key=lambda item: -item[1])
    )
    return f"{step.cancelled_total} ({reasons})"


def _step_line(step: StepStats) -> str:
    waiting = step.planned + step.sending
    return (
        f"Шаг {step.step} (через {_duration(step.after)}): всего {step.total} · "
        f"ждут {waiting} · отправлено {step.sent} · отложено {step.postponed} · "
        f"отменено {_cancelled(step)} · ошибки {step.failed} · неизвестно {step.unknown} · "
        f"ответили за сутки {step.replied} ({step.share(step.replied)}) · "
        f"прошли дальше {step.advanced} ({step.share(step.advanced)})"
    )


def _lines(report: CampaignReport, html: bool) -> list[str]:
    def esc(text: str) -> str:
        return escape(text, quote=False) if html else text

    def bold(text: str) -> str:
        return f"<b>{text}</b>" if html else text

    when = report.now.strftime("%Y-%m-%d %H:%M UTC")
    lines = [bold("Кампании") + f" на {when}"]
    if report.empty:
        lines.append("Касаний ещё не было.")
        return lines
    window = report.advance_window.days
    lines.append(f"«Прошли дальше» — смена этапа в течение {window} дн. после отправки.")
    for campaign in report.campaigns:
        kind = f" [{campaign.kind}]" if campaign.kind else ""
        gone = " (нет в сценарии)" if not campaign.in_script else ""
        lines.append("")
        lines.append(bold(esc(campaign.title)) + esc(f"{kind}{gone}"))
        lines.extend(esc(_step_line(step)) for step in campaign.steps)
    return lines


def _fit(lines: list[str], limit: int) -> str:
    """Joins lines, dropping the tail (whole lines, never a tag) to stay within `limit`."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > limit - 40:
            break
        kept.append(line)
        size += len(line) + 1
    kept.append(f"… и ещё строк: {len(lines) - len(kept)}")
    return "\n".join(kept)


def format_campaign_report_html(report: CampaignReport) -> str:
    """Telegram HTML, at most 4096 characters."""
    return _fit(_lines(report, html=True), TELEGRAM_LIMIT)


def format_campaign_report_text(report: CampaignReport) -> str:
    """Plain text for the terminal and the demo."""
    return "\n".join(_lines(report, html=False))
