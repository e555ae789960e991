"""The managers' report as words, in the school's language: Telegram HTML for /managers (one
message, short lines for a phone; managers who do not fit are counted in a closing line) and
plain text for `python -m bot stats`. Managers' names are cleaned and escaped."""

from __future__ import annotations

from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT, plain_name
from funnel.reports.managers import ManagerRow, ManagersReport
from handlers.i18n import t, tn
from handlers.views.numbers import (
    format_duration,
    format_money,
    format_percent,
    plain,
)

# Room left for the closing "…and N more" line.
RESERVE = 120


def _revenue(row: ManagerRow, currency: str, lang: str) -> str:
    parts = [format_money(row.revenue, currency, lang=lang)]
    parts += [format_money(amount, cur, lang=lang) for cur, amount in row.other_revenue]
    return " + ".join(parts)


def _period(report: ManagersReport, lang: str) -> str:
    if report.period.is_all:
        return t("managers.period.all", lang=lang)
    return report.period.label


def _lines(row: ManagerRow, currency: str, lang: str) -> list[str]:
    median = format_duration(row.median_take_seconds, lang=lang)
    return [
        t("managers.taken", lang=lang, taken=row.taken, median=median),
        t(
            "managers.outcome",
            lang=lang,
            booked=row.booked,
            paid=row.paid,
            conversion=format_percent(row.conversion, lang=lang),
        ),
        t("managers.revenue", lang=lang, revenue=_revenue(row, currency, lang)),
    ]


def _name(row: ManagerRow, lang: str) -> str:
    return plain_name(row.name, 40) or t("manager.default_name", lang=lang)


def format_managers_html(report: ManagersReport, *, lang: str) -> str:
    title = t("managers.title", lang=lang, period=escape(_period(report, lang)))
    if not report.rows:
        return f"{title}\n{t('managers.none', lang=lang)}"
    total = [f"<b>{t('managers.everyone', lang=lang)}</b>"]
    total += [escape(line) for line in _lines(report.total, report.currency, lang)]
    text = f"{title}\n\n" + "\n".join(total)
    for shown, row in enumerate(report.rows):
        block = [f"<b>{shown + 1}. {escape(_name(row, lang))}</b>"]
        block += [escape(line) for line in _lines(row, report.currency, lang)]
        candidate = text + "\n\n" + "\n".join(block)
        if len(candidate) > TELEGRAM_LIMIT - RESERVE:
            left = len(report.rows) - shown
            return text + "\n\n" + escape(tn("managers.more", left, lang=lang))
        text = candidate
    return text + "\n\n" + escape(t("managers.explained", lang=lang))


def format_managers_text(report: ManagersReport, *, lang: str) -> str:
    """The same figures for a terminal: no markup, no limit."""
    lines = [t("managers.title_plain", lang=lang, period=_period(report, lang))]
    if not report.rows:
        return "\n".join([*lines, t("managers.none", lang=lang)])
    lines += ["", t("managers.everyone", lang=lang)]
    lines += _lines(report.total, report.currency, lang)
    for shown, row in enumerate(report.rows):
        lines += ["", f"{shown + 1}. {_name(row, lang)}"]
        lines += _lines(row, report.currency, lang)
    lines += ["", t("managers.explained", lang=lang)]
    return plain("\n".join(lines))
