"""Segments: which leads a broadcast goes to, from a short filter an admin types, e.g.
`stage=qualified,consultation temperature=hot source=vk_ads answer:need=career silent>3d`.

Words are ANDed, commas inside a word are ORs. Leads who opted out, blocked the bot or were
forgotten are never in a segment. A bad word is refused as a code naming the word and what
is allowed (funnel.core.errors.InputError), never a crash."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.errors import InputError
from funnel.core.models import Answer, Lead
from funnel.script.durations import parse_duration
from funnel.script.schema import Script

__all__ = [
    "KEYS",
    "MAX_FILTER_CHARS",
    "MAX_WINDOW",
    "Segment",
    "count_segment",
    "parse_segment",
    "sample_segment",
    "segment_condition",
    "segment_lead_ids",
]

# What an admin may write, in the order the help lists them.
KEYS = ("stage", "temperature", "source", "version", "answer:<question>", "silent>", "active<",
        "all")  # fmt: skip
MAX_FILTER_CHARS = 1000
MAX_VALUES = 50
# The longest silence or activity window a filter may name: any lead's history fits in it,
# and `now - window` stays a date (99999999d overflowed the subtraction).
MAX_WINDOW = timedelta(days=3650)
TEMPERATURES = ("hot", "warm", "cold")
_SOURCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[A-Za-z0-9_.@:-]{1,100}$")
_ACTIVITY = re.compile(r"^(silent|active)([<>])(.+)$")
_EXAMPLE = "stage=qualified temperature=hot source=vk_ads answer:need=career silent>3d"


@dataclass(frozen=True)
class Segment:
    """A parsed filter; empty fields do not filter."""

    text: str
    stages: tuple[str, ...] = ()
    temperatures: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    answers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Last activity (the last message from the lead, else its arrival) before now - this.
    silent_over: timedelta | None = None
    # Last activity after now - this.
    active_within: timedelta | None = None
    everyone: bool = field(default=False)


def _values(token: str, raw: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in raw.split(","))
    if not raw or any(not v for v in values):
        raise InputError("segment.empty_value", token=token)
    if len(values) > MAX_VALUES:
        raise InputError("segment.too_many_values", token=token, limit=MAX_VALUES)
    return tuple(dict.fromkeys(values))


def _checked(token: str, values: tuple[str, ...], allowed: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if value not in allowed:
            raise InputError(
                "segment.bad_value", token=token, value=value, allowed=", ".join(allowed)
            )
    return values


def _duration(token: str, raw: str) -> timedelta:
    try:
        window = parse_duration(raw)
    except ValueError:
        raise InputError("segment.bad_duration", token=token) from None
    if window > MAX_WINDOW:
        raise InputError("segment.too_long_ago", token=token, limit=MAX_WINDOW.days)
    return window


def parse_segment(text: str, script: Script) -> Segment:
    """The filter `text` against the script's stages and questions; InputError naming the
    first bad word otherwise."""
    if len(text) > MAX_FILTER_CHARS:
        raise InputError("segment.too_long", limit=MAX_FILTER_CHARS)
    words = text.split()
    if not words:
        raise InputError("segment.empty", keys=", ".join(KEYS), example=_EXAMPLE)
    found: dict[str, object] = {}
    answers: dict[str, tuple[str, ...]] = {}
    stage_ids = [s.id for s in (*script.stages, *script.exit_stages)]
    for word in words:
        key, eq, raw = word.partition("=")
        lowered = key.lower()
        activity = _ACTIVITY.match(word.lower())
        if word.lower() == "all":
            found["all"] = True
            continue
        if activity and not eq:
            kind, sign, amount = activity.groups()
            if (kind, sign) not in (("silent", ">"), ("active", "<")):
                raise InputError("segment.bad_activity", token=word)
            name = "silent" if kind == "silent" else "active"
            if name in found:
                raise InputError("segment.repeated", token=word)
            found[name] = _duration(word, amount)
            continue
        if not eq:
            raise InputError("segment.unknown_word", token=word, keys=", ".join(KEYS))
        if lowered.startswith("answer:"):
            question_id = key[len("answer:") :]
            question = script.question(question_id)
            if question is None:
                allowed = ", ".join(q.id for q in script.questions if q.options)
                raise InputError("segment.bad_question", token=word, allowed=allowed)
            if not question.options:
                raise InputError("segment.free_question", token=word)
            if question.id in answers:
                raise InputError("segment.repeated", token=word)
            options = [o.id for o in question.options]
            answers[question.id] = _checked(word, _values(word, raw), options)
            continue
        if lowered not in ("stage", "temperature", "source", "version"):
            raise InputError("segment.unknown_key", token=word, keys=", ".join(KEYS))
        if lowered in found:
            raise InputError("segment.repeated", token=word)
        values = _values(word, raw)
        if lowered == "stage":
            found["stage"] = _checked(word, values, stage_ids)
        elif lowered == "temperature":
            found["temperature"] = _checked(word, tuple(v.lower() for v in values), TEMPERATURES)
        elif lowered == "source":
            for value in values:
                if not _SOURCE.match(value):
                    raise InputError("segment.bad_source", token=word, value=value)
            found["source"] = values
        else:
            for value in values:
                if not _VERSION.match(value):
                    raise InputError("segment.bad_version", token=word, value=value)
            found["version"] = values
    if "all" in found and len(found) + len(answers) > 1:
        raise InputError("segment.all_with_others")
    silent = found.get("silent")
    active = found.get("active")
    assert silent is None or isinstance(silent, timedelta)
    assert active is None or isinstance(active, timedelta)
    if silent is not None and active is not None and silent >= active:
        raise InputError("segment.contradiction")
    return Segment(
        text=" ".join(words),
        stages=_tuple(found.get("stage")),
        temperatures=_tuple(found.get("temperature")),
        sources=_tuple(found.get("source")),
        versions=_tuple(found.get("version")),
        answers=tuple(answers.items()),
        silent_over=silent,
        active_within=active,
        everyone=bool(found.get("all")),
    )


def _tuple(value: object) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else ()


def segment_condition(segment: Segment, now: datetime) -> ColumnElement[bool]:
    """The SQL condition on `leads` for the segment, reachable leads only."""
    conditions: list[ColumnElement[bool]] = [
        Lead.opted_out_at.is_(None),
        Lead.blocked_at.is_(None),
        Lead.deleted_at.is_(None),
        Lead.chat_id.is_not(None),
        # An admin's test run (/test_funnel) is no audience of the school's announcements.
        Lead.is_test.is_(False),
    ]
    if segment.stages:
        conditions.append(Lead.stage.in_(segment.stages))
    if segment.temperatures:
        conditions.append(Lead.temperature.in_(segment.temperatures))
    if segment.sources:
        conditions.append(Lead.source.in_(segment.sources))
    if segment.versions:
        # "2026-11-1" names the version whatever the script's id; "python@2026-11-1" exactly.
        versions = [
            Lead.script_version == v
            if "@" in v
            else Lead.script_version.endswith("@" + v, autoescape=True)
            for v in segment.versions
        ]
        conditions.append(or_(*versions))
    for question, options in segment.answers:
        conditions.append(
            exists().where(
                Answer.lead_id == Lead.id,
                Answer.question == question,
                Answer.superseded.is_(False),
                Answer.option.in_(options),
            )
        )
    last_activity = func.coalesce(Lead.last_inbound_at, Lead.created_at)
    if segment.silent_over is not None:
        conditions.append(last_activity < now - segment.silent_over)
    if segment.active_within is not None:
        conditions.append(last_activity >= now - segment.active_within)
    return and_(*conditions)


async def count_segment(session: AsyncSession, segment: Segment, now: datetime) -> int:
    query = select(func.count()).select_from(Lead).where(segment_condition(segment, now))
    return int((await session.scalar(query)) or 0)


async def sample_segment(
    session: AsyncSession, segment: Segment, now: datetime, limit: int = 10
) -> list[Lead]:
    """The most recently arrived leads of the segment."""
    query = (
        select(Lead)
        .where(segment_condition(segment, now))
        .order_by(Lead.created_at.desc(), Lead.id.desc())
        .limit(limit)
    )
    return list((await session.scalars(query)).all())


async def segment_lead_ids(
    session: AsyncSession, segment: Segment, now: datetime, after_id: int, limit: int
) -> list[int]:
    """The segment's lead ids above `after_id`, in order: the keyset for writing recipients
    in batches."""
    query = (
        select(Lead.id)
        .where(segment_condition(segment, now), Lead.id > after_id)
        .order_by(Lead.id)
        .limit(limit)
    )
    return list((await session.scalars(query)).all())
