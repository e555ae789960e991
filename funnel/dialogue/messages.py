"""Renders the script's texts for one lead: placeholders filled (escaped), questions with
their answer buttons. Shared by the dialogue and the campaigns so both speak alike."""

from __future__ import annotations

from funnel.core.models import Lead
from funnel.core.telegram_text import cut_plain
from funnel.dialogue import qualification
from funnel.dialogue.replies import Btn, Reply, rows
from funnel.script.schema import Question, Script, render


def text_for(
    script: Script, lead: Lead | None, template: str, extra: dict[str, str] | None = None
) -> str:
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


def ask(script: Script, lead: Lead, question: Question, intro: str | None = None) -> Reply:
    """The question with its buttons, optionally after an intro line."""
    number, total = qualification.progress(script, question)
    values = {"question_number": str(number), "questions_total": str(total)}
    body = text_for(script, lead, question.text, values)
    if intro:
        body = text_for(script, lead, intro, values) + "\n\n" + body
    return Reply(body, question_buttons(question))


def question_buttons(question: Question) -> tuple[tuple[Btn, ...], ...]:
    buttons = [Btn(o.label, "answer", question.id, o.id) for o in question.options]
    return rows(buttons, question.columns)


def script_buttons(script: Script, ids: tuple[str, ...] | list[str]) -> list[Btn]:
    return [Btn(script.buttons[b].label, "button", b) for b in ids]
