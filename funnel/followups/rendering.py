"""What a touch says to one lead: the step's text (placeholders filled, fitted to Telegram),
the open question's buttons when the step asks for them, the step's buttons, and a way out."""

from __future__ import annotations

from datetime import datetime

from funnel.core.models import Lead
from funnel.core.telegram_text import fit_to_telegram
from funnel.dialogue import messages, qualification
from funnel.dialogue.replies import Btn, Reply, rows
from funnel.experiments import assignment
from funnel.script.schema import Campaign, Script


def stop_button(script: Script) -> Btn:
    """Every unsolicited message offers a way out."""
    return Btn(script.texts.stop_button, "system", "stop")


def render_touch(
    script: Script, campaign: Campaign, step: int, lead: Lead, now: datetime | None = None
) -> Reply:
    """The touch's text for this lead, with the open question's buttons when the step asks
    for them (a tap answers the question as usual), the step's buttons, then the stop button.
    A step under an A/B test shows the lead's variant (rendered at `now`: the exposure)."""
    spec = campaign.steps[step - 1]
    target = f"campaigns.{campaign.id}.steps.{step}.text"
    template = assignment.shown(script, target, spec.text, lead, now)
    question = script.question(lead.position)
    extra: dict[str, str] = {}
    if question is not None:
        number, total = qualification.progress(script, question)
        extra = {"question_number": str(number), "questions_total": str(total)}
    text = fit_to_telegram(messages.text_for(script, lead, template, extra))
    layout: list[tuple[Btn, ...]] = []
    if spec.with_question and question is not None:
        layout.extend(messages.question_buttons(question, script, lead, now))
    layout.extend(rows(messages.script_buttons(script, spec.buttons)))
    layout.append((stop_button(script),))
    return Reply(text, tuple(layout), offer=spec.offer)
