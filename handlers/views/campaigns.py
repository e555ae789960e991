"""The campaigns' effect as words, in the school's language: Telegram HTML for /campaigns,
plain text for the terminal and the demo. Campaign titles and cancel reasons are escaped."""

from __future__ import annotations

from datetime import timedelta
from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT, lines_that_fit
from funnel.reports.arithmetic import percent
from funnel.reports.campaign_effect import CampaignReport, StepStats
from handlers.i18n import N_, t, tn
from handlers.views.experiments import format_points
from handlers.views.numbers import format_number, format_percent

# Why touches were cancelled, as keys of the catalog.
REASONS = {
    "replied": N_("campaigns.reason.replied"),
    "stage_changed": N_("campaigns.reason.stage_changed"),
    "opted_out": N_("campaigns.reason.opted_out"),
    "blocked": N_("campaigns.reason.blocked"),
    "forgotten": N_("campaigns.reason.forgotten"),
    "not_eligible": N_("campaigns.reason.not_eligible"),
    "campaign_removed": N_("campaigns.reason.campaign_removed"),
    "manager_owns": N_("campaigns.reason.manager_owns"),
}


def _reason(reason: str, lang: str) -> str:
    """Why touches were cancelled, in words; an unknown reason is shown as it is stored."""
    key = REASONS.get(reason)
    return t(key, lang=lang) if key is not None else reason


def _share(step: StepStats, part: int, lang: str) -> str:
    return format_percent(percent(part, step.sent), lang=lang)


def _duration(delta: timedelta, lang: str) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        tn("campaigns.days", days, lang=lang) if days else "",
        tn("campaigns.hours", hours, lang=lang) if hours else "",
        tn("campaigns.minutes", minutes, lang=lang) if minutes else "",
    ]
    return " ".join(p for p in parts if p) or tn("campaigns.minutes", 0, lang=lang)


def _cancelled(step: StepStats, lang: str) -> str:
    if not step.cancelled:
        return format_number(0, lang=lang)
    reasons = ", ".join(
        f"{_reason(reason, lang)} {format_number(n, lang=lang)}"
        for reason, n in sorted(step.cancelled.items(), key=lambda item: -item[1])
    )
    return f"{format_number(step.cancelled_total, lang=lang)} ({reasons})"


def _step_line(step: StepStats, lang: str) -> str:
    return t(
        "campaigns.step",
        lang=lang,
        step=step.step,
        after=_duration(step.after, lang),
        total=format_number(step.total, lang=lang),
        waiting=format_number(step.planned + step.sending, lang=lang),
        sent=format_number(step.sent, lang=lang),
        postponed=format_number(step.postponed, lang=lang),
        cancelled=_cancelled(step, lang),
        failed=format_number(step.failed, lang=lang),
        unknown=format_number(step.unknown, lang=lang),
        replied=format_number(step.replied, lang=lang),
        replied_share=_share(step, step.replied, lang),
        advanced=format_number(step.advanced, lang=lang),
        advanced_share=_share(step, step.advanced, lang),
    )


def _lift_line(step: StepStats, lang: str) -> str | None:
    """The holdout's comparison: "12 came back, about 4 of whom would have anyway"."""
    if not step.held_out:
        return None
    lift = step.lift
    if lift is None:
        return "  " + tn("campaigns.holdout_only", step.held_out, lang=lang)
    interval = lift.interval
    return "  " + t(
        "campaigns.lift",
        lang=lang,
        held_out=format_number(lift.held_out),
        held_out_advanced=format_number(lift.held_out_advanced),
        holdout_rate=format_percent(100 * lift.holdout_rate),
        advanced=format_number(lift.advanced),
        anyway=format_number(lift.anyway),
        lift=format_points(lift.difference),
        low=format_points(interval.low),
        high=format_points(interval.high),
    )


def _lines(report: CampaignReport, html: bool, lang: str) -> list[str]:
    def esc(text: str) -> str:
        return escape(text, quote=False) if html else text

    def bold(text: str) -> str:
        return f"<b>{text}</b>" if html else text

    when = report.now.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        bold(t("campaigns.title", lang=lang)) + " " + t("campaigns.as_of", lang=lang, when=when)
    ]
    if report.empty:
        lines.append(t("campaigns.empty", lang=lang))
        return lines
    window = report.advance_window.days
    lines.append(tn("campaigns.advanced", window, lang=lang))
    lines.append(t("campaigns.legend.postponed", lang=lang))
    for campaign in report.campaigns:
        kind = f" [{campaign.kind}]" if campaign.kind else ""
        gone = " " + t("campaigns.not_in_script", lang=lang) if not campaign.in_script else ""
        lines.append("")
        lines.append(bold(esc(campaign.title)) + esc(f"{kind}{gone}"))
        for step in campaign.steps:
            lines.append(esc(_step_line(step, lang)))
            lift = _lift_line(step, lang)
            if lift is not None:
                lines.append(esc(lift))
    return lines


def format_campaign_report_html(report: CampaignReport, *, lang: str) -> str:
    """Telegram HTML in `lang`, at most 4096 characters: the tail is dropped whole lines at a
    time."""
    lines = _lines(report, html=True, lang=lang)

    def more(n: int) -> str:
        return tn("campaigns.more_lines", n, lang=lang)

    return "\n".join(lines_that_fit(lines, TELEGRAM_LIMIT, more))


def format_campaign_report_text(report: CampaignReport, *, lang: str) -> str:
    """Plain text in `lang` for the terminal and the demo."""
    return "\n".join(_lines(report, html=False, lang=lang))
