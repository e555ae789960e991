"""The funnel report's arithmetic against hand-computed fixtures on a migrated SQLite
database, plus properties that must hold for any stage log."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import db
from funnel.core.models import AdSpend, Answer, Lead, Purchase, StageEvent
from funnel.core.telegram_text import check_telegram_html
from funnel.reports import rollup
from funnel.reports.arithmetic import median_from_histogram
from funnel.reports.figures import FunnelReport
from funnel.reports.funnel_report import funnel_report
from funnel.reports.periods import parse_period
from funnel.script.loading import parse_script
from funnel.script.schema import Script
from handlers.i18n import LANGUAGES
from handlers.views.report import format_report_html, format_report_text, format_sources_html
from tests.conftest import TEST_TEXTS_YAML

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALL = parse_period("all", NOW)

SCRIPT_YAML = (
    """
format: 1
id: report
version: "1"
language: ru
school: Школа
course: Курс
stages:
  - {id: new, title: "Нажал «Старт»"}
  - {id: engaged, title: Ответил}
  - {id: qualified, title: Квалифицирован}
  - {id: customer, title: "Оплатил <&>"}
exit_stages:
  - {id: disqualified, title: Не подходит}
roles: {booked: qualified, loyal: customer}
"""
    + TEST_TEXTS_YAML
    + """questions:
  - id: need
    text: "<b>Вопрос {question_number}.</b> Зачем?"
    options:
      - {id: career, label: "Сменить профессию", score: 30}
      - {id: fun, label: "=Просто так", score: 0}
    free_text: {score: 5}
  - id: timing
    text: "Когда?"
    options:
      - {id: now, label: Сейчас, score: 30}
      - {id: later, label: Позже, score: 0}
  - id: budget
    text: "Бюджет?"
    options:
      - {id: ok, label: Есть, score: 30}
outcomes:
  thresholds: {hot: 50, warm: 20}
  hot: {stage: qualified, text: Hot}
  warm: {stage: qualified, text: Warm}
  cold: {stage: engaged, text: Cold}
  disqualified: {stage: disqualified, text: Later}
"""
)


def make_script() -> Script:
    return parse_script(SCRIPT_YAML, "report.yaml")


@pytest.fixture
def report_script() -> Script:
    return make_script()


class Builder:
    """Rows for a fixture, inserted in bulk (executemany) in one transaction."""

    def __init__(self) -> None:
        self.leads: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []
        self.purchases: list[dict[str, Any]] = []
        self.spend: list[dict[str, Any]] = []

    def lead(
        self,
        path: Sequence[tuple[str, float]],
        *,
        created: datetime = NOW - timedelta(days=1),
        source: str = "direct",
        temperature: str | None = None,
        version: str = "report@1",
        position: str | None = None,
        opted_out: bool = False,
        blocked: bool = False,
        deleted: bool = False,
        stage: str | None = None,
        user_id: int | None = None,
    ) -> int:
        """A lead whose log enters `path` stages at created + seconds; returns its id."""
        lead_id = len(self.leads) + 1
        current = stage or (path[-1][0] if path else "new")
        self.leads.append(
            {
                "id": lead_id,
                "user_id": None if deleted else (user_id or 10_000 + lead_id),
                "chat_id": None if deleted else 10_000 + lead_id,
                "first_name": None if deleted else f"Лид{lead_id}",
                "source": source,
                "stage": current,
                "position": position,
                "score": 0,
                "temperature": temperature,
                "script_version": version,
                "cycle": 1,
                "cycle_started_at": created,
                "created_at": created,
                "stage_changed_at": created + timedelta(seconds=path[-1][1] if path else 0),
                "opted_out_at": created if opted_out else None,
                "blocked_at": created if blocked else None,
                "deleted_at": created if deleted else None,
                "version": 1,
            }
        )
        previous = None
        for to_stage, seconds in path:
            self.events.append(
                {
                    "lead_id": lead_id,
                    "from_stage": previous,
                    "to_stage": to_stage,
                    "at": created + timedelta(seconds=seconds),
                    "cause": "test",
                }
            )
            previous = to_stage
        return lead_id

    def answer(
        self, lead_id: int, question: str, option: str | None, value: str, *, score: int = 0,
        superseded: bool = False,
    ) -> None:  # fmt: skip
        self.answers.append({"lead_id": lead_id, "question": question, "option": option,
                             "value": value, "score": score, "at": NOW - timedelta(hours=1),
                             "superseded": superseded})  # fmt: skip

    def purchase(self, lead_id: int, amount: float, *, currency: str = "RUB",
                 after: float = 86400) -> None:  # fmt: skip
        created = next(row["created_at"] for row in self.leads if row["id"] == lead_id)
        at = created + timedelta(seconds=after)
        self.purchases.append(
            {
                "lead_id": lead_id,
                "amount": amount,
                "currency": currency,
                "at": at,
                "recorded_by": 1,
            }
        )

    def ad_spend(self, source: str, amount: float, *, currency: str = "RUB",
                 at: datetime = NOW - timedelta(days=2)) -> None:  # fmt: skip
        self.spend.append({"source": source, "amount": amount, "currency": currency, "at": at,
                           "recorded_by": 1})  # fmt: skip

    async def save(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        async with sessions() as session, session.begin():
            for model, rows in (
                (Lead, self.leads), (StageEvent, self.events), (Answer, self.answers),
                (Purchase, self.purchases), (AdSpend, self.spend),
            ):  # fmt: skip
                if rows:
                    await session.execute(insert(model), rows)


async def build_report(
    sessions: async_sessionmaker[AsyncSession],
    script: Script,
    builder: Builder,
    **kwargs: Any,
) -> FunnelReport:
    """The report; for all time, also checks the rollups agree with the log and a rebuild."""
    await builder.save(sessions)
    kwargs.setdefault("period", ALL)
    async with sessions() as session:
        report = await funnel_report(session, script, now=NOW, **kwargs)
        if kwargs["period"].is_all:
            from_log = await funnel_report(session, script, now=NOW, from_log=True, **kwargs)
            assert report.to_json() == from_log.to_json(), "the rollups disagree with the log"
    if kwargs["period"].is_all:
        async with sessions() as session:
            await (await session.connection()).run_sync(rollup.rebuild)
            rebuilt = await funnel_report(session, script, now=NOW, **kwargs)
            await session.rollback()
        assert rebuilt.to_json() == report.to_json(), "a rebuild changes the rollups"
    return report


def reached(report: FunnelReport) -> list[int]:
    return [s.reached for s in report.stages]


def classic() -> Builder:
    """1000 leads start; 500 answer an hour later; 100 of those buy, skipping "qualified"."""
    b = Builder()
    for n in range(1000):
        path: list[tuple[str, float]] = [("new", 0)]
        if n < 500:
            path.append(("engaged", 3600))
        if n < 100:
            path.append(("customer", 3600 + 86400))
        b.lead(path, source="ads" if n % 2 else "blog")
    return b


async def test_classic_example(sessions: async_sessionmaker[AsyncSession],
                               report_script: Script) -> None:  # fmt: skip
    report = await build_report(sessions, report_script, classic())
    new, engaged, qualified, customer = report.stages
    assert reached(report) == [1000, 500, 100, 100]
    assert engaged.conversion_from_previous == 50.0
    assert qualified.conversion_from_previous == 20.0
    assert customer.conversion_from_previous == 100.0
    assert customer.conversion_from_first == 10.0
    assert report.totals.overall_conversion == 10.0
    assert (new.dropped, engaged.dropped, qualified.dropped, customer.dropped) == (
        None,
        500,
        400,
        0,
    )
    assert new.conversion_from_previous is None and new.conversion_from_first == 100.0
    assert engaged.median_seconds_from_previous == 3600
    assert engaged.mean_seconds_from_previous == 3600
    assert engaged.timed_leads == 500
    # Nobody entered "qualified": no timing for it nor for the step after it.
    assert qualified.median_seconds_from_previous is None
    assert customer.median_seconds_from_previous is None and customer.timed_leads == 0
    assert report.totals.leads == 1000 and report.totals.customers == 100

    data = report.to_json()
    assert [s["reached"] for s in data["stages"]] == [1000, 500, 100, 100]
    assert data["stages"][1]["conversion_from_previous"] == 50.0
    assert {s["source"] for s in data["by_source"]} == {"ads", "blog"}
    by_source = {s["source"]: s for s in data["by_source"]}
    assert [s["reached"] for s in by_source["ads"]["stages"]] == [500, 250, 50, 50]


async def test_skipped_stages_count_as_reached_and_exits_apart(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    b.lead([("new", 0), ("customer", 60)])  # jumped straight to paying
    b.lead([("new", 0), ("disqualified", 30)])  # left
    b.lead([("new", 0), ("disqualified", 30), ("engaged", 90)])  # left and came back
    b.lead([("new", 0), ("engaged", 120), ("qualified", 200)], stage="disqualified")
    report = await build_report(sessions, report_script, b)
    assert reached(report) == [4, 3, 2, 1]
    assert [(e.id, e.leads) for e in report.exited] == [("disqualified", 2)]
    assert report.exited[0].share == 50.0
    assert report.totals.exited == 2
    engaged = report.stages[1]
    # Engaged from new: 90 s and 120 s (the lead who jumped has no "engaged" entry).
    assert engaged.timed_leads == 2 and engaged.median_seconds_from_previous == 105
    assert report.stages[2].median_seconds_from_previous == 80


async def test_median_and_mean_of_times(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    for seconds in (60, 120, 600):
        b.lead([("new", 0), ("engaged", seconds)])
    b.lead([("new", 0), ("engaged", 2 * 86400)])
    # Re-entering a stage later does not move its first entry.
    b.lead([("new", 0), ("engaged", 300), ("disqualified", 400), ("engaged", 9000)])
    report = await build_report(sessions, report_script, b)
    engaged = report.stages[1]
    assert engaged.timed_leads == 5
    assert engaged.median_seconds_from_previous == 300
    assert engaged.mean_seconds_from_previous == round((60 + 120 + 600 + 172800 + 300) / 5, 1)


def test_median_from_histogram() -> None:
    assert median_from_histogram([]) == (None, None, 0)
    assert median_from_histogram([(10, 1, 10), (20, 1, 20)]) == (15.0, 15.0, 2)
    assert median_from_histogram([(60, 3, 185), (0, 1, 5)])[0] == 61.7


async def test_period_and_source_filters(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    b.lead([("new", 0)], created=NOW - timedelta(days=3), source="ads")
    b.lead([("new", 0), ("engaged", 10)], created=NOW - timedelta(days=3), source="blog")
    b.lead([("new", 0)], created=NOW - timedelta(days=10), source="ads")
    b.lead([("new", 0)], created=NOW - timedelta(days=40), source="ads")
    b.lead([("new", 0)], created=datetime(2026, 1, 15, 23, 59, tzinfo=UTC), source="ads")
    await b.save(sessions)

    async def count(period: str, source: str | None = None) -> int:
        async with sessions() as session:
            report = await funnel_report(
                session, report_script, now=NOW, period=parse_period(period, NOW), source=source
            )
        return report.totals.leads

    assert await count("7d") == 2
    assert await count("30d") == 3
    assert await count("all") == 5
    assert await count("7d", "ads") == 1
    assert await count("all", "ads") == 4
    assert await count("all", "nobody") == 0
    assert await count("2026-01-01..2026-01-31") == 2  # 40 days ago is 2026-01-20
    assert await count("2026-01-15") == 1
    assert await count("2026-01-16..2026-01-19") == 0


async def test_breakdowns(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    b.lead([("new", 0), ("customer", 10)], temperature="hot", version="report@2", source="ads")
    b.lead([("new", 0), ("engaged", 10)], temperature="hot", source="ads")
    b.lead([("new", 0)], temperature="cold", source="blog")
    b.lead([("new", 0)], source="blog")
    report = await build_report(sessions, report_script, b)
    temps = {s.key: s for s in report.by_temperature}
    assert set(temps) == {"hot", "cold", None}
    assert temps["hot"].leads == 2 and reached_of(temps["hot"].stages) == [2, 2, 1, 1]
    assert temps["hot"].overall_conversion == 50.0
    versions = {s.key: s.leads for s in report.by_version}
    assert versions == {"report@1": 3, "report@2": 1}
    sources = {s.key: s for s in report.by_source}
    assert sources["blog"].overall_conversion == 0.0
    assert report.to_json()["by_temperature"][0]["temperature"] in ("hot", "cold", None)


def reached_of(stages: Sequence[Any]) -> list[int]:
    return [s.reached for s in stages]


async def test_questions_drop_off(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    a = b.lead([("new", 0), ("engaged", 10)], position="timing")
    b.answer(a, "need", "career", "career")
    c = b.lead([("new", 0)], position="need")  # saw the first question, silent
    d = b.lead([("new", 0), ("engaged", 10), ("qualified", 20)])
    for question, option in (("need", "career"), ("timing", "now"), ("budget", "ok")):
        b.answer(d, question, option, option)
    # Started over: the old answer stays for drop-off, and the lead is at "need" again.
    e = b.lead([("new", 0), ("engaged", 10)], position="need")
    b.answer(e, "need", None, "хочу", superseded=True)
    b.answer(e, "nps", None, "9")  # a campaign answer, not a dialogue question
    report = await build_report(sessions, report_script, b)
    rows = {q.id: q for q in report.questions}
    assert [q.id for q in report.questions] == ["need", "timing", "budget"]
    assert (rows["need"].saw, rows["need"].answered, rows["need"].waiting) == (4, 3, 1)
    assert rows["need"].answer_rate == 75.0
    assert (rows["timing"].saw, rows["timing"].answered, rows["timing"].waiting) == (2, 1, 1)
    assert (rows["budget"].saw, rows["budget"].answered) == (1, 1)
    assert c > 0
    assert rows["need"].title == "Зачем?"


async def test_money(sessions: async_sessionmaker[AsyncSession], report_script: Script) -> None:
    b = Builder()
    ads = [b.lead([("new", 0)], source="ads") for _ in range(10)]
    blog = [b.lead([("new", 0)], source="blog") for _ in range(5)]
    b.purchase(ads[0], 10_000, after=3600)
    b.purchase(ads[0], 5_000, after=7200)  # a second purchase: same customer
    b.purchase(ads[1], 15_000, after=86400)
    b.purchase(blog[0], 20_000, after=2 * 86400)
    b.purchase(blog[1], 99, currency="USD")  # another currency: listed, never added
    b.ad_spend("ads", 6_000)
    b.ad_spend("ads", 4_000)
    b.ad_spend("ads", 1_000_000, at=NOW - timedelta(days=400))  # outside a 30-day period
    report = await build_report(sessions, report_script, b, period=parse_period("30d", NOW))
    money = report.money
    assert money.currency == "RUB"
    assert money.revenue == 50_000 and money.purchases == 4 and money.customers == 3
    assert money.average_check == 12_500
    assert money.revenue_per_lead == Decimal("3333.33")  # Decimal, half up to kopecks
    assert money.median_seconds_to_first_purchase == 86400  # 1 h, 1 d, 2 d
    assert money.other_revenue == {"USD": 99.0}
    # Spend is known for "ads" only: CPL, CAC and ROMI are about that source.
    assert money.spend == 10_000
    assert money.cost_per_lead == 1_000 and money.cac == 5_000
    assert money.romi == 200.0  # (30 000 − 10 000) / 10 000
    by = {s.source: s for s in money.by_source}
    assert by["ads"].cac == 5_000 and by["ads"].revenue == 30_000 and by["ads"].customers == 2
    assert by["blog"].spend is None and by["blog"].cac is None and by["blog"].romi is None
    assert by["blog"].conversion == 20.0


async def test_money_without_purchases_or_spend(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    b.lead([("new", 0)])
    b.ad_spend("ghost", 500)  # spend on a source that brought nobody
    report = await build_report(sessions, report_script, b)
    money = report.money
    assert money.revenue == 0 and money.average_check is None and money.cac is None
    assert money.spend == 500 and money.romi == -100.0
    assert {s.source for s in money.by_source} == {"direct", "ghost"}


async def test_churn_per_current_stage(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    b.lead([("new", 0)], opted_out=True)
    b.lead([("new", 0)], blocked=True)
    b.lead([("new", 0)], opted_out=True, blocked=True)
    b.lead([("new", 0)])
    b.lead([("new", 0), ("engaged", 5)], blocked=True)
    b.lead([("new", 0), ("engaged", 5)])
    report = await build_report(sessions, report_script, b)
    churn = {c.stage: c for c in report.churn}
    assert (churn["new"].leads, churn["new"].opted_out, churn["new"].blocked) == (4, 2, 2)
    assert churn["new"].churned == 3 and churn["new"].share == 75.0
    assert churn["engaged"].share == 50.0
    assert report.totals.churned == 4


async def test_empty_database(sessions: async_sessionmaker[AsyncSession],
                              report_script: Script) -> None:  # fmt: skip
    report = await build_report(sessions, report_script, Builder())
    assert reached(report) == [0, 0, 0, 0]
    assert all(s.conversion_from_previous is None for s in report.stages)
    assert report.totals.overall_conversion is None
    for lang in LANGUAGES:
        html = format_report_html(report, lang=lang)
        assert check_telegram_html(html) is None
        assert check_telegram_html(format_sources_html(report, lang=lang)) is None
    assert format_report_text(report)


async def test_html_is_valid_short_and_escaped(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    for n in range(300):
        source = f"<script>&{n}" if n % 3 else f"канал_очень_длинное_название_{n}" * 2
        lead = b.lead([("new", 0), ("engaged", 60 * (n % 7 + 1))], source=source[:64])
        if n % 5 == 0:
            b.purchase(lead, 1000 + n)
        if n % 4 == 0:
            b.ad_spend(source[:64], 100 + n)
    report = await build_report(sessions, report_script, b)
    for lang in LANGUAGES:
        for html in (
            format_report_html(report, lang=lang),
            format_sources_html(report, lang=lang),
        ):
            assert check_telegram_html(html) is None, html
            assert len(html) <= 4096
            assert "<script>" not in html and "&lt;script&gt;" in html
    stats = format_report_html(report, lang="ru")
    assert "Оплатил &lt;&amp;&gt;" in stats
    assert "…и ещё" in stats and "…и ещё" in format_sources_html(report, lang="ru")
    english = format_report_html(report, lang="en")
    assert "…and" in english and "…and" in format_sources_html(report, lang="en")
    text = format_report_text(report)
    assert "Нажал «Старт»" in text and "<script>&1" in text


async def test_report_reads_the_log_not_the_current_stage(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = Builder()
    # Marked as a customer, but the log never saw the lead pay: the log wins.
    b.lead([("new", 0)], stage="customer")
    report = await build_report(sessions, report_script, b)
    assert reached(report) == [1, 0, 0, 0]


async def test_the_all_time_report_reads_the_rollups(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    b = classic()
    b.answer(b.lead([("new", 0)], position="need"), "need", "career", "career")
    await build_report(sessions, report_script, b)
    async with sessions() as session, session.begin():
        counts = await session.execute(
            text("SELECT sum(leads) FROM rollup_leads UNION ALL SELECT sum(answered) "
                 "FROM rollup_questions UNION ALL SELECT sum(leads) FROM rollup_gaps "
                 "WHERE source = '*' AND from_stage = 'new' AND to_stage = 'engaged'")
        )  # fmt: skip
        assert [n for (n,) in counts.all()] == [1001, 1, 500]
        await session.execute(text("DELETE FROM rollup_leads"))
    async with sessions() as session:
        emptied = await funnel_report(session, report_script, now=NOW, period=ALL)
        from_log = await funnel_report(session, report_script, now=NOW, period=ALL,
                                       from_log=True)  # fmt: skip
    assert emptied.totals.leads == 0 and from_log.totals.leads == 1001


# -- properties ---------------------------------------------------------------------------

STAGES = ["new", "engaged", "qualified", "customer", "disqualified"]
paths = st.lists(
    st.lists(st.tuples(st.sampled_from(STAGES), st.integers(0, 10 * 86400)), max_size=6),
    max_size=25,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paths)
def test_report_properties(lead_paths: list[list[tuple[str, int]]]) -> None:
    script = make_script()

    async def scenario() -> FunnelReport:
        with tempfile.TemporaryDirectory() as tmp:
            engine = db.create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'p.sqlite3'}")
            try:
                await db.migrate(engine)
                sessions = db.sessionmaker(engine)
                b = Builder()
                for n, path in enumerate(lead_paths):
                    b.lead(sorted(path, key=lambda e: e[1]), source=f"s{n % 3}")
                return await build_report(sessions, script, b)
            finally:
                await engine.dispose()

    report = asyncio.run(scenario())
    counts = reached(report)
    assert counts == sorted(counts, reverse=True), "reach never grows along the funnel"
    assert report.totals.leads == len(lead_paths)
    first = counts[0]
    for n, stage in enumerate(report.stages):
        if n:
            previous = counts[n - 1]
            assert stage.dropped == previous - stage.reached
            expected = None if not previous else round(100 * stage.reached / previous, 2)
            assert stage.conversion_from_previous == expected
        expected_first = None if not first else round(100 * stage.reached / first, 2)
        assert stage.conversion_from_first == expected_first
        for value in (stage.conversion_from_previous, stage.conversion_from_first):
            assert value is None or 0 <= value <= 100
        if stage.median_seconds_from_previous is not None:
            assert stage.median_seconds_from_previous >= 0 and stage.timed_leads > 0
    # Each lead's furthest stage, computed in Python, gives the same reach.
    order = STAGES[:4]
    furthest = [
        max((order.index(s) for s, _ in p if s in order), default=None) for p in lead_paths
    ]
    assert counts == [sum(1 for f in furthest if f is not None and f >= k) for k in range(4)]
    assert sum(s.leads for s in report.by_source) == len(lead_paths)
    data = report.to_json()
    assert {"stages", "by_source", "totals"} <= set(data)
    for stage_json in data["stages"]:
        assert {"id", "title", "reached", "conversion_from_previous", "conversion_from_first",
                "dropped", "median_seconds_from_previous"} <= set(stage_json)  # fmt: skip
    for source_json in data["by_source"]:
        assert {"source", "stages"} <= set(source_json)
    html = format_report_html(report, lang="ru")
    assert check_telegram_html(html) is None and len(html) <= 4096


# -- the admin's lead card and the benchmark's generator ----------------------------------


async def test_lead_card(
    sessions: async_sessionmaker[AsyncSession], report_script: Script
) -> None:
    from funnel.core.models import Touch
    from funnel.reports.lead_card import lead_card
    from handlers.views.lead_card import format_lead_card_html

    b = Builder()
    a = b.lead(
        [("new", 0), ("engaged", 60), ("qualified", 120)], source="<ads>", temperature="hot"
    )
    b.answer(a, "need", "career", "career", score=30)
    b.answer(a, "timing", None, "<скоро> & быстро", score=5)
    b.answer(a, "need", "fun", "fun", superseded=True)
    b.purchase(a, 6900)
    gone = b.lead([("new", 0)], deleted=True)
    await b.save(sessions)
    async with sessions() as session, session.begin():
        session.add(Touch(lead_id=a, campaign="nurture", step=1, cycle=1, due_at=NOW,
                          status="sent", sent_at=NOW, created_at=NOW))  # fmt: skip
    async with sessions() as session:
        card = await lead_card(session, report_script, a)
        forgotten = await lead_card(session, report_script, gone)
        assert await lead_card(session, report_script, 999) is None
    assert card is not None and forgotten is not None
    assert [(x.question, x.answer, x.score) for x in card.answers] == [
        ("need", "Сменить профессию", 30),
        ("timing", "<скоро> & быстро", 5),
    ]
    assert [h.to_title for h in card.history] == ["Нажал «Старт»", "Ответил", "Квалифицирован"]
    assert card.history[0].from_title is None
    assert card.touches[0].campaign == "nurture" and card.purchases[0].amount == 6900
    html = format_lead_card_html(card, lang="ru")
    assert check_telegram_html(html) is None and len(html) <= 4096
    assert "&lt;скоро&gt; &amp; быстро — +5" in html and "&lt;ads&gt;" in html
    assert "Итого: 35" in html
    anonymous = format_lead_card_html(forgotten, lang="ru")
    assert "данные удалены" in anonymous and "Лид2" not in anonymous
    assert check_telegram_html(anonymous) is None
    english = format_lead_card_html(card, lang="en")
    assert check_telegram_html(english) is None and "Total: 35" in english
    assert "<b>Lead #" in english and "🔥 hot" in english and "Лид #" not in english
    assert "data deleted" in format_lead_card_html(forgotten, lang="en")


def test_bench_generator_smoke(tmp_path: Path) -> None:
    from bench import bench_report

    # A small dataset through the real generator and report; the 1M run is done by hand.
    code = bench_report.main(["--leads", "300", "--runs", "1", "--target", "60",
                              "--data-dir", str(tmp_path)])  # fmt: skip
    assert code == 0
    assert bench_report.ready(tmp_path / "report-300.sqlite", 300)
