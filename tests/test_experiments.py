"""A/B tests and holdouts in funnel/: the script's checks, sticky assignment, the statistics
(interval coverage, the sequential rule's error rate when read every day), exposures written
with the message that shows a variant, the report, and holdouts with their lift."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.core import store
from funnel.core.clock import FakeClock
from funnel.core.models import Exposure, Lead, StageEvent, Touch
from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue
from funnel.experiments import assignment, stats
from funnel.experiments.holdout import HELD_OUT
from funnel.experiments.report import ab_report
from funnel.followups import decision
from funnel.followups.rendering import render_touch
from funnel.reports.campaign_effect import campaign_report
from funnel.script.loading import ScriptError, parse_script
from funnel.script.schema import Script
from handlers.views.campaigns import format_campaign_report_html, format_campaign_report_text
from handlers.views.experiments import format_ab_report_html, format_ab_report_text
from tests.conftest import RU_SCRIPT

RU = RU_SCRIPT.read_text(encoding="utf-8")

WELCOME_TEST = """
experiments:
  - id: welcome_short
    title: "Короткое приветствие"
    target: texts.welcome
    metric: qualified
    variants:
      - {id: control, weight: 50}
      - {id: short, weight: 50, text: "Привет, {first_name}! 4 вопроса — и подберём курс."}
"""


def with_experiments(block: str, source: str = RU) -> Script:
    return parse_script(source + block, "ru.yaml")


def problems(block: str, source: str = RU) -> list[str]:
    with pytest.raises(ScriptError) as caught:
        parse_script(source + block, "ru.yaml")
    return caught.value.problems


def line_of(text: str, needle: str, source: str = RU) -> int:
    """The 1-based line of `needle` (in the appended `text`) in the whole script."""
    return source.count("\n") + text[: text.index(needle)].count("\n") + 1


# -- the script's checks ------------------------------------------------------------------


def test_an_experiment_and_a_holdout_load() -> None:
    script = with_experiments(WELCOME_TEST)
    experiment = script.experiment("welcome_short")
    assert experiment is not None and experiment.min_effect == pytest.approx(0.05)
    assert [v.id for v in experiment.variants] == ["control", "short"]
    held = parse_script(
        RU.replace("    kind: winback\n", "    kind: winback\n    holdout: 10%\n", 1)
    )
    campaign = held.campaign("winback_not_now")
    assert campaign is not None and campaign.holdout == pytest.approx(0.10)


@pytest.mark.parametrize(
    ("target", "needle", "said"),
    [
        ("texts.welcom", "target: texts.welcom", "no text 'welcom'"),
        ("texts.stop_button", "target: texts.stop_button", "cannot be tested"),
        ("questions.nope.text", "target: questions.nope", "no question 'nope'"),
        ("questions.need.options.zz.label", "target: questions.need.options", "no option 'zz'"),
        ("outcomes.lukewarm.text", "target: outcomes.lukewarm", "hot, warm, cold"),
        ("campaigns.nurture_dialogue.steps.3.text", "target: campaigns", "steps 1 to 2"),
        ("campaigns.nurture_dialogue.steps.0.text", "target: campaigns", "steps 1 to 2"),
        ("campaigns.nope.steps.1.text", "target: campaigns", "no campaign 'nope'"),
        ("welcome", "target: welcome", "not a text of this script"),
    ],
)
def test_an_unknown_target_is_refused_at_its_line(target: str, needle: str, said: str) -> None:
    block = f"""
experiments:
  - id: x
    title: X
    target: {target}
    variants:
      - {{id: a}}
      - {{id: b, text: "B"}}
"""
    found = problems(block)
    assert len(found) == 1 and said in found[0], found
    assert found[0].startswith(f"ru.yaml:{line_of(block, needle)}:"), found


def test_bad_winner_weights_and_duplicate_variants_are_refused_at_their_lines() -> None:
    block = """
experiments:
  - id: a
    title: A
    target: texts.help
    winner: nobody
    variants:
      - {id: control}
      - {id: b, text: "B"}
  - id: b
    title: B
    target: texts.finished
    variants:
      - {id: control}
      - {id: zero, weight: 0, text: "Z"}
  - id: c
    title: C
    target: texts.stopped
    variants:
      - {id: same}
      - {id: same, text: "S"}
"""
    found = problems(block)
    assert any("winner 'nobody' is not one of its variants" in p for p in found), found
    assert any("weight must be above 0" in p for p in found), found
    assert any("two variants with the id 'same'" in p for p in found), found
    weight = next(p for p in found if "weight" in p)
    assert weight.startswith(f"ru.yaml:{line_of(block, 'weight: 0')}:")


def test_a_variant_may_use_only_the_placeholders_its_target_has() -> None:
    # An outcome is not shown with a question: its number is unknown there.
    block = """
experiments:
  - id: hot
    title: Hot
    target: outcomes.hot.text
    variants:
      - {id: control}
      - {id: numbered, text: "Вопрос {question_number}"}
      - {id: typo, text: "Привет, {firstname}"}
  - id: label
    title: Label
    target: questions.need.options.career.label
    variants:
      - {id: control}
      - {id: named, text: "Для {first_name}"}
"""
    found = problems(block)
    assert any("{question_number} is unknown where this text is shown" in p for p in found)
    assert any("unknown placeholder {firstname}" in p for p in found), found
    assert any("a button label cannot have {placeholders}" in p for p in found), found
    line = line_of(block, '{id: numbered, text: "Вопрос')
    assert any(p.startswith(f"ru.yaml:{line}:") for p in found), found
    # Above a question its number is known.
    with_experiments("""
experiments:
  - id: need
    title: Need
    target: questions.need.text
    variants:
      - {id: control}
      - {id: b, text: "<b>{question_number}/{questions_total}</b> Зачем?"}
""")


def test_two_experiments_on_one_text_and_an_unknown_metric_are_refused() -> None:
    block = (
        WELCOME_TEST
        + """
  - id: welcome_long
    title: Long
    target: texts.welcome
    metric: paid
    variants:
      - {id: control}
      - {id: long, text: "Long"}
"""
    )
    found = problems(block)
    assert any("already tests texts.welcome" in p for p in found), found
    assert any("metric 'paid' is not one of the stages" in p for p in found), found


@pytest.mark.parametrize("value", ["60%", "-1%", "ten", "true", "[1]"])
def test_a_holdout_out_of_bounds_is_refused(value: str) -> None:
    source = RU.replace("    kind: winback\n", f"    kind: winback\n    holdout: {value}\n", 1)
    found = problems("", source)
    assert any("holdout" in p for p in found), found


# -- assignment ---------------------------------------------------------------------------


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    script = with_experiments(WELCOME_TEST.replace("weight: 50}", "weight: 30}", 1))
    experiment = script.experiment("welcome_short")
    assert experiment is not None
    first = [assignment.assign(experiment, lead_id).id for lead_id in range(10_000)]
    again = [assignment.assign(experiment, lead_id).id for lead_id in range(10_000)]
    assert first == again
    share = Counter(first)["control"] / 10_000
    # 30 : 50 is 37.5%; 10k draws have a standard error of 0.5 points.
    assert abs(share - 0.375) < 0.02, share
    # Another experiment splits the same leads independently.
    other = experiment.model_copy(update={"id": "other"})
    both = Counter((a, assignment.assign(other, i).id) for i, a in enumerate(first))
    assert all(n > 1000 for n in both.values()), both


def test_a_winner_is_everyones_variant() -> None:
    script = with_experiments(WELCOME_TEST + "    winner: short\n")
    experiment = script.experiment("welcome_short")
    assert experiment is not None
    assert {assignment.assign(experiment, i).id for i in range(500)} == {"short"}


def test_holdout_membership_is_sticky_and_near_its_share() -> None:
    script = parse_script(
        RU.replace("    kind: winback\n", "    kind: winback\n    holdout: 10%\n", 1)
    )
    campaign = script.campaign("winback_not_now")
    assert campaign is not None
    held = [assignment.in_holdout(campaign, i) for i in range(10_000)]
    assert held == [assignment.in_holdout(campaign, i) for i in range(10_000)]
    assert abs(sum(held) / 10_000 - 0.10) < 0.01


# -- statistics ---------------------------------------------------------------------------


def test_wilson_and_newcombe_intervals_cover_the_true_rate() -> None:
    rng = random.Random(11)
    covered = covered_diff = 0
    rounds = 2000
    for _ in range(rounds):
        n = rng.randint(20, 300)
        k = sum(rng.random() < 0.15 for _ in range(n))
        covered += stats.wilson(k, n).low <= 0.15 <= stats.wilson(k, n).high
        k2 = sum(rng.random() < 0.25 for _ in range(n))
        interval = stats.newcombe(k, n, k2, n)
        covered_diff += interval.low <= 0.10 <= interval.high
    assert covered / rounds >= 0.93, covered / rounds
    assert covered_diff / rounds >= 0.93, covered_diff / rounds
    assert stats.wilson(0, 10).low == pytest.approx(0.0, abs=1e-12)
    assert stats.wilson(0, 10).high > 0.2
    assert stats.wilson(0, 0) == stats.Interval(0.0, 1.0)


def test_chi_square_tail_matches_the_tables() -> None:
    assert stats.chi_square_sf(3.841, 1) == pytest.approx(0.05, abs=1e-3)
    assert stats.chi_square_sf(10.83, 1) == pytest.approx(0.001, abs=1e-4)
    assert stats.chi_square_sf(11.07, 5) == pytest.approx(0.05, abs=1e-3)
    assert stats.chi_square_sf(0, 3) == 1.0
    assert not stats.sample_ratio([500, 510], [50, 50]).mismatch
    assert stats.sample_ratio([500, 380], [50, 50]).mismatch
    assert not stats.sample_ratio([300, 700], [30, 70]).mismatch


def test_the_sequential_rule_keeps_its_false_positive_rate_under_daily_peeking() -> None:
    """500 A/A tests, each read every day for 30 days (20 leads per variant a day): the share
    that ever shows a "better" or "worse" verdict stays within α = 5%."""
    rng = random.Random(2026)
    false_positives = 0
    for _ in range(500):
        kc = nc = kv = nv = 0
        rate = rng.choice([0.05, 0.2, 0.5])
        for _day in range(30):
            nc += 20
            nv += 20
            kc += sum(rng.random() < rate for _ in range(20))
            kv += sum(rng.random() < rate for _ in range(20))
            verdict = stats.compare((kc, nc), (kv, nv), min_effect=0.05).verdict
            if verdict in ("better", "worse"):
                false_positives += 1
                break
    assert false_positives / 500 <= 0.05, false_positives


def test_the_sequential_rule_finds_a_real_difference_and_a_real_sameness() -> None:
    found = stats.compare((200, 1000), (300, 1000), min_effect=0.05)
    assert found.verdict == "better" and found.interval.low > 0
    assert stats.compare((300, 1000), (200, 1000), min_effect=0.05).verdict == "worse"
    same = stats.compare((20_000, 100_000), (20_100, 100_000), min_effect=0.05)
    assert same.verdict == "same"
    assert stats.compare((2, 10), (9, 10), min_effect=0.05).verdict == "open"  # too few
    # The always-valid interval is wider than the fixed-sample one: the price of peeking.
    fixed = stats.newcombe(200, 1000, 300, 1000)
    assert found.interval.high - found.interval.low > fixed.high - fixed.low


def test_leads_needed_grow_as_the_effect_shrinks() -> None:
    big = stats.leads_needed(0.2, 0.10)
    small = stats.leads_needed(0.2, 0.05)
    assert stats.MIN_PER_VARIANT <= big < small
    # At that size a true difference of min_effect is found most of the time.
    rng = random.Random(5)
    hits = 0
    for _ in range(200):
        kc = sum(rng.random() < 0.2 for _ in range(big))
        kv = sum(rng.random() < 0.3 for _ in range(big))
        hits += stats.compare((kc, big), (kv, big), min_effect=0.10).verdict == "better"
    assert hits / 200 >= 0.7, hits


# -- exposures through the dialogue and the campaigns ------------------------------------


def profile(n: int) -> Profile:
    return Profile(user_id=1000 + n, chat_id=1000 + n, first_name=f"Лид {n}")


async def start(sessions: async_sessionmaker[AsyncSession], script: Script, clock: FakeClock,
                n: int) -> str:  # fmt: skip
    async with sessions() as session:
        result = await Dialogue(session, script, clock).start(profile(n), None)
        await session.commit()
    return result.replies[0].text


async def exposures(sessions: async_sessionmaker[AsyncSession]) -> list[Exposure]:
    async with sessions() as session:
        return list((await session.scalars(select(Exposure).order_by(Exposure.id))).all())


async def test_the_welcome_variant_is_shown_and_its_exposure_recorded_once(
    sessions: Any, clock: FakeClock
) -> None:
    script = with_experiments(WELCOME_TEST)
    experiment = script.experiment("welcome_short")
    assert experiment is not None
    texts = [await start(sessions, script, clock, n) for n in range(40)]
    seen = await exposures(sessions)
    assert len(seen) == 40
    for text, exposure in zip(texts, seen, strict=True):
        assert exposure.variant == assignment.assign(experiment, exposure.lead_id).id
        assert exposure.stage == "new" and exposure.at == clock.now()
        short = "4 вопроса — и подберём курс" in text
        assert short == (exposure.variant == "short"), text
    assert {e.variant for e in seen} == {"control", "short"}
    # The same leads again: same texts, still one exposure each, first time kept.
    clock.advance(timedelta(hours=1))
    again = [await start(sessions, script, clock, n) for n in range(40)]
    assert len(await exposures(sessions)) == 40
    assert [("подберём курс" in a) for a in again] == [("подберём курс" in b) for b in texts]
    assert all(e.at < clock.now() for e in await exposures(sessions))


async def test_a_rolled_back_message_records_no_exposure(sessions: Any, clock: FakeClock) -> None:
    script = with_experiments(WELCOME_TEST)
    async with sessions() as session:
        await Dialogue(session, script, clock).start(profile(1), None)
        await session.rollback()
    assert await exposures(sessions) == []


async def test_no_experiment_no_exposure_and_a_winner_no_exposure(
    sessions: Any, clock: FakeClock, script: Script
) -> None:
    await start(sessions, script, clock, 1)
    stopped = with_experiments(WELCOME_TEST + "    winner: short\n")
    text = await start(sessions, stopped, clock, 2)
    assert "подберём курс" in text
    assert await exposures(sessions) == []


async def test_question_option_and_outcome_variants(sessions: Any, clock: FakeClock) -> None:
    script = with_experiments("""
experiments:
  - id: need_label
    title: Label
    target: questions.need.options.career.label
    variants:
      - {id: a, text: "Новая профессия"}
      - {id: b, text: "Новая работа"}
  - id: hot_text
    title: Hot
    target: outcomes.hot.text
    variants:
      - {id: a, text: "Вы нам подходите, {first_name}!"}
      - {id: b, text: "Отлично подходите, {first_name}!"}
""")
    async with sessions() as session:
        dialogue = Dialogue(session, script, clock)
        first = await dialogue.start(profile(7), None)
        await session.commit()
    labels = [b.label for row in first.replies[0].buttons for b in row]
    assert labels[0] in ("Новая профессия", "Новая работа")
    final = None
    for question, option in (("need", "career"), ("timing", "now"), ("budget", "full"),
                             ("authority", "self")):  # fmt: skip
        async with sessions() as session:
            final = await Dialogue(session, script, clock).answer(
                profile(7), question, option_id=option
            )
            await session.commit()
    assert final is not None
    assert "подходите, Лид 7!" in final.replies[0].text
    seen = {e.experiment: e for e in await exposures(sessions)}
    assert set(seen) == {"need_label", "hot_text"}
    assert seen["hot_text"].stage == "qualified"
    label_variant = "a" if labels[0] == "Новая профессия" else "b"
    assert seen["need_label"].variant == label_variant


async def test_a_campaign_step_variant_is_recorded_when_rendered(
    sessions: Any, clock: FakeClock
) -> None:
    script = with_experiments("""
experiments:
  - id: nudge
    title: Nudge
    target: campaigns.nurture_dialogue.steps.1.text
    variants:
      - {id: control}
      - {id: short, text: "{first_name}, продолжим? Вопрос {question_number}."}
""")
    campaign = script.campaign("nurture_dialogue")
    assert campaign is not None
    async with sessions() as session:
        for n in range(20):
            lead = store.new_lead(profile(n), source="t", stage="engaged", position="timing",
                                  version="v", at=clock.now())  # fmt: skip
            session.add(lead)
        await session.flush()
        leads = (await session.scalars(select(Lead))).all()
        replies = {lead.id: render_touch(script, campaign, 1, lead, clock.now()) for lead in leads}
        await session.commit()
    seen = {e.lead_id: e.variant for e in await exposures(sessions)}
    assert len(seen) == 20
    for lead_id, reply in replies.items():
        assert ("продолжим? Вопрос 2." in reply.text) == (seen[lead_id] == "short")


# -- the report ---------------------------------------------------------------------------


async def add_exposed(
    session: AsyncSession, clock: FakeClock, n: int, variant: str, reached: list[str]
) -> None:
    lead = store.new_lead(profile(n), source="t", stage="new", position="need", version="v",
                          at=clock.now())  # fmt: skip
    session.add(lead)
    await session.flush()
    # A stage entered before the exposure does not count for it.
    session.add(StageEvent(lead_id=lead.id, from_stage=None, to_stage="new",
                           at=clock.now() - timedelta(minutes=1), cause="start"))  # fmt: skip
    session.add(Exposure(lead_id=lead.id, experiment="welcome_short", variant=variant,
                         stage="new", at=clock.now()))  # fmt: skip
    for stage in reached:
        session.add(StageEvent(lead_id=lead.id, from_stage="new", to_stage=stage,
                               at=clock.now() + timedelta(hours=1), cause="answered"))  # fmt: skip


async def test_the_report_counts_conversions_after_the_exposure(
    sessions: Any, clock: FakeClock
) -> None:
    script = with_experiments(WELCOME_TEST)
    async with sessions() as session:
        for n in range(10):
            reached = ["engaged", "qualified"] if n < 4 else ["engaged"] if n < 8 else []
            if n == 0:
                reached += ["consultation", "customer"]
            await add_exposed(session, clock, n, "control", reached)
        for n in range(10, 20):
            await add_exposed(session, clock, n, "short", ["engaged", "qualified"])
        await session.commit()
    async with sessions() as session:
        report = await ab_report(session, script, clock.now())
    experiment = report.experiments[0]
    control, short = experiment.variants
    assert (control.exposed, control.metric.conversions, control.booked.conversions,
            control.customer.conversions) == (10, 4, 1, 1)  # fmt: skip
    assert (short.exposed, short.metric.conversions) == (10, 10)
    assert experiment.status == "not_enough_data" and experiment.more_needed > 0
    assert short.comparison is not None and short.comparison.diff == pytest.approx(0.6)
    for lang in ("ru", "en"):
        html = format_ab_report_html(report, script, lang=lang)
        assert "welcome_short" in html and "60" in html
        assert "welcome_short" in format_ab_report_text(report, script, lang=lang)
    data = report.to_json()["experiments"][0]
    assert data["variants"][1]["metric"]["conversions"] == 10
    assert data["status"] == "not_enough_data"


async def test_a_removed_experiment_keeps_its_history(
    sessions: Any, clock: FakeClock, script: Script
) -> None:
    async with sessions() as session:
        await add_exposed(session, clock, 1, "short", ["engaged"])
        await session.commit()
    async with sessions() as session:
        report = await ab_report(session, script, clock.now())
    assert [e.id for e in report.experiments] == ["welcome_short"]
    assert not report.experiments[0].in_script
    assert report.experiments[0].variants[0].exposed == 1
    assert "welcome_short" in format_ab_report_html(report, script, lang="ru")


# -- holdouts -----------------------------------------------------------------------------


def test_a_holdout_lead_is_held_out_exactly_when_a_send_would_happen() -> None:
    script = parse_script(
        RU.replace("    kind: nurture\n", "    kind: nurture\n    holdout: 50%\n", 1)
    )
    campaign = script.campaign("nurture_dialogue")
    assert campaign is not None
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    now = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    zone = ZoneInfo("Europe/Moscow")
    kinds = Counter()
    for lead_id in range(1, 200):
        lead = Lead(id=lead_id, chat_id=5, stage="engaged", cycle=1, position="timing",
                    opted_out_at=None, blocked_at=None, deleted_at=None, exit_reason=None,
                    temperature=None)  # fmt: skip
        touch = Touch(id=lead_id, lead_id=lead_id, campaign="nurture_dialogue", step=1, cycle=1,
                      due_at=now, status="planned")  # fmt: skip
        result = decision.decide(touch, lead, script, now, [], zone)
        expected = decision.HoldOut if assignment.in_holdout(campaign, lead_id) else decision.Send
        assert isinstance(result, expected)
        kinds[type(result).__name__] += 1
        # Outside the window both wait alike; a lead who replied is cancelled alike.
        night = datetime(2026, 3, 3, 22, 0, tzinfo=UTC)
        assert isinstance(decision.decide(touch, lead, script, night, [], zone), decision.Postpone)
        lead.cycle = 2
        assert isinstance(decision.decide(touch, lead, script, now, [], zone), decision.Cancel)
    assert kinds["HoldOut"] > 60 and kinds["Send"] > 60


async def test_the_holdout_lift_on_campaigns(sessions: Any, clock: FakeClock) -> None:
    script = parse_script(
        RU.replace("    kind: nurture\n", "    kind: nurture\n    holdout: 10%\n", 1)
    )
    now = clock.now()
    async with sessions() as session:
        for n in range(60):
            held = n >= 40
            lead = store.new_lead(profile(n), source="t", stage="engaged", position="timing",
                                  version="v", at=now)  # fmt: skip
            session.add(lead)
            await session.flush()
            session.add(Touch(lead_id=lead.id, campaign="nurture_dialogue", step=1, cycle=1,
                              due_at=now, created_at=now, status=HELD_OUT if held else "sent",
                              sent_at=None if held else now))  # fmt: skip
            # 12 of the 40 messaged came back; 4 of the 20 held out did anyway.
            if (not held and n < 12) or (held and n < 44):
                session.add(StageEvent(lead_id=lead.id, from_stage="engaged", to_stage="qualified",
                                       at=now + timedelta(days=1), cause="answered"))  # fmt: skip
            # Too late to count: after the 7-day window.
            if held and n == 59:
                session.add(StageEvent(lead_id=lead.id, from_stage="engaged", to_stage="qualified",
                                       at=now + timedelta(days=9), cause="answered"))  # fmt: skip
        await session.commit()
    async with sessions() as session:
        report = await campaign_report(session, script, now)
    step = next(c for c in report.campaigns if c.id == "nurture_dialogue").steps[0]
    assert (step.sent, step.advanced, step.held_out, step.held_out_advanced) == (40, 12, 20, 4)
    lift = step.lift
    assert lift is not None
    assert lift.difference == pytest.approx(0.3 - 0.2)
    assert lift.anyway == 8  # 40 messaged × 20% who come back anyway
    assert lift.interval.low < lift.difference < lift.interval.high
    text = format_campaign_report_text(report, lang="ru")
    assert "примерно 8 прошли бы и без него" in text and "+10" in text
    assert "about 8 would have anyway" in format_campaign_report_text(report, lang="en")
    assert "Контрольная группа" in format_campaign_report_html(report, lang="ru")


async def test_a_split_that_drifts_from_the_weights_is_flagged(
    sessions: Any, clock: FakeClock
) -> None:
    script = with_experiments(WELCOME_TEST)
    async with sessions() as session:
        for n in range(150):
            await add_exposed(session, clock, n, "control" if n < 100 else "short", [])
        await session.commit()
    async with sessions() as session:
        report = await ab_report(session, script, clock.now())
    experiment = report.experiments[0]
    assert experiment.sample_ratio.mismatch and experiment.sample_ratio.p_value < 0.001
    assert "⚠️" in format_ab_report_html(report, script, lang="ru")
    assert "drifted from the weights" in format_ab_report_text(report, script, lang="en")


async def test_a_stopped_test_shows_its_winner_and_keeps_its_history(
    sessions: Any, clock: FakeClock
) -> None:
    script = with_experiments(WELCOME_TEST + "    winner: short\n")
    async with sessions() as session:
        for n in range(6):
            await add_exposed(session, clock, n, "control" if n % 2 else "short", ["engaged"])
        await session.commit()
    # New leads all see the winner and add no exposure.
    assert "подберём курс" in await start(sessions, script, clock, 99)
    async with sessions() as session:
        report = await ab_report(session, script, clock.now())
    experiment = report.experiments[0]
    assert (experiment.status, experiment.leader) == ("stopped", "short")
    assert [v.exposed for v in experiment.variants] == [3, 3]
    assert "победил «short»" in format_ab_report_html(report, script, lang="ru")
    assert report.to_json()["experiments"][0]["status"] == "stopped"


async def test_an_unknown_experiment_id_gives_an_empty_report(
    sessions: Any, clock: FakeClock
) -> None:
    script = with_experiments(WELCOME_TEST)
    async with sessions() as session:
        assert (await ab_report(session, script, clock.now(), "nope")).experiments == []
        assert len((await ab_report(session, script, clock.now())).experiments) == 1


async def test_the_command_line_prints_the_report_as_text_and_json(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys
    from datetime import UTC, datetime

    from bot import db
    from tests.conftest import ROOT

    path = tmp_path / "ru.yaml"
    path.write_text(RU + WELCOME_TEST, encoding="utf-8")
    script = parse_script(RU + WELCOME_TEST)
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    engine = db.create_engine(url)
    await db.migrate(engine)
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    try:
        for n in range(12):
            await start(db.sessionmaker(engine), script, clock, n)
    finally:
        await engine.dispose()
    env = {**os.environ, "DATABASE_URL": url, "SCRIPT_PATH": str(path)}
    env.pop("BOT_TOKEN", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bot", "ab", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    run = cli("--json")
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    [experiment] = data["experiments"]
    assert experiment["id"] == "welcome_short" and experiment["status"] == "not_enough_data"
    assert sum(v["exposed"] for v in experiment["variants"]) == 12
    assert experiment["more_needed_per_variant"] > 0
    text = cli()
    assert text.returncode == 0 and "welcome_short" in text.stdout and "Пока мало" in text.stdout
    missing = cli("nope")
    assert missing.returncode == 2 and "welcome_short" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize("name", ["ru.yaml", "en.yaml"])
def test_the_shipped_example_loads_once_switched_on(name: str) -> None:
    source = (RU_SCRIPT.parent / name).read_text(encoding="utf-8")
    head, _, example = source.partition("\n# experiments:\n")
    assert example, "the example is missing"
    live = (
        head
        + "\nexperiments:\n"
        + "\n".join(line.removeprefix("# ") for line in example.splitlines())
    )
    live = live.replace("    kind: winback\n", "    kind: winback\n    holdout: 10%\n", 1)
    script = parse_script(live, name)
    assert script.experiment("welcome_short") is not None
    assert any(c.holdout == pytest.approx(0.1) for c in script.campaigns)


def test_a_text_shared_by_two_keys_and_an_overlong_label_are_refused() -> None:
    same = RU.replace(
        "  help: |-\n    Я помогаю подобрать формат обучения {school_prep}.\n"
        "    /start — начать или продолжить\n    /stop — больше не присылать сообщения\n"
        "    /forget — удалить мои ответы и данные\n",
        '  help: "Хорошо, ничего не удаляем."\n',
    )
    assert same != RU
    block = """
experiments:
  - id: help
    title: Help
    target: texts.help
    variants:
      - {id: control}
      - {id: b, text: "B"}
  - id: label
    title: Label
    target: questions.need.options.career.label
    variants:
      - {id: control}
      - {id: long, text: "LONG"}
""".replace("LONG", "x" * 65)
    found = problems(block, same)
    assert any("texts.forget_cancelled is the very same text" in p for p in found), found
    assert any("a button label is at most 64 characters" in p for p in found), found
