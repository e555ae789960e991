"""The A/B report as words, in the school's language: Telegram HTML for /ab, plain text for
the terminal. Titles, targets and ids come from the marketer's script and are escaped."""

from __future__ import annotations

from html import escape

from funnel.core.telegram_text import TELEGRAM_LIMIT, lines_that_fit
from funnel.experiments.report import AbReport, ExperimentReport, Rate, VariantRow
from funnel.experiments.stats import Interval
from funnel.script.schema import Script
from handlers.i18n import t, tn
from handlers.views.numbers import format_number, format_percent


def _rate(rate: Rate) -> str:
    """ "31% [27–36%]": the rate with its 95% Wilson interval."""
    if rate.value is None:
        return "—"
    interval = rate.interval
    return (
        f"{format_percent(100 * rate.value)} "
        f"[{format_percent(100 * interval.low).removesuffix('%')}–"
        f"{format_percent(100 * interval.high)}]"
    )


def format_points(value: float) -> str:
    """A difference of rates in percentage points, signed: +8, −3.5, ±0."""
    sign = "+" if value > 0 else "−" if value < 0 else "±"
    return sign + format_percent(abs(100 * value)).removesuffix("%")


def _difference(diff: float, interval: Interval, lang: str) -> str:
    return t(
        "ab.difference",
        lang=lang,
        diff=format_points(diff),
        low=format_points(interval.low),
        high=format_points(interval.high),
    )


def _variant_line(row: VariantRow, total_weight: float, lang: str) -> str:
    share = (
        format_percent(100 * row.weight / total_weight) if total_weight and row.in_script else "—"
    )
    metric = _rate(row.metric)
    if row.comparison is not None and row.exposed:
        metric += " " + _difference(row.comparison.diff, row.comparison.interval, lang)
    text = tn(
        "ab.variant",
        row.exposed,
        lang=lang,
        variant=row.id,
        share=share,
        exposed=format_number(row.exposed),
        metric=metric,
        booked=_rate(row.booked),
        customer=_rate(row.customer),
    )
    if not row.in_script:
        text += " " + t("ab.variant_removed", lang=lang)
    return text


def _goal(experiment: ExperimentReport, script: Script, lang: str) -> str:
    if experiment.metric is None:
        return t("ab.goal_next", lang=lang)
    title = script.titles.get(experiment.metric, experiment.metric)
    return t("ab.goal_stage", lang=lang, stage=title)


def _verdict(experiment: ExperimentReport, lang: str) -> str:
    effect = format_percent(100 * experiment.min_effect).removesuffix("%")
    if experiment.status == "stopped":
        if not experiment.in_script:
            return t("ab.verdict.removed", lang=lang)
        return t("ab.verdict.stopped", lang=lang, winner=experiment.leader or "")
    if experiment.status == "winner":
        return t("ab.verdict.winner", lang=lang, variant=experiment.leader or "")
    if experiment.status == "control_wins":
        return t("ab.verdict.control_wins", lang=lang, variant=experiment.leader or "")
    if experiment.status == "no_difference":
        return t("ab.verdict.no_difference", lang=lang, effect=effect)
    return tn(
        "ab.verdict.not_enough_data",
        experiment.more_needed,
        lang=lang,
        more=format_number(experiment.more_needed),
        needed=format_number(experiment.leads_needed),
        effect=effect,
    )


def experiment_lines(
    experiment: ExperimentReport, script: Script, *, html: bool, lang: str
) -> list[str]:
    def esc(text: str) -> str:
        return escape(text, quote=False) if html else text

    def bold(text: str) -> str:
        return f"<b>{text}</b>" if html else text

    lines = [bold(esc(t("ab.experiment", lang=lang, title=experiment.title,
                         id=experiment.id)))]  # fmt: skip
    if experiment.in_script:
        lines.append(esc(t("ab.target", lang=lang, target=experiment.target,
                           goal=_goal(experiment, script, lang))))  # fmt: skip
    weight = sum(v.weight for v in experiment.variants if v.in_script)
    lines.extend("• " + esc(_variant_line(row, weight, lang)) for row in experiment.variants)
    lines.append(esc(_verdict(experiment, lang)))
    if experiment.sample_ratio.mismatch and experiment.status != "stopped":
        p_value = f"{experiment.sample_ratio.p_value:.1e}"
        lines.append(esc(t("ab.srm", lang=lang, p=p_value)))
    return lines


def _lines(report: AbReport, script: Script, html: bool, lang: str) -> list[str]:
    when = report.now.strftime("%Y-%m-%d %H:%M UTC")
    title = t("ab.title", lang=lang, when=when)
    lines = [f"<b>{escape(title, quote=False)}</b>" if html else title]
    if not report.experiments:
        lines.append(t("ab.empty", lang=lang))
        return lines
    lines.append(t("ab.legend", lang=lang))
    for experiment in report.experiments:
        lines.append("")
        lines.extend(experiment_lines(experiment, script, html=html, lang=lang))
    return lines


def format_ab_report_html(report: AbReport, script: Script, *, lang: str) -> str:
    """Telegram HTML, at most 4096 characters: the tail is dropped whole lines at a time."""
    lines = _lines(report, script, html=True, lang=lang)

    def more(n: int) -> str:
        return tn("ab.more_lines", n, lang=lang)

    return "\n".join(lines_that_fit(lines, TELEGRAM_LIMIT, more))


def format_ab_report_text(report: AbReport, script: Script, *, lang: str) -> str:
    return "\n".join(_lines(report, script, html=False, lang=lang))
