"""What changed between two versions of a script, as a marketer names things: questions
added, removed or changed, texts changed by their key (texts.welcome, outcomes.hot.text,
campaigns.<id>.steps.<n>.text counted from 1), campaigns added, removed or changed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from funnel.script.schema import Campaign, Question, Script


@dataclass(frozen=True)
class Changes:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True)
class ScriptDiff:
    old_label: str
    new_label: str
    questions: Changes = field(default_factory=Changes)
    texts: Changes = field(default_factory=Changes)
    campaigns: Changes = field(default_factory=Changes)
    # Anything else (stages, thresholds, send window...) differs too.
    other: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.questions or self.texts or self.campaigns or self.other)


def _changes(old: dict[str, object], new: dict[str, object]) -> Changes:
    return Changes(
        added=tuple(k for k in new if k not in old),
        removed=tuple(k for k in old if k not in new),
        changed=tuple(k for k in new if k in old and old[k] != new[k]),
    )


def script_texts(script: Script) -> dict[str, str]:
    """Every text a prospect may read, by its key, except the questions' own (those count
    as a changed question)."""
    return dict(_texts(script))


def _texts(script: Script) -> Iterator[tuple[str, str]]:
    for key, value in script.texts.model_dump().items():
        yield f"texts.{key}", value
    for name in ("hot", "warm", "cold", "disqualified"):
        yield f"outcomes.{name}.text", getattr(script.outcomes, name).text
    for d in script.disqualifiers:
        if d.text is not None:
            yield f"disqualifiers.{d.id}.text", d.text
    for bid, button in script.buttons.items():
        yield f"buttons.{bid}.label", button.label
        if button.reply is not None:
            yield f"buttons.{bid}.reply", button.reply
    for campaign in script.campaigns:
        for n, step in enumerate(campaign.steps, 1):
            yield f"campaigns.{campaign.id}.steps.{n}.text", step.text
    for name, value in script.vars.items():
        yield f"vars.{name}", value


# Top-level fields compared as a whole; questions, texts and campaigns are told in detail
# (and the version heads the reply).
_DETAILED = {
    "texts", "questions", "campaigns", "buttons", "outcomes", "disqualifiers", "vars", "version",
}  # fmt: skip


def diff_scripts(old: Script, new: Script) -> ScriptDiff:
    questions = _changes(_by_id(old.questions), _by_id(new.questions))
    campaigns = _changes(_by_id(old.campaigns), _by_id(new.campaigns))
    texts = _changes(dict(script_texts(old)), dict(script_texts(new)))
    other = [
        name
        for name in type(new).model_fields
        if name not in _DETAILED and getattr(old, name) != getattr(new, name)
    ]
    # Buttons' stages and outcomes' thresholds are not texts, and still worth a word.
    for name in ("buttons", "outcomes", "disqualifiers"):
        if _without_texts(getattr(old, name)) != _without_texts(getattr(new, name)):
            other.append(name)
    return ScriptDiff(old.label, new.label, questions, texts, campaigns, tuple(other))


def _by_id(items: Iterable[Question | Campaign]) -> dict[str, object]:
    return {item.id: item.model_dump() for item in items}


def _without_texts(value: object) -> object:
    """A part of the script with its texts blanked: what is left is its logic."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if isinstance(value, dict):
        return {
            k: _without_texts(v) for k, v in value.items() if k not in ("text", "label", "reply")
        }
    if isinstance(value, list | tuple):
        return [_without_texts(v) for v in value]
    return value
