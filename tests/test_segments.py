"""Segments: the filter admins type (every bad word named, never a crash) and the leads it
picks from a fixture of leads, with opted-out, blocked and forgotten leads always left out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel.broadcasts.segments import (
    MAX_WINDOW,
    count_segment,
    parse_segment,
    sample_segment,
    segment_condition,
    segment_lead_ids,
)
from funnel.core import store
from funnel.core.errors import InputError
from funnel.core.models import Answer, Lead
from funnel.script.schema import Script
from handlers.views.broadcasts import ERRORS

NOW = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def test_a_full_filter_parses(script: Script) -> None:
    segment = parse_segment(
        "stage=qualified,consultation temperature=hot source=vk_ads answer:need=career,growth "
        "silent>3d version=2026-11-1",
        script,
    )
    assert segment.stages == ("qualified", "consultation")
    assert segment.temperatures == ("hot",)
    assert segment.sources == ("vk_ads",)
    assert segment.answers == (("need", ("career", "growth")),)
    assert segment.silent_over == timedelta(days=3)
    assert segment.versions == ("2026-11-1",)
    assert parse_segment("active<2d", script).active_within == timedelta(days=2)
    assert parse_segment("all", script).everyone


@pytest.mark.parametrize(
    ("text", "code", "token"),
    [
        ("", "segment.empty", None),
        ("   ", "segment.empty", None),
        ("stage=nonsense", "segment.bad_value", "stage=nonsense"),
        ("stage=", "segment.empty_value", "stage="),
        ("stage=qualified,,new", "segment.empty_value", "stage=qualified,,new"),
        ("temperature=lukewarm", "segment.bad_value", "temperature=lukewarm"),
        ("colour=red", "segment.unknown_key", "colour=red"),
        ("hello", "segment.unknown_word", "hello"),
        ("silent>forever", "segment.bad_duration", "silent>forever"),
        ("silent>99999999d", "segment.too_long_ago", "silent>99999999d"),
        ("active<3651d", "segment.too_long_ago", "active<3651d"),
        ("silent>999999999999999w", "segment.bad_duration", "silent>999999999999999w"),
        ("silent<3d", "segment.bad_activity", "silent<3d"),
        ("active>3d", "segment.bad_activity", "active>3d"),
        ("stage=new stage=engaged", "segment.repeated", "stage=engaged"),
        ("answer:nope=career", "segment.bad_question", "answer:nope=career"),
        ("answer:need=rich", "segment.bad_value", "answer:need=rich"),
        ("source=vk<ads>", "segment.bad_source", "source=vk<ads>"),
        ("version=a;drop", "segment.bad_version", "version=a;drop"),
        ("all stage=new", "segment.all_with_others", None),
        ("silent>3d active<2d", "segment.contradiction", None),
        ("stage=" + ",".join(["new"] * 51), "segment.too_many_values", None),
        ("x" * 1001, "segment.too_long", None),
    ],
)
def test_bad_words_are_named(script: Script, text: str, code: str, token: str | None) -> None:
    with pytest.raises(InputError) as caught:
        parse_segment(text, script)
    assert caught.value.code == code
    if token is not None:
        assert caught.value.fields["token"] == token


def test_a_refusal_lists_what_is_allowed(script: Script) -> None:
    with pytest.raises(InputError) as caught:
        parse_segment("stage=vip", script)
    assert "qualified" in caught.value.fields["allowed"]
    with pytest.raises(InputError) as unknown:
        parse_segment("colour=red", script)
    assert "temperature" in unknown.value.fields["keys"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_segment_or_a_refusal(text: str) -> None:
    from tests.conftest import RU_SCRIPT

    script = _cached(RU_SCRIPT)
    try:
        segment = parse_segment(text, script)
    except InputError as refusal:
        # Every refusal has its words in the catalogs: the admin never reads a raw code.
        assert refusal.code in ERRORS
    else:
        assert segment.text == " ".join(text.split())


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["silent>", "active<"]),
    st.integers(min_value=1, max_value=10**15),
    st.sampled_from("smhdw"),
)
def test_any_number_is_a_window_or_a_refusal(word: str, amount: int, unit: str) -> None:
    """A huge number is refused in words; an accepted one builds its SQL (no overflow)."""
    from tests.conftest import RU_SCRIPT

    try:
        segment = parse_segment(f"{word}{amount}{unit}", _cached(RU_SCRIPT))
    except InputError as refusal:
        assert refusal.code in ("segment.too_long_ago", "segment.bad_duration")
        assert refusal.code in ERRORS
    else:
        window = segment.silent_over or segment.active_within
        assert window is not None and window <= MAX_WINDOW
        segment_condition(segment, NOW)


_SCRIPTS: dict[object, Script] = {}


def _cached(path: object) -> Script:
    from funnel.script.loading import load_script

    if path not in _SCRIPTS:
        _SCRIPTS[path] = load_script(path)  # type: ignore[arg-type]
    return _SCRIPTS[path]


async def _lead(
    session: AsyncSession, user_id: int, *, stage: str = "qualified", source: str = "vk_ads",
    temperature: str | None = "hot", quiet_days: float = 0, **fields: object,
) -> Lead:  # fmt: skip
    at = NOW - timedelta(days=quiet_days)
    lead = store.new_lead(
        store.Profile(user_id=user_id, chat_id=user_id, first_name="Ann"),
        source=source, stage=stage, position=None, version="python_course@2026-11-1", at=at,
    )  # fmt: skip
    lead.temperature = temperature
    for name, value in fields.items():
        setattr(lead, name, value)
    session.add(lead)
    await session.flush()
    return lead


async def test_recipients_are_chosen_on_a_fixture(
    sessions: async_sessionmaker[AsyncSession], script: Script
) -> None:
    async with sessions() as session:
        hot_quiet = await _lead(session, 1, quiet_days=5)
        hot_recent = await _lead(session, 2, quiet_days=1)
        warm = await _lead(session, 3, temperature="warm", quiet_days=5)
        other_source = await _lead(session, 4, source="direct", quiet_days=5)
        engaged = await _lead(session, 5, stage="engaged", quiet_days=5)
        await _lead(session, 6, quiet_days=5, opted_out_at=NOW)
        await _lead(session, 7, quiet_days=5, blocked_at=NOW)
        forgotten = await _lead(session, 8, quiet_days=5)
        await store.forget_lead(session, forgotten, NOW)
        old_version = await _lead(session, 9, quiet_days=5, script_version="python_course@1")
        for lead, option in ((hot_quiet, "career"), (hot_recent, "growth"), (warm, "career")):
            session.add(Answer(lead_id=lead.id, question="need", value=option, option=option,
                               score=0, at=NOW))  # fmt: skip
        # An answer given before "start over" no longer counts.
        session.add(Answer(lead_id=old_version.id, question="need", value="career",
                           option="career", score=0, at=NOW, superseded=True))  # fmt: skip
        await session.commit()

        async def ids(text: str) -> list[int]:
            segment = parse_segment(text, script)
            found = await segment_lead_ids(session, segment, NOW, 0, 100)
            assert await count_segment(session, segment, NOW) == len(found)
            return found

        assert await ids("all") == [
            hot_quiet.id, hot_recent.id, warm.id, other_source.id, engaged.id, old_version.id
        ]  # fmt: skip
        assert await ids("stage=qualified temperature=hot source=vk_ads silent>3d") == [
            hot_quiet.id, old_version.id
        ]  # fmt: skip
        assert await ids("temperature=hot active<2d") == [hot_recent.id]
        assert await ids("answer:need=career") == [hot_quiet.id, warm.id]
        assert await ids("answer:need=career,growth temperature=hot") == [
            hot_quiet.id, hot_recent.id
        ]  # fmt: skip
        assert await ids("version=2026-11-1 silent>3d") == [
            hot_quiet.id, warm.id, other_source.id, engaged.id
        ]  # fmt: skip
        assert await ids("version=python_course@1") == [old_version.id]
        assert await ids("version=2026_11_1") == []  # "_" is a letter here, not a wildcard
        assert await ids("stage=engaged,consultation") == [engaged.id]
        assert await ids("source=nowhere") == []
        # Keyset batches: after a lead id, in order.
        everyone = parse_segment("all", script)
        assert await segment_lead_ids(session, everyone, NOW, warm.id, 2) == [
            other_source.id, engaged.id
        ]  # fmt: skip
        sample = await sample_segment(session, everyone, NOW, 3)
        assert len(sample) == 3 and all(lead.opted_out_at is None for lead in sample)
