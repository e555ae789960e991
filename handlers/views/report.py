"""The funnel report as words: Telegram HTML for the owner's phone (/stats, /sources), in the
school's language, and a plain table for the terminal. Every name that came from marketers or
users is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT, fit_to_telegram, lines_that_fit
from funnel.reports.figures import FunnelReport, Segment, SourceMoney, StageRow
from handlers.i18n import t, tn
from handlers.views.numbers import (
    Number,
    format_duration,
    format_money,
    format_number,
    format_percent,
    plain,
)

__all__ = ["format_report_html", "format_report_text", "format_sources_html"]

# Sources listed in /stats before "…and N more": the full list is /sources.
STATS_SOURCES = 8
# Monospace columns that fit a phone screen without wrapping (about 34 characters).
TITLE_WIDTH = 15
# The terminal report is in English words, so its numbers are written the English way.
TERMINAL = "en"


def temperatures(lang: str) -> dict[str | None, str]:
    """The temperature segments' names (None: leads not scored yet)."""
    return {
        "hot": t("report.temperature.hot", lang=lang),
        "warm": t("report.temperature.warm", lang=lang),
        "cold": t("report.temperature.cold", lang=lang),
        None: t("report.temperature.none", lang=lang),
    }


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _period_words(report: FunnelReport, lang: str) -> str:
    period = report.period
    if period.is_all:
        return t("report.period.all", lang=lang)
    if period.label.endswith("d") and period.label[:-1].isdigit():
        return tn("report.period.days", int(period.label[:-1]), lang=lang)
    return period.label.replace("..", " — ")


def _stage_table(stages: Sequence[StageRow], lang: str) -> list[str]:
    stage, leads = t("report.column.stage", lang=lang), t("report.column.leads", lang=lang)
    step, total = t("report.column.step", lang=lang), t("report.column.total", lang=lang)
    lines = [f"{stage:<{TITLE_WIDTH}} {leads:>7} {step:>4} {total:>5}"]
    for row in stages:
        share = (
            format_percent(row.conversion_from_previous, lang=lang)
            if row.dropped is not None
            else ""
        )
        lines.append(
            f"{_cut(row.title, TITLE_WIDTH):<{TITLE_WIDTH}} "
            f"{format_number(row.reached, lang=lang):>7} "
            f"{share:>4} {format_percent(row.conversion_from_first, lang=lang):>5}"
        )
    return lines


def format_report_html(report: FunnelReport, *, lang: str) -> str:
    """The /stats message in `lang`: at most 4096 characters, whatever the number of sources."""
    totals = report.totals
    header = [t("report.title", lang=lang, period=escape(_period_words(report, lang)))]
    if report.source is not None:
        header.append(t("report.source", lang=lang, source=escape(report.source)))
    header.append(
        t(
            "report.totals",
            lang=lang,
            leads=format_number(totals.leads, lang=lang),
            customers=format_number(totals.customers, lang=lang),
            conversion=format_percent(totals.overall_conversion, lang=lang),
        )
    )
    if not totals.leads:
        header.append(t("report.no_leads", lang=lang))
        return "\n".join(header)
    sections = [
        "\n".join(header),
        "<pre>"
        + escape("\n".join(_stage_table(report.stages, lang)))
        + "</pre>\n"
        + t("report.legend.columns", lang=lang),
    ]
    timed = [s for s in report.stages if s.median_seconds_from_previous is not None]
    if timed:
        lines = [t("report.times", lang=lang)]
        lines += [
            f"→ {escape(_cut(s.title, 28))}: "
            f"{format_duration(s.median_seconds_from_previous, lang=lang)} · "
            f"{format_duration(s.mean_seconds_from_previous, lang=lang)}"
            for s in timed
        ]
        sections.append("\n".join(lines))
    exits = [e for e in report.exited if e.leads]
    if exits:
        sections.append(
            "\n".join(
                f"🚪 {escape(e.title)}: {format_number(e.leads, lang=lang)} "
                f"({format_percent(e.share, lang=lang)})"
                for e in exits
            )
        )
    sections.append(_money_html(report, lang))
    if report.questions:
        lines = [t("report.questions", lang=lang)]
        lines += [
            f"{q.number}. {escape(_cut(q.title, 24))}: {format_number(q.saw, lang=lang)} → "
            f"{format_number(q.answered, lang=lang)} ({format_percent(q.answer_rate, lang=lang)})"
            for q in report.questions
        ]
        sections.append("\n".join(lines))
    churn = [c for c in report.churn if c.churned]
    if churn:
        share = format_percent(totals.churn_share, lang=lang)
        lines = [t("report.churn", lang=lang, share=share)]
        lines += [
            t(
                "report.churn.line",
                lang=lang,
                title=escape(_cut(c.title, 24)),
                churned=format_number(c.churned, lang=lang),
                leads=format_number(c.leads, lang=lang),
                share=format_percent(c.share, lang=lang),
            )
            for c in churn
        ]
        sections.append("\n".join(lines))
    for title, segments, names in (
        (t("report.by_temperature", lang=lang), report.by_temperature, temperatures(lang)),
        (t("report.by_version", lang=lang), report.by_version, {}),
    ):
        if len(segments) > 1:
            sections.append(_segments_html(title, segments, names, lang))
    used = len(fit_to_telegram(*sections))
    if report.source is None and report.by_source:
        sections.append(_sources_section(report, TELEGRAM_LIMIT - used - 2, lang))
    return fit_to_telegram(*sections)


def _money_html(report: FunnelReport, lang: str) -> str:
    money = report.money
    cur = money.currency
    lines = [
        t(
            "report.revenue",
            lang=lang,
            revenue=format_money(money.revenue, cur, lang=lang),
            purchases=format_number(money.purchases, lang=lang),
        ),
        t(
            "report.average_check",
            lang=lang,
            average=format_money(money.average_check, cur, lang=lang),
            per_lead=format_money(money.revenue_per_lead, cur, lang=lang),
        ),
    ]
    if money.ltv is not None:
        lines.append(t("report.ltv", lang=lang, ltv=format_money(money.ltv, cur)))
    if money.median_seconds_to_first_purchase is not None:
        duration = format_duration(money.median_seconds_to_first_purchase, lang=lang)
        lines.append(t("report.to_purchase", lang=lang, duration=duration))
    if money.spend is not None:
        # Two short lines and their legend: each fits a phone's width.
        lines.append(
            t("report.spend", lang=lang, spend=format_money(money.spend, cur, lang=lang))
            + f" · ROMI {format_percent(money.romi, lang=lang)}"
        )
        lines.append(
            f"CPL {format_money(money.cost_per_lead, cur, lang=lang)}"
            f" · CAC {format_money(money.cac, cur, lang=lang)}"
        )
        lines.append(t("report.legend.spend", lang=lang))
    for currency, amount in money.other_revenue.items():
        other = escape(format_money(amount, currency, lang=lang))
        lines.append(t("report.other_revenue", lang=lang, amount=other))
    return "\n".join(lines)


def _segments_html(
    title: str, segments: Sequence[Segment], names: dict[str | None, str], lang: str
) -> str:
    lines = [f"<b>{title}</b> " + t("report.legend.segments", lang=lang)]
    for segment in segments[:6]:
        name = names.get(segment.key) or segment.key or "—"
        lines.append(
            f"{escape(_cut(name, 24))}: {format_number(segment.leads, lang=lang)} → "
            f"{format_percent(segment.overall_conversion, lang=lang)}"
        )
    if len(segments) > 6:
        lines.append(tn("report.more", len(segments) - 6, lang=lang))
    return "\n".join(lines)


def _sources_section(report: FunnelReport, budget: int, lang: str) -> str:
    head = t("report.sources", lang=lang)
    lines = [
        f"<code>{escape(_cut(s.key or '—', 20))}</code>: {format_number(s.leads, lang=lang)} → "
        f"{format_percent(s.overall_conversion, lang=lang)}"
        for s in report.by_source
    ]
    kept = lines_that_fit(
        lines,
        budget - len(head) - 1,
        lambda n: tn("report.more", n, lang=lang),
        cap=STATS_SOURCES,
    )
    return "\n".join([head, *kept])


def _source_line(s: SourceMoney, currency: str, lang: str) -> str:
    """Short lines per source (a phone's width): its name, who came, what they brought."""
    people = [
        tn("sources.leads", s.leads, lang=lang, leads=format_number(s.leads, lang=lang)),
        t("sources.qualified", lang=lang, qualified=format_number(s.qualified, lang=lang)),
        t(
            "sources.customers",
            lang=lang,
            customers=format_number(s.customers, lang=lang),
            conversion=format_percent(s.conversion, lang=lang),
        ),
    ]
    money = [format_money(s.revenue, currency, lang=lang)]
    if s.spend is not None:
        money.append(f"CAC {format_money(s.cac, currency, lang=lang)}")
        money.append(f"ROMI {format_percent(s.romi, lang=lang)}")
    name = f"<b>{escape(_cut(s.source or '—', 32))}</b>"
    return "\n".join([name, " · ".join(people), " · ".join(money)])


def format_sources_html(report: FunnelReport, *, lang: str) -> str:
    """The /sources message in `lang`: one line per source, best first, within Telegram's
    limit."""
    header = t("sources.title", lang=lang, period=escape(_period_words(report, lang)))
    sources = report.money.by_source
    if not sources:
        return header + "\n" + t("sources.no_leads", lang=lang)
    header += "\n" + t("sources.legend", lang=lang)
    lines = [_source_line(s, report.money.currency, lang) for s in sources]
    kept = lines_that_fit(
        lines, TELEGRAM_LIMIT - len(header) - 1, lambda n: tn("sources.more", n, lang=lang)
    )
    return "\n".join([header, *kept])


def format_report_text(report: FunnelReport) -> str:
    """The terminal version: complete (no caps), in aligned columns, in English words with
    numbers written the English way (1,028,100 ₽)."""
    out: list[str] = []
    totals = report.totals
    source = f", source {report.source}" if report.source is not None else ""
    out.append(f"Funnel report, period {report.period.label}{source}")
    out.append(
        f"Leads: {_count(totals.leads)}, customers: {_count(totals.customers)}, overall "
        f"conversion {_pct(totals.overall_conversion)}, exited {_count(totals.exited)}"
    )
    out.append("")
    width = max([len("Stage"), *(len(s.title) for s in report.stages)])
    out.append(
        f"{'Stage':<{width}}  {'Reached':>8}  {'From prev':>9}  {'From first':>10}  "
        f"{'Dropped':>8}  {'Median':>8}  {'Mean':>8}"
    )
    for s in report.stages:
        out.append(
            f"{s.title:<{width}}  {_count(s.reached):>8}  {_pct(s.conversion_from_previous):>9}"
            f"  {_pct(s.conversion_from_first):>10}  "
            f"{'' if s.dropped is None else _count(s.dropped):>8}  "
            f"{_took(s.median_seconds_from_previous):>8}  "
            f"{_took(s.mean_seconds_from_previous):>8}"
        )
    for e in report.exited:
        out.append(f"{e.title:<{width}}  {_count(e.leads):>8}  (exit, {_pct(e.share)} of leads)")
    out.append("From prev: share of the previous stage; from first: share of the first.")
    if report.questions:
        out += ["", "Questions (saw → answered):"]
        for q in report.questions:
            out.append(
                f"  {q.number}. {q.id:<16} {_count(q.saw):>8} → {_count(q.answered):>8}  "
                f"{_pct(q.answer_rate):>5}  waiting {_count(q.waiting)}"
            )
    money = report.money
    cur = money.currency
    out += [
        "",
        f"Revenue: {_money(money.revenue, cur)}, purchases {_count(money.purchases)}, "
        f"customers {_count(money.customers)}",
        f"Average check {_money(money.average_check, cur)}, per lead "
        f"{_money(money.revenue_per_lead, cur)}, to first purchase (median) "
        f"{_took(money.median_seconds_to_first_purchase)}",
    ]
    if money.spend is not None:
        out.append(
            f"Spend: {_money(money.spend, cur)}, CPL {_money(money.cost_per_lead, cur)}, "
            f"CAC {_money(money.cac, cur)}, ROMI {_pct(money.romi)}"
        )
        out.append(
            "CPL: spend per lead; CAC: spend per customer; ROMI: (revenue - spend) / spend."
        )
    for currency, amount in money.other_revenue.items():
        out.append(f"Also revenue in {currency}: {_money(amount, currency)} (not added up)")
    if money.by_source:
        out += ["", f"{'Source':<24} {'Leads':>8} {'Qualif.':>8} {'Paid':>6} {'Conv.':>6} "
                f"{'Revenue':>12} {'Spend':>10} {'CAC':>9} {'ROMI':>7}"]  # fmt: skip
        for m in money.by_source:
            out.append(
                f"{_cut(m.source, 24):<24} {_count(m.leads):>8} {_count(m.qualified):>8} "
                f"{_count(m.customers):>6} {_pct(m.conversion):>6} "
                f"{_money(m.revenue, cur):>12} "
                f"{'' if m.spend is None else _money(m.spend, cur):>10} "
                f"{'' if m.cac is None else _money(m.cac, cur):>9} {_pct(m.romi):>7}"
            )
        out.append("Qualif.: qualified; Paid: customers; Conv.: customers / leads.")
    for title, segments in (("Temperature", report.by_temperature),
                            ("Script version", report.by_version)):  # fmt: skip
        if segments:
            out += ["", f"{title}:"]
            for seg in segments:
                out.append(
                    f"  {seg.key or '-':<24} {_count(seg.leads):>8} leads, overall "
                    f"{_pct(seg.overall_conversion)}"
                )
    if report.churn:
        out += ["", "Churn (opted out or blocked, by current stage):"]
        for c in report.churn:
            out.append(
                f"  {c.title:<{width}} {_count(c.churned):>6} of {_count(c.leads):<8} "
                f"{_pct(c.share):>5}  (opted out {_count(c.opted_out)}, "
                f"blocked {_count(c.blocked)})"
            )
    return "\n".join(out) + "\n"


def _count(value: int) -> str:
    return format_number(value, lang=TERMINAL)


def _pct(value: float | None) -> str:
    return format_percent(value, lang=TERMINAL)


def _money(value: Number | None, currency: str) -> str:
    return plain(format_money(value, currency, lang=TERMINAL))


def _took(seconds: float | None) -> str:
    """A duration for the terminal table, which is in English."""
    return plain(format_duration(seconds, lang=TERMINAL))
