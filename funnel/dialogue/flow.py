"""The prospect's dialogue as transactions: each call reads the lead, decides with
`qualification`, writes the answer, position, score and stage (with its log row) and
returns the replies. The caller commits, then sends: a reply never precedes its record."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import store
from funnel.core.clock import Clock
from funnel.core.models import Lead
from funnel.core.stages import can_move
from funnel.core.store import Profile
from funnel.dialogue import messages, qualification
from funnel.dialogue.qualification import AnswerRejected
from funnel.dialogue.replies import Btn, Reply, rows
from funnel.script.schema import Question, Script

MAX_SOURCE = 64


@dataclass
class Result:
    """What to do after the commit: replies to the prospect, an optional alert for the tap,
    whether the managers should get this lead's card, and whether the lead just passed the
    qualification (the CRM hears of it)."""

    replies: list[Reply] = field(default_factory=list)
    alert: str | None = None
    handoff: int | None = None  # lead id
    lead_id: int | None = None
    qualified: bool = False
    forgotten: int | None = None  # lead id: its cards are to be cleared, its CRM told


@dataclass(frozen=True)
class Dialogue:
    session: AsyncSession
    script: Script
    clock: Clock
    # Whether a managers' chat receives hot leads: only then is a hot lead promised a call.
    managers: bool = True

    # -- entry points ---------------------------------------------------------------------

    async def start(self, profile: Profile, payload: str | None) -> Result:
        """/start: a new lead, or a known one offered to continue or start over."""
        lead = await store.lead_by_user(self.session, profile.user_id)
        if lead is None:
            return await self._create(profile, payload)
        store.refresh_profile(lead, profile)
        await self._inbound(lead)
        resumed = lead.opted_out_at is not None
        lead.opted_out_at = None
        lead.blocked_at = None
        replies = [Reply(self._text(lead, self.script.texts.resumed))] if resumed else []
        answers = await store.current_answers(self.session, lead.id)
        question = self.script.question(lead.position)
        if question is not None and not answers:
            # Nothing to lose yet (e.g. /start tapped three times): just ask again.
            replies.append(self._ask(lead, question, intro=self.script.texts.welcome))
        else:
            texts = self.script.texts
            buttons = [
                Btn(texts.continue_button, "system", "continue"),
                Btn(texts.restart_button, "system", "restart"),
            ]
            replies.append(Reply(self._text(lead, texts.welcome_back), rows(buttons)))
        return Result(replies, lead_id=lead.id)

    async def answer(
        self,
        profile: Profile,
        question_id: str | None,
        *,
        option_id: str | None = None,
        text: str | None = None,
    ) -> Result:
        """A tapped answer button (question_id, option_id) or a typed text (question_id None)."""
        lead = await self._lead(profile)
        if lead is None:
            return await self._create(profile, None)
        question = self.script.question(lead.position)
        if question_id is not None and not _offers(question, question_id, option_id):
            # Only the question the lead stands at, and one of its options, is on screen
            # (an older question's buttons, or a script reloaded since): a stale button.
            return Result([self._stale(lead)], lead_id=lead.id)
        if question is None:
            await self._inbound(lead)
            return Result([self._finished(lead)], lead_id=lead.id)
        try:
            evaluated = qualification.evaluate(question, option_id=option_id, text=text)
        except AnswerRejected as rejected:
            hint = getattr(self.script.texts, rejected.reason)
            return Result([self._ask(lead, question, intro=hint)], lead_id=lead.id)
        return await self._record(lead, question, evaluated)

    async def press(self, profile: Profile, button_id: str) -> Result:
        """A call-to-action button from an outcome or a campaign message."""
        lead = await self._lead(profile)
        button = self.script.buttons.get(button_id)
        if lead is None or button is None or not await self._offered(lead, button_id):
            return await self._stale_result(profile, lead)
        now = self.clock.now()
        await self._inbound(lead)
        result = Result(lead_id=lead.id, handoff=lead.id if button.notify_managers else None)
        if button.nps is not None:
            store.add_answer(self.session, lead, "nps", None, str(button.nps), button.nps, now)
        if button.stage is not None and can_move(self.script, lead.stage, button.stage):
            store.log_stage(self.session, lead, button.stage, f"button:{button_id}", now)
        if button.reply:
            result.replies.append(Reply(self._text(lead, button.reply)))
        if button.do == "stop":
            result.replies.extend((await self.stop(profile)).replies)
        elif button.do == "restart":
            result.replies.extend((await self.restart(profile)).replies)
        elif button.do == "continue":
            result.replies.append(self._current(lead))
        return result

    async def system(self, profile: Profile, operation: str) -> Result:
        """The dialogue's own buttons: continue, restart, stop, forget (yes/no)."""
        handlers = {
            "continue": self.resume,
            "restart": self.restart,
            "forget_yes": self.forget,
            "forget_no": self.keep,
            "stop": self.stop,
        }
        handler = handlers.get(operation)
        if handler is None:
            return await self._stale_result(profile, await self._lead(profile))
        return await handler(profile)

    async def resume(self, profile: Profile) -> Result:
        lead = await self._lead(profile)
        if lead is None:
            return await self._create(profile, None)
        await self._inbound(lead)
        return Result([self._current(lead)], lead_id=lead.id)

    async def restart(self, profile: Profile) -> Result:
        """Start over: earlier answers stop counting, the first question again."""
        lead = await self._lead(profile)
        if lead is None:
            return await self._create(profile, None)
        await self._inbound(lead)
        await store.supersede_answers(self.session, lead.id)
        first = qualification.first_question(self.script)
        lead.position = first.id
        lead.score = 0
        lead.temperature = None
        lead.exit_reason = None
        return Result([self._ask(lead, first)], lead_id=lead.id)

    async def stop(self, profile: Profile) -> Result:
        """/stop: no more messages from us until the lead writes /start."""
        lead = await self._lead(profile)
        if lead is None:
            return Result([Reply(self._text(None, self.script.texts.stopped))])
        now = self.clock.now()
        lead.opted_out_at = now
        await store.cancel_pending_touches(self.session, lead.id, "opted_out")
        return Result([Reply(self._text(lead, self.script.texts.stopped))], lead_id=lead.id)

    async def forget_request(self, profile: Profile) -> Result:
        texts = self.script.texts
        buttons = [Btn(texts.forget_yes, "system", "forget_yes"),
                   Btn(texts.forget_no, "system", "forget_no")]  # fmt: skip
        lead = await self._lead(profile)
        return Result([Reply(self._text(lead, texts.forget_confirm), rows(buttons, 2))])

    async def forget(self, profile: Profile) -> Result:
        lead = await self._lead(profile)
        if lead is not None:
            if lead.chat_id is not None:
                await store.forget_replies(self.session, lead.chat_id)
            await store.forget_lead(self.session, lead, self.clock.now())
        return Result(
            [Reply(self._text(None, self.script.texts.forgotten))],
            forgotten=lead.id if lead is not None else None,
        )

    async def keep(self, profile: Profile) -> Result:
        lead = await self._lead(profile)
        return Result([Reply(self._text(lead, self.script.texts.forget_cancelled))])

    async def unsupported(self, profile: Profile) -> Result:
        """A sticker, photo, voice...: say what we understand and repeat the question."""
        return await self._hint(profile, self.script.texts.unsupported)

    async def unknown_command(self, profile: Profile) -> Result:
        """A command we do not offer (never stored as a typed answer)."""
        return await self._hint(profile, self.script.texts.use_buttons)

    async def _hint(self, profile: Profile, hint: str) -> Result:
        lead = await self._lead(profile)
        if lead is None:
            return await self._create(profile, None)
        question = self.script.question(lead.position)
        if question is None:
            return Result([self._finished(lead)], lead_id=lead.id)
        return Result([self._ask(lead, question, intro=hint)], lead_id=lead.id)

    async def help(self, profile: Profile) -> Result:
        lead = await self._lead(profile)
        return Result([Reply(self._text(lead, self.script.texts.help))])

    async def blocked(self, user_id: int, blocked: bool) -> None:
        """The lead blocked (or unblocked) the bot: never send to a blocked chat."""
        if blocked:
            await store.mark_blocked(self.session, user_id, self.clock.now())
            return
        lead = await store.lead_by_user(self.session, user_id)
        if lead is not None:
            lead.blocked_at = None

    # -- the core -------------------------------------------------------------------------

    async def _create(self, profile: Profile, payload: str | None) -> Result:
        now = self.clock.now()
        first = qualification.first_question(self.script)
        lead = store.new_lead(
            profile,
            source=_source(payload),
            stage=self.script.roles.start,
            position=first.id,
            version=self.script.label,
            at=now,
        )
        self.session.add(lead)
        await self.session.flush()
        store.log_entry(self.session, lead, now)
        return Result([self._ask(lead, first, intro=self.script.texts.welcome)], lead_id=lead.id)

    async def _record(
        self, lead: Lead, question: Question, evaluated: qualification.Evaluated
    ) -> Result:
        now = self.clock.now()
        store.add_answer(
            self.session, lead, question.id, evaluated.option, evaluated.value,
            evaluated.score, now,
        )  # fmt: skip
        lead.score += evaluated.score
        await self._inbound(lead)
        roles = self.script.roles
        if lead.stage in (roles.start, roles.exit) and can_move(
            self.script, lead.stage, roles.engaged
        ):
            store.log_stage(self.session, lead, roles.engaged, "answered", now)
        option = question.option(evaluated.option) if evaluated.option else None
        following = qualification.next_question(self.script, question, option)
        if following is not None:
            lead.position = following.id
            return Result([self._ask(lead, following)], lead_id=lead.id)
        return await self._conclude(lead)

    async def _conclude(self, lead: Lead) -> Result:
        now = self.clock.now()
        answers = await store.current_answers(self.session, lead.id)
        chosen = {a.question: a.option for a in answers}
        verdict = qualification.verdict(self.script, chosen, lead.score)
        lead.position = None
        lead.temperature = verdict.temperature
        lead.exit_reason = verdict.disqualifier.id if verdict.disqualifier else None
        if can_move(self.script, lead.stage, verdict.outcome.stage):
            store.log_stage(self.session, lead, verdict.outcome.stage, verdict.kind, now)
        text = messages.outcome_text(self.script, lead, lead.temperature or "disqualified", now)
        if verdict.disqualifier is not None and verdict.disqualifier.text:
            text = verdict.disqualifier.text
        handoff = None
        if verdict.outcome.notify_managers:
            handoff = lead.id
            if self.managers:
                text += "\n\n" + self.script.texts.manager_will_write
        qualified = verdict.disqualifier is None
        reply = self._outcome_reply(lead, text)
        return Result([reply], handoff=handoff, lead_id=lead.id, qualified=qualified)

    # -- replies --------------------------------------------------------------------------

    def _ask(self, lead: Lead, question: Question, intro: str | None = None) -> Reply:
        return messages.ask(self.script, lead, question, intro, now=self.clock.now())

    def _outcome_reply(self, lead: Lead, text: str) -> Reply:
        kind = lead.temperature or "disqualified"
        outcome = getattr(self.script.outcomes, kind)
        buttons = messages.script_buttons(self.script, outcome.buttons)
        return Reply(self._text(lead, text), rows(buttons), offer=outcome.offer)

    def _current(self, lead: Lead) -> Reply:
        """Where the lead stands: the open question, or their outcome again."""
        question = self.script.question(lead.position)
        if question is not None:
            return self._ask(lead, question)
        return self._finished(lead)

    def _finished(self, lead: Lead) -> Reply:
        texts = self.script.texts
        buttons = [Btn(texts.restart_button, "system", "restart")]
        return Reply(self._text(lead, texts.finished), rows(buttons))

    def _stale(self, lead: Lead) -> Reply:
        current = self._current(lead)
        intro = self._text(lead, self.script.texts.stale_button)
        return Reply(intro + "\n\n" + current.text, current.buttons)

    async def _stale_result(self, profile: Profile, lead: Lead | None) -> Result:
        if lead is None:
            return await self._create(profile, None)
        return Result([self._stale(lead)], lead_id=lead.id)

    def _text(self, lead: Lead | None, template: str) -> str:
        return messages.text_for(self.script, lead, template, now=self.clock.now())

    # -- helpers --------------------------------------------------------------------------

    async def _lead(self, profile: Profile) -> Lead | None:
        lead = await store.lead_by_user(self.session, profile.user_id)
        if lead is not None:
            store.refresh_profile(lead, profile)
            await self._repair_position(lead)
        return lead

    async def _offered(self, lead: Lead, button_id: str) -> bool:
        """Whether the script offers this button to the lead where it stands: on the outcome
        of its finished dialogue, or on a touch it was sent of a campaign for its current
        stage. An NPS button pressed by a lead at question 1, or a campaign's button after
        the lead left the campaign's stages, was not (any longer) on offer."""
        if lead.position is None:
            outcome = getattr(self.script.outcomes, lead.temperature or "disqualified")
            if button_id in outcome.buttons:
                return True
        steps = {
            (campaign.id, number)
            for campaign in self.script.campaigns
            if lead.stage in campaign.stages
            for number, step in enumerate(campaign.steps, start=1)
            if button_id in step.buttons
        }
        return await store.was_sent(self.session, lead.id, steps)

    async def _repair_position(self, lead: Lead) -> None:
        """A marketer removed or renamed the question this lead stood at: go on from the
        first question of the current script the lead has not answered yet."""
        if lead.position is None or self.script.question(lead.position) is not None:
            return
        answered = {a.question for a in await store.current_answers(self.session, lead.id)}
        pending = [q for q in self.script.questions if q.id not in answered]
        lead.position = pending[0].id if pending else qualification.first_question(self.script).id

    async def _inbound(self, lead: Lead) -> None:
        """The lead wrote to us: campaigns for the old cycle are over, and the touches sent
        lately get the credit for the reply."""
        now = self.clock.now()
        lead.last_inbound_at = now
        store.start_cycle(lead, now)
        await store.mark_replied(self.session, lead, now)


def _offers(question: Question | None, question_id: str, option_id: str | None) -> bool:
    if question is None or question.id != question_id:
        return False
    return option_id is None or question.option(option_id) is not None


def _source(payload: str | None) -> str:
    """The deep-link payload as an attribution source (Telegram allows [A-Za-z0-9_-])."""
    if not payload:
        return "direct"
    cleaned = "".join(ch for ch in payload if ch.isascii() and (ch.isalnum() or ch in "_-"))
    return cleaned[:MAX_SOURCE] or "direct"
