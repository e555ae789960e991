"""The funnel report as words: Telegram HTML for the owner's phone (/stats, /sources) and a
plain table for the terminal. Every name that came from marketers or users is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT, fit_to_telegram, lines_that_fit
from funnel.reports.figures import FunnelReport, Segment, SourceMoney, StageRow
from handlers.views.numbers import (
    NBSP,
    format_duration,
    format_money,
    format_number,
    format_percent,
)

__all__ = ["format_report_html", "format_report_text", "format_sources_html"]

# Sources listed in /stats before "…and N more": the full list is /sources.
STATS_SOURCES = 8
# Monospace columns that fit a phone screen without wrapping (about 34 characters).
TITLE_WIDTH = 15
TEMPERATURES = {"hot": "🔥 горячие", "warm": "🌤 тёплые", "cold": "❄️ холодные", None: "без оценки"}


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _period_words(report: FunnelReport) -> str:
    period = report.period
    if period.is_all:
        return "за всё время"
    if period.label.endswith("d") and period.label[:-1].isdigit():
        return f"за {period.label[:-1]} дн."
    return period.label.replace("..", " — ")


def _stage_table(stages: Sequence[StageRow]) -> list[str]:
    lines = [f"{'Этап':<{TITLE_WIDTH}} {'Лиды':>7} {'Шаг':>4} {'Всего':>5}"]
    for stage in stages:
        step = format_percent(stage.conversion_from_previous) if stage.dropped is not None else ""
        lines.append(
            f"{_cut(stage.title, TITLE_WIDTH):<{TITLE_WIDTH}} {format_number(stage.reached):>7} "
            f"{step:>4} {format_percent(stage.conversion_from_first):>5}"
        )
    return lines


def format_report_html(report: FunnelReport) -> str:
    """The /stats message: at most 4096 characters, whatever the number of sources."""
    totals = report.totals
    header = [f"<b>📊 Воронка {escape(_period_words(report))}</b>"]
    if report.source is not None:
        header.append(f"Источник: <code>{escape(report.source)}</code>")
    header.append(
        f"Лидов: <b>{format_number(totals.leads)}</b> · оплатили: "
        f"<b>{format_number(totals.customers)}</b> ({format_percent(totals.overall_conversion)})"
    )
    if not totals.leads:
        header.append("За этот период лидов нет.")
        return "\n".join(header)
    sections = [
        "\n".join(header),
        "<pre>" + escape("\n".join(_stage_table(report.stages))) + "</pre>",
    ]
    timed = [s for s in report.stages if s.median_seconds_from_previous is not None]
    if timed:
        lines = ["<b>⏱ Время до этапа</b> (медиана · среднее)"]
        lines += [
            f"→ {escape(_cut(s.title, 28))}: {format_duration(s.median_seconds_from_previous)} · "
            f"{format_duration(s.mean_seconds_from_previous)}"
            for s in timed
        ]
        sections.append("\n".join(lines))
    exits = [e for e in report.exited if e.leads]
    if exits:
        sections.append(
            "\n".join(
                f"🚪 {escape(e.title)}: {format_number(e.leads)} ({format_percent(e.share)})"
                for e in exits
            )
        )
    sections.append(_money_html(report))
    if report.questions:
        lines = ["<b>❓ Вопросы</b> (видели → ответили)"]
        lines += [
            f"{q.number}. {escape(_cut(q.title, 24))}: {format_number(q.saw)} → "
            f"{format_number(q.answered)} ({format_percent(q.answer_rate)})"
            for q in report.questions
        ]
        sections.append("\n".join(lines))
    churn = [c for c in report.churn if c.churned]
    if churn:
        lines = [f"<b>🔕 Отписались или заблокировали</b>: {format_percent(totals.churn_share)}"]
        lines += [
            f"{escape(_cut(c.title, 24))}: {format_number(c.churned)} из "
            f"{format_number(c.leads)} ({format_percent(c.share)})"
            for c in churn
        ]
        sections.append("\n".join(lines))
    for title, segments, names in (
        ("🌡 По температуре", report.by_temperature, TEMPERATURES),
        ("🧾 По версии сценария", report.by_version, {}),
    ):
        if len(segments) > 1:
            sections.append(_segments_html(title, segments, names))
    used = len(fit_to_telegram(*sections))
    if report.source is None and report.by_source:
        sections.append(_sources_section(report, TELEGRAM_LIMIT - used - 2))
    return fit_to_telegram(*sections)


def _money_html(report: FunnelReport) -> str:
    money = report.money
    cur = money.currency
    lines = [
        f"<b>💰 Выручка</b>: {format_money(money.revenue, cur)} · покупок "
        f"{format_number(money.purchases)}",
        f"Средний чек: {format_money(money.average_check, cur)} · на лида: "
        f"{format_money(money.revenue_per_lead, cur)}",
    ]
    if money.median_seconds_to_first_purchase is not None:
        lines.append(
            f"До покупки (медиана): {format_duration(money.median_seconds_to_first_purchase)}"
        )
    if money.spend is not None:
        lines.append(
            f"Реклама: {format_money(money.spend, cur)}"
            f" · CPL {format_money(money.cost_per_lead, cur)}"
            f" · CAC {format_money(money.cac, cur)}"
            f" · ROMI {format_percent(money.romi)}"
        )
    for currency, amount in money.other_revenue.items():
        lines.append(f"Ещё выручка: {escape(format_money(amount, currency))} (не сложена)")
    return "\n".join(lines)


def _segments_html(title: str, segments: Sequence[Segment], names: dict[str | None, str]) -> str:
    lines = [f"<b>{title}</b>"]
    for segment in segments[:6]:
        name = names.get(segment.key) or segment.key or "—"
        lines.append(
            f"{escape(_cut(name, 24))}: {format_number(segment.leads)} → "
            f"{format_percent(segment.overall_conversion)}"
        )
    if len(segments) > 6:
        lines.append(f"…и ещё {len(segments) - 6}")
    return "\n".join(lines)


def _sources_section(report: FunnelReport, budget: int) -> str:
    head = "<b>📣 Источники</b> (лиды → оплатили) · все: /sources"
    lines = [
        f"<code>{escape(_cut(s.key or '—', 20))}</code>: {format_number(s.leads)} → "
        f"{format_percent(s.overall_conversion)}"
        for s in report.by_source
    ]
    kept = lines_that_fit(
        lines, budget - len(head) - 1, lambda n: f"…и ещё {n}", cap=STATS_SOURCES
    )
    return "\n".join([head, *kept])


def _source_line(s: SourceMoney, currency: str) -> str:
    parts = [
        f"<b>{escape(_cut(s.source or '—', 32))}</b>: {format_number(s.leads)} лид.",
        f"квал. {format_number(s.qualified)}",
        f"оплат. {format_number(s.customers)} ({format_percent(s.conversion)})",
        format_money(s.revenue, currency),
    ]
    if s.spend is not None:
        parts.append(f"CAC {format_money(s.cac, currency)}")
    return " · ".join(parts)


def format_sources_html(report: FunnelReport) -> str:
    """The /sources message: one line per source, best first, within Telegram's limit."""
    header = f"<b>📣 Источники {escape(_period_words(report))}</b>"
    sources = report.money.by_source
    if not sources:
        return f"{header}\nЛидов нет."
    lines = [_source_line(s, report.money.currency) for s in sources]
    kept = lines_that_fit(lines, TELEGRAM_LIMIT - len(header) - 1, lambda n: f"…и ещё {n} источн.")
    return "\n".join([header, *kept])


def format_report_text(report: FunnelReport) -> str:
    """The terminal version: complete (no caps), in aligned columns."""
    out: list[str] = []
    totals = report.totals
    source = f", source {report.source}" if report.source is not None else ""
    out.append(f"Funnel report, period {report.period.label}{source}")
    out.append(
        f"Leads: {totals.leads}, customers: {totals.customers}, overall conversion "
        f"{format_percent(totals.overall_conversion)}, exited {totals.exited}"
    )
    out.append("")
    width = max([len("Stage"), *(len(s.title) for s in report.stages)])
    out.append(
        f"{'Stage':<{width}}  {'Reached':>8}  {'From prev':>9}  {'From first':>10}  "
        f"{'Dropped':>8}  {'Median':>8}  {'Mean':>8}"
    )
    for s in report.stages:
        out.append(
            f"{s.title:<{width}}  {s.reached:>8}  {format_percent(s.conversion_from_previous):>9}"
            f"  {format_percent(s.conversion_from_first):>10}  "
            f"{'' if s.dropped is None else s.dropped:>8}  "
            f"{_plain(format_duration(s.median_seconds_from_previous)):>8}  "
            f"{_plain(format_duration(s.mean_seconds_from_previous)):>8}"
        )
    for e in report.exited:
        out.append(f"{e.title:<{width}}  {e.leads:>8}  (exit, {format_percent(e.share)} of leads)")
    if report.questions:
        out += ["", "Questions (saw → answered):"]
        for q in report.questions:
            out.append(
                f"  {q.number}. {q.id:<16} {q.saw:>8} → {q.answered:>8}  "
                f"{format_percent(q.answer_rate):>5}  waiting {q.waiting}"
            )
    money = report.money
    cur = money.currency
    out += [
        "",
        f"Revenue: {_plain(format_money(money.revenue, cur))}"
        f", purchases {money.purchases}, customers {money.customers}"
        f", average check {_plain(format_money(money.average_check, cur))}"
        f", per lead {_plain(format_money(money.revenue_per_lead, cur))}"
        f", to first purchase {_plain(format_duration(money.median_seconds_to_first_purchase))}",
    ]
    if money.spend is not None:
        out.append(
            f"Spend: {_plain(format_money(money.spend, cur))}, CPL "
            f"{_plain(format_money(money.cost_per_lead, cur))}, CAC "
            f"{_plain(format_money(money.cac, cur))}, ROMI {format_percent(money.romi)}"
        )
    for currency, amount in money.other_revenue.items():
        out.append(f"Also revenue in {currency}: {amount} (not added up)")
    if money.by_source:
        out += ["", f"{'Source':<24} {'Leads':>8} {'Qualif.':>8} {'Paid':>6} {'Conv.':>6} "
                f"{'Revenue':>12} {'Spend':>10} {'CAC':>9} {'ROMI':>7}"]  # fmt: skip
        for m in money.by_source:
            out.append(
                f"{_cut(m.source, 24):<24} {m.leads:>8} {m.qualified:>8} {m.customers:>6} "
                f"{format_percent(m.conversion):>6} {m.revenue:>12.2f} "
                f"{'' if m.spend is None else f'{m.spend:.2f}':>10} "
                f"{'' if m.cac is None else f'{m.cac:.2f}':>9} {format_percent(m.romi):>7}"
            )
    for title, segments in (("Temperature", report.by_temperature),
                            ("Script version", report.by_version)):  # fmt: skip
        if segments:
            out += ["", f"{title}:"]
            for seg in segments:
                out.append(
                    f"  {seg.key or '-':<24} {seg.leads:>8} leads, overall "
                    f"{format_percent(seg.overall_conversion)}"
                )
    if report.churn:
        out += ["", "Churn (opted out or blocked, by current stage):"]
        for c in report.churn:
            out.append(
                f"  {c.title:<{width}} {c.churned:>6} of {c.leads:<8} {format_percent(c.share):>5}"
                f"  (opted out {c.opted_out}, blocked {c.blocked})"
            )
    return "\n".join(out) + "\n"


def _plain(value: str) -> str:
    return value.replace(NBSP, " ")
