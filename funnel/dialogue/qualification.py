"""The BANT dialogue as pure decisions: is this answer acceptable, what it scores, which
question comes next, and how the qualification ends (hot / warm / cold / not a fit)."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from funnel.script.schema import Disqualifier, Option, Outcome, Question, Script, Temperature


class AnswerRejected(Exception):
    """The input is no answer to the question; `reason` picks the reply text."""

    def __init__(self, reason: str) -> None:
        self.reason = reason  # "use_buttons" | "too_long"
        super().__init__(reason)


@dataclass(frozen=True)
class Evaluated:
    question: str
    option: str | None
    value: str
    score: int


@dataclass(frozen=True)
class Verdict:
    """How the questions ended: the outcome to show and why."""

    kind: str  # "hot" | "warm" | "cold" | "disqualified"
    outcome: Outcome
    temperature: Temperature | None
    disqualifier: Disqualifier | None = None
    reasons: list[str] = field(default_factory=list)


def first_question(script: Script) -> Question:
    return script.questions[0]


def clean_free_text(text: str) -> str:
    """Drops control characters (keeps newlines) and surrounding blanks from a typed answer."""
    kept = (ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")
    return "".join(kept).strip()


def evaluate(
    question: Question, *, option_id: str | None = None, text: str | None = None
) -> Evaluated:
    """Turns a tapped option or a typed text into an answer, or rejects it."""
    if option_id is not None:
        option = question.option(option_id)
        if option is None:
            raise AnswerRejected("use_buttons")
        return Evaluated(question.id, option.id, option.id, option.score)
    typed = clean_free_text(text or "")
    # People type the label instead of tapping it: that is the same answer.
    option = question.option_by_label(typed) if typed else None
    if option is not None:
        return Evaluated(question.id, option.id, option.id, option.score)
    rule = question.free_text
    if rule is None or not typed:
        raise AnswerRejected("use_buttons")
    if len(typed) > rule.max_length:
        raise AnswerRejected("too_long")
    return Evaluated(question.id, None, typed, rule.score)


def next_question(script: Script, question: Question, option: Option | None) -> Question | None:
    """The question after `question`; None when the questions are over."""
    if option is not None and option.next is not None:
        return script.question(option.next)  # "end" finds nothing: over
    index = script.questions.index(question)
    return script.questions[index + 1] if index + 1 < len(script.questions) else None


def temperature(script: Script, score: int) -> Temperature:
    limits = script.outcomes.thresholds
    if score >= limits.hot:
        return "hot"
    if score >= limits.warm:
        return "warm"
    return "cold"


def matching_disqualifier(
    script: Script, options: Mapping[str, str | None]
) -> Disqualifier | None:
    """The first hard disqualifier all of whose conditions the chosen options meet."""
    for rule in script.disqualifiers:
        if all(options.get(qid) in allowed for qid, allowed in rule.when.items()):
            return rule
    return None


def verdict(script: Script, options: Mapping[str, str | None], score: int) -> Verdict:
    """`options`: question id → chosen option id (None for a typed answer)."""
    reasons = _reasons(script, options)
    rule = matching_disqualifier(script, options)
    if rule is not None:
        return Verdict(
            "disqualified", script.outcomes.disqualified, None, rule, [*reasons, f"✗ {rule.id}"]
        )
    temp = temperature(script, score)
    return Verdict(temp, getattr(script.outcomes, temp), temp, None, reasons)


def _reasons(script: Script, options: Mapping[str, str | None]) -> list[str]:
    """'need: To change careers (+30)' lines that explain a score to a manager."""
    lines = []
    for question in script.questions:
        if question.id not in options:
            continue
        chosen = question.option(options[question.id] or "")
        if chosen is not None:
            lines.append(f"{question.bant}: {chosen.label} ({chosen.score:+d})")
        elif question.free_text is not None:
            lines.append(f"{question.bant}: free text ({question.free_text.score:+d})")
    return lines


def progress(script: Script, question: Question) -> tuple[int, int]:
    """(number of this question, total questions) for "question 2 of 4"."""
    return script.questions.index(question) + 1, len(script.questions)
