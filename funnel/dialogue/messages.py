"""Renders the script's texts for one lead: placeholders filled (escaped), questions with
their answer buttons. Shared by the dialogue and the campaigns so both speak alike."""

from __future__ import annotations

from datetime import datetime

from funnel.core.models import Lead
from funnel.core.telegram_text import cut_plain
from funnel.dialogue import qualification
from funnel.dialogue.replies import Btn, Reply, rows
from funnel.experiments import assignment
from funnel.script.schema import Question, Script, render


def text_for(
    script: Script,
    lead: Lead | None,
    template: str,
    extra: dict[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> str:
    """The template filled for `lead`; a system text under an A/B test is the lead's variant
    (shown at `now`, which records the exposure)."""
    template = assignment.shown_system_text(script, template, lead, now)
    values = {
        # The script's vars, school, course and the number of questions: any text may say them.
        **script.placeholder_values(),
        "first_name": cut_plain((lead.first_name if lead else None) or "", 64),
        "stage": script.titles.get(lead.stage, "") if lead else "",
    }
    question = script.question(lead.position) if lead else None
    if question is not None:
        values["question_number"] = str(qualification.progress(script, question)[0])
    values.update(extra or {})
    return render(template, values)


def ask(
    script: Script,
    lead: Lead,
    question: Question,
    intro: str | None = None,
    *,
    now: datetime | None = None,
) -> Reply:
    """The question with its buttons, optionally after an intro line."""
    number, total = qualification.progress(script, question)
    values = {"question_number": str(number), "questions_total": str(total)}
    text = assignment.shown(script, f"questions.{question.id}.text", question.text, lead, now)
    body = text_for(script, lead, text, values)
    if intro:
        body = text_for(script, lead, intro, values, now=now) + "\n\n" + body
    return Reply(body, question_buttons(question, script, lead, now))


def question_buttons(
    question: Question,
    script: Script | None = None,
    lead: Lead | None = None,
    now: datetime | None = None,
) -> tuple[tuple[Btn, ...], ...]:
    """The answer buttons; an option label under an A/B test is the lead's variant."""

    def label(option_id: str, own: str) -> str:
        if script is None:
            return own
        target = f"questions.{question.id}.options.{option_id}.label"
        return assignment.shown(script, target, own, lead, now)

    buttons = [Btn(label(o.id, o.label), "answer", question.id, o.id) for o in question.options]
    return rows(buttons, question.columns)


def outcome_text(script: Script, lead: Lead, kind: str, now: datetime | None) -> str:
    """The outcome's text (hot, warm, cold, disqualified), the lead's variant if under test."""
    own: str = getattr(script.outcomes, kind).text
    return assignment.shown(script, f"outcomes.{kind}.text", own, lead, now)


def script_buttons(script: Script, ids: tuple[str, ...] | list[str]) -> list[Btn]:
    return [Btn(script.buttons[b].label, "button", b) for b in ids]
