"""One number format in every view: digit groups of the school's language, money with its sign
after it, percents rounded half up (34.5% is 35%, never 34%), and the report's shares computed
in Decimal."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from funnel.reports.arithmetic import percent, ratio
from funnel.reports.digest import Digest
from funnel.reports.figures import FunnelReport, Money, SourceMoney, StageRow, Totals
from funnel.reports.periods import parse_period
from handlers.views.digest import format_digest_html
from handlers.views.numbers import (
    NBSP,
    NNBSP,
    format_duration,
    format_money,
    format_number,
    format_percent,
    plain,
    round_half_up,
)
from handlers.views.report import format_report_html, format_report_text, format_sources_html


def test_counts_are_grouped_the_way_the_language_writes_them() -> None:
    assert format_number(1234) == f"1{NNBSP}234"
    assert format_number(1_028_100) == f"1{NNBSP}028{NNBSP}100"
    assert format_number(1_028_100, lang="en") == "1,028,100"
    assert format_number(999) == "999" and format_number(0) == "0"
    assert format_number(-1234, lang="en") == "-1,234"
    assert format_number(Decimal("1234.5"), digits=1) == f"1{NNBSP}234,5"
    assert format_number(Decimal("1234.5"), lang="en", digits=1) == "1,234.5"
    # An unknown language falls back to the English symbols rather than failing.
    assert format_number(1234, lang="xx") == "1,234"


def test_money_has_whole_units_and_the_sign_after_it() -> None:
    assert format_money(1_028_100, "RUB") == f"1{NNBSP}028{NNBSP}100{NBSP}₽"
    assert format_money(Decimal("489900.00"), "RUB") == f"489{NNBSP}900{NBSP}₽"
    assert format_money(489900.0, "RUB", lang="en") == f"489,900{NBSP}₽"
    assert format_money(Decimal("0.5"), "RUB") == f"1{NBSP}₽"  # half a rouble rounds up
    assert format_money(Decimal("2.5"), "USD") == f"3{NBSP}$"  # round() would say 2
    assert format_money(100, "GBP") == f"100{NBSP}GBP"  # no known sign: the code
    assert format_money(None, "RUB") == "—"
    assert format_money(Decimal("NaN"), "RUB") == "—"
    # A purchase on a card keeps its kopecks, and only when it has some.
    assert format_money(Decimal("6900.50"), "RUB", cents=True) == f"6{NNBSP}900,50{NBSP}₽"
    assert format_money(Decimal("6900.00"), "RUB", cents=True) == f"6{NNBSP}900{NBSP}₽"
    assert format_money(Decimal("6900.5"), "RUB", lang="en", cents=True) == f"6,900.50{NBSP}₽"


@pytest.mark.parametrize(
    ("value", "ru", "en"),
    [
        (34.5, "35%", "35%"),  # f"{34.5:.0f}" says 34
        (Decimal("34.5"), "35%", "35%"),
        (33.33, "33%", "33%"),
        (100.0, "100%", "100%"),
        (0.0, "0%", "0%"),
        (7.25, "7,3%", "7.3%"),  # below 10%: one decimal, half up
        (7.0, "7%", "7%"),
        (9.96, "10%", "10%"),  # rounds to 10.0, so whole percents
        (-64.5, "-65%", "-65%"),  # halves away from zero
        (1250.0, f"1{NNBSP}250%", "1,250%"),
        (None, "—", "—"),
    ],
)
def test_percents_round_half_up(value: float | Decimal | None, ru: str, en: str) -> None:
    assert format_percent(value) == ru
    assert format_percent(value, lang="en") == en


def test_round_half_up_reads_a_float_as_the_decimal_it_prints() -> None:
    assert round_half_up(0.125, 2) == Decimal("0.13")  # the binary float is 0.12499…
    assert round_half_up(2.675, 2) == Decimal("2.68")  # round(2.675, 2) == 2.67
    assert round_half_up(Decimal("-0.5")) == Decimal("-1")


def test_the_reports_shares_and_ratios_round_half_up_in_decimal() -> None:
    assert percent(69, 200) == 34.5 and format_percent(percent(69, 200)) == "35%"
    assert percent(1, 8) == 12.5
    assert percent(1, 800) == 0.13  # 0.125 → 0.13, where round() gives 0.12
    assert percent(1, 3) == 33.33 and percent(2, 3) == 66.67
    assert percent(5, 0) is None
    assert percent(Decimal("30000") - Decimal("10000"), Decimal("10000")) == 200.0
    assert ratio(Decimal("1"), 8) == 0.13 and ratio(10, 0) is None
    assert ratio(Decimal("469200"), 14) == 33514.29


@given(st.integers(0, 10**6), st.integers(1, 10**6))
def test_a_percent_never_disagrees_with_the_exact_fraction(part: int, whole: int) -> None:
    shown = percent(part, whole)
    assert shown is not None
    exact = Decimal(part) * 100 / Decimal(whole)
    assert abs(Decimal(str(shown)) - exact) <= Decimal("0.005")


@given(st.integers(-(10**12), 10**12))
def test_a_grouped_number_reads_back(value: int) -> None:
    assert int(format_number(value).replace(NNBSP, "")) == value
    assert int(format_number(value, lang="en").replace(",", "")) == value


def test_durations_use_the_same_rounding_and_marks() -> None:
    assert format_duration(30.5, lang="ru") == f"31{NBSP}с"
    assert format_duration(5400, lang="ru") == f"1,5{NBSP}ч"
    assert format_duration(5400, lang="en") == f"1.5{NBSP}h"
    assert format_duration(None, lang="ru") == "—"


def test_plain_text_for_a_terminal() -> None:
    assert plain(format_money(1_028_100, "RUB")) == "1 028 100 ₽"


NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _stage(sid: str, title: str, reached: int, prev: float | None, first: float | None,
           dropped: int | None) -> StageRow:  # fmt: skip
    return StageRow(sid, title, reached, prev, first, dropped)


def report(revenue: Decimal | float = Decimal("489900.00")) -> FunnelReport:
    stages = (
        _stage("new", "Нажал «Старт»", 200, None, 100.0, None),
        _stage("qualified", "Прошёл квалификацию", 138, 69.0, 69.0, 62),
        _stage("customer", "Оплатил", 69, 50.0, 34.5, 69),
    )
    source = SourceMoney("vk_ads", 200, 138, 69, 34.5, revenue, 69, Decimal("98000"),  # type: ignore[arg-type]
                         490.0, 1420.29, 399.9)  # fmt: skip
    money = Money(
        currency="RUB", revenue=revenue, purchases=69, customers=69,  # type: ignore[arg-type]
        average_check=7100.0, revenue_per_lead=2449.5, median_seconds_to_first_purchase=None,
        spend=Decimal("98000"), cost_per_lead=490.0, cac=1420.29, romi=399.9,  # type: ignore[arg-type]
        by_source=(source,),
    )  # fmt: skip
    return FunnelReport(
        generated_at=NOW, period=parse_period("all", NOW), source=None, stages=stages,
        exited=(), totals=Totals(200, 200, 69, 34.5, 0, 0, 0.0), by_source=(),
        by_temperature=(), by_version=(), questions=(), money=money, churn=(),
    )  # fmt: skip


def test_the_report_writes_money_one_way_and_rounds_half_up() -> None:
    for revenue in (Decimal("489900.00"), 489900.0):
        html = format_report_html(report(revenue), lang="ru")
        assert f"489{NNBSP}900{NBSP}₽" in html and "489900" not in html
        assert "(35%)" in html and "34%" not in html
        text = format_report_text(report(revenue))
        assert "489,900 ₽" in text and "489900.00" not in text
        assert "35%" in text and "98,000 ₽" in text and "1,420 ₽" in text
    sources = format_sources_html(report(), lang="ru")
    assert f"489{NNBSP}900{NBSP}₽" in sources and "CAC 1" in sources and "ROMI 400%" in sources


def test_every_line_of_the_phone_views_fits_a_phone() -> None:
    """Lines a phone shows without wrapping: the monospace table, and every line of figures
    (the legends are prose and wrap like prose)."""
    html = format_report_html(report(), lang="ru")
    table = html.split("<pre>")[1].split("</pre>")[0]
    assert all(len(line) <= 40 for line in table.splitlines())
    for view in (html, format_sources_html(report(), lang="ru")):
        for line in view.splitlines():
            if "—" in line or line.startswith(("<pre>", "Шаг", "Лиды ·", "CPL —")):
                continue  # a legend or the table
            bare = line.replace("<b>", "").replace("</b>", "").replace("<code>", "")
            assert len(bare.replace("</code>", "")) <= 44, line


def test_the_digest_uses_the_same_format() -> None:
    digest = Digest(
        day="2026-03-09", leads=1234, stages=[("new", 1234, 100.0), ("Оплатил", 5, 0.41)],
        revenue={"RUB": 1_028_100.0}, purchases=5, leakiest=("Оплатил", 1229, 34.5),
    )  # fmt: skip
    html = format_digest_html(digest, lang="ru")
    assert f"1{NNBSP}234" in html and f"1{NNBSP}028{NNBSP}100{NBSP}₽" in html
    assert "0,4%" in html and "(доходят 35%)" in html and f"−1{NNBSP}229" in html
    english = format_digest_html(digest, lang="en")
    assert "1,234" in english and f"1,028,100{NBSP}₽" in english and "0.4%" in english


def test_a_campaign_step_fits_a_phone_and_rounds_half_up() -> None:
    from datetime import timedelta

    from funnel.reports.campaign_effect import CampaignReport, CampaignStats, StepStats
    from handlers.views.campaigns import format_campaign_report_html

    cancelled = {"stage_changed": 3, "replied": 2}
    step = StepStats(step=1, after=timedelta(days=1), total=1234, sent=200, postponed=30,
                     cancelled=cancelled, replied=69, advanced=1)  # fmt: skip
    report = CampaignReport(NOW, [CampaignStats("nurture", "nurture", "Дожим", [step])])
    for lang in ("ru", "en"):
        html = format_campaign_report_html(report, lang=lang)
        assert "(35%)" in html and "(0.5%)" in html.replace(",", ".")  # 34.5% and 0.5%
        assert f"1{NNBSP}234" in html or "1,234" in html
        figures = [line for line in html.splitlines() if line.startswith(("·", "Шаг", "Step"))]
        assert len(figures) == 6, figures
        # The reasons for cancelling are a list of words: that line may wrap.
        counts = [f for f in figures if not f.startswith(("· cancelled", "· отменено"))]
        assert all(len(line) <= 40 for line in counts), counts
