"""The campaigns' effect as words: Telegram HTML for /campaigns, plain text for the terminal
and the demo. Campaign titles and cancel reasons are escaped."""

from __future__ import annotations

from datetime import timedelta
from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT, lines_that_fit
from funnel.reports.campaign_effect import CampaignReport, StepStats

REASONS_RU = {
    "replied": "ответил",
    "stage_changed": "сменил этап",
    "opted_out": "отписался",
    "blocked": "заблокировал",
    "forgotten": "удалил данные",
    "not_eligible": "не подходит",
    "campaign_removed": "шаг удалён",
}


def _share(step: StepStats, part: int) -> str:
    return f"{100 * part / step.sent:.0f}%" if step.sent else "—"


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
        f"ответили за сутки {step.replied} ({_share(step, step.replied)}) · "
        f"прошли дальше {step.advanced} ({_share(step, step.advanced)})"
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


def format_campaign_report_html(report: CampaignReport) -> str:
    """Telegram HTML, at most 4096 characters: the tail is dropped whole lines at a time."""
    lines = _lines(report, html=True)
    return "\n".join(lines_that_fit(lines, TELEGRAM_LIMIT, lambda n: f"… и ещё строк: {n}"))


def format_campaign_report_text(report: CampaignReport) -> str:
    """Plain text for the terminal and the demo."""
    return "\n".join(_lines(report, html=False))
