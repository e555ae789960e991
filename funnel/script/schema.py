"""The marketer's message script as a schema: stages, questions, outcomes, buttons, campaigns
and texts, with the checks every value passes (funnel/script/loading.py reads it from YAML).

Texts may use Telegram's HTML subset and `{placeholders}`; both are checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import time, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from funnel.core.telegram_text import check_telegram_html
from funnel.script.durations import Duration

FORMAT = 1
# Short ASCII ids keep callback data far below Telegram's 64 bytes.
Id = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,23}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
# Room for placeholders: a rendered text must stay under Telegram's 4096 characters.
MAX_TEMPLATE_CHARS = 3000
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
PLACEHOLDERS = frozenset(
    {"first_name", "school", "course", "question_number", "questions_total", "stage"}
)
Temperature = Literal["hot", "warm", "cold"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_text(value: str) -> str:
    """A marketer's text: Telegram HTML with known {placeholders}, short enough to send."""
    if not value.strip():
        raise ValueError("text is empty")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"text is {len(value)} characters; keep it under {MAX_TEMPLATE_CHARS}")
    unknown = sorted(set(PLACEHOLDER.findall(value)) - PLACEHOLDERS)
    if unknown:
        known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{unknown[0]}}}; known ones are {known}")
    problem = check_telegram_html(PLACEHOLDER.sub("x", value))
    if problem:
        raise ValueError(f"{problem} (write < as &lt; and & as &amp;)")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a text is expected")
    return check_text(value)


class Stage(Model):
    id: Id
    title: Label


class Option(Model):
    id: Id
    label: Label
    score: int = Field(default=0, ge=-1000, le=1000)
    # Where to go after this answer; the next question in order when absent, `end` to finish.
    next: Id | None = None


class FreeText(Model):
    """A typed answer: accepted as is (within bounds) and scored with a fixed score."""

    score: int = Field(default=0, ge=-1000, le=1000)
    max_length: int = Field(default=500, ge=1, le=2000)


class Question(Model):
    id: Id
    bant: Literal["need", "timing", "budget", "authority", "other"] = "other"
    text: str
    options: tuple[Option, ...] = ()
    free_text: FreeText | None = None
    columns: int = Field(default=1, ge=1, le=4)

    _text_ok = field_validator("text", mode="before")(_text)

    @model_validator(mode="after")
    def _has_a_way_to_answer(self) -> Question:
        if not self.options and self.free_text is None:
            raise ValueError(f"question '{self.id}' needs options or free_text")
        ids = [o.id for o in self.options]
        if len(set(ids)) != len(ids):
            raise ValueError(f"question '{self.id}' has two options with the same id")
        return self

    def option(self, option_id: str) -> Option | None:
        return next((o for o in self.options if o.id == option_id), None)

    def option_by_label(self, label: str) -> Option | None:
        wanted = label.strip().casefold()
        return next((o for o in self.options if o.label.casefold() == wanted), None)


class Disqualifier(Model):
    """A hard stop: the lead is not a fit when every listed answer matches."""

    id: Id
    when: dict[Id, tuple[Id, ...]]
    text: str | None = None

    _text_ok = field_validator("text", mode="before")(lambda v: None if v is None else _text(v))

    @field_validator("when", mode="before")
    @classmethod
    def _single_to_list(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class Button(Model):
    """A call-to-action button: what a tap does to the lead, and what we answer."""

    label: Label
    # Move the lead to this stage.
    stage: Id | None = None
    # continue: show the current question; restart: qualify again; stop: opt out.
    do: Literal["continue", "restart", "stop", "none"] = "none"
    reply: str | None = None
    # A score for the lead's answer to a campaign question (e.g. NPS), recorded as an answer.
    nps: int | None = Field(default=None, ge=0, le=10)
    # Hand the lead to the managers' chat (a card) when tapped.
    notify_managers: bool = False

    _reply_ok = field_validator("reply", mode="before")(lambda v: None if v is None else _text(v))


class Outcome(Model):
    stage: Id
    text: str
    buttons: tuple[Id, ...] = ()
    notify_managers: bool = False
    # An offer of `offers` sent as a Telegram invoice after the text.
    offer: Id | None = None

    _text_ok = field_validator("text", mode="before")(_text)


class Thresholds(Model):
    hot: int
    warm: int

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warm > self.hot:
            raise ValueError("warm must not be above hot")
        return self


class Outcomes(Model):
    thresholds: Thresholds
    hot: Outcome
    warm: Outcome
    cold: Outcome
    disqualified: Outcome


class Roles(Model):
    """Which stage means what, so code never hard-codes a marketer's stage id."""

    start: Id = "new"
    engaged: Id = "engaged"
    qualified: Id = "qualified"
    booked: Id = "consultation"
    customer: Id = "customer"
    loyal: Id = "loyal"
    exit: Id = "disqualified"


class SendWindow(Model):
    """Unsolicited messages go out only between these local times (school's TIMEZONE)."""

    start: time = time(10, 0)
    end: time = time(21, 0)


class FrequencyCap(Model):
    messages: int = Field(default=2, ge=1, le=100)
    per: Duration = timedelta(days=1)


class CampaignStep(Model):
    after: Duration
    text: str
    buttons: tuple[Id, ...] = ()
    # Buttons of the question the lead stopped at (nurture: "continue where you stopped").
    with_question: bool = False
    # Alert the managers' chat when this step is sent (e.g. a lead silent after booking).
    notify_managers: bool = False
    # An offer of `offers` sent as a Telegram invoice after the text.
    offer: Id | None = None

    _text_ok = field_validator("text", mode="before")(_text)


class Campaign(Model):
    id: Id
    kind: Literal["nurture", "winback", "postsale"]
    title: Label
    # Leads in one of these stages are candidates; delays count from the start of the
    # lead's current cycle (entering the stage, or the last message the lead sent).
    stages: tuple[Id, ...] = Field(min_length=1)
    # Only leads whose dialogue ended with one of these disqualifiers (win-back "not now").
    exit_reasons: tuple[Id, ...] = ()
    temperatures: tuple[Temperature, ...] = ()
    steps: tuple[CampaignStep, ...] = Field(min_length=1)

    def offsets(self) -> list[timedelta]:
        """Each step's delay from the start of the cycle."""
        total = timedelta(0)
        result = []
        for step in self.steps:
            total += step.after
            result.append(total)
        return result


class Texts(Model):
    """Every system text the prospect may see."""

    welcome: str
    welcome_back: str
    continue_button: Label
    restart_button: Label
    stale_button: str
    use_buttons: str
    too_long: str
    unsupported: str
    help: str
    stopped: str
    resumed: str
    forget_confirm: str
    forget_yes: Label
    forget_no: Label
    forgotten: str
    forget_cancelled: str
    finished: str
    stop_button: Label
    manager_will_write: str
    # Payments in the bot; the bot's own wording (in the script's language) when absent.
    payment_thanks: str | None = None
    payment_refunded: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return _text(value) if isinstance(value, str) else value


# -- offers: what the bot sells through Telegram invoices -----------------------------------

# Currencies Telegram counts in whole units (no cents); every other one has two decimals.
# XTR is Telegram Stars.
WHOLE_UNIT_CURRENCIES = frozenset({"XTR", "CLP", "ISK", "JPY", "KRW", "PYG", "UGX", "VND"})
STARS = "XTR"
# As much as a purchase row holds (Numeric(14, 2)).
MAX_PRICE = Decimal("1000000000")


def minor_units(currency: str) -> int:
    """How many of the currency's smallest units make one: 100 kopecks, 1 Star."""
    return 1 if currency in WHOLE_UNIT_CURRENCIES else 100


def _price(value: Any) -> Any:
    """A price written as a string or a number, read as an exact Decimal."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError('write the price as a number, e.g. "49900" or "4990.50"')
    text = str(value).strip().replace(" ", "").replace("\u00a0", "")
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise ValueError(f'{str(value)[:20]!r} is not a price; write it like "49900"') from None
    if not price.is_finite():
        raise ValueError("a price is a number")
    return price


class Offer(Model):
    """A course or product the bot can sell with a Telegram invoice (`sendInvoice`)."""

    id: Id
    title: Annotated[str, StringConstraints(min_length=1, max_length=32, strip_whitespace=True)]
    description: Annotated[
        str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)
    ]
    price: Decimal
    # ISO 4217 for a payment provider (PAYMENT_PROVIDER_TOKEN), or XTR for Telegram Stars.
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    photo_url: Annotated[str, StringConstraints(max_length=2048)] | None = None

    _price_ok = field_validator("price", mode="before")(_price)

    @field_validator("photo_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("photo_url must be an https:// address of a picture")
        return value

    @model_validator(mode="after")
    def _price_fits(self) -> Offer:
        if self.price <= 0:
            raise ValueError(f"offer '{self.id}': the price must be above zero")
        if self.price >= MAX_PRICE:
            raise ValueError(f"offer '{self.id}': the price is too large")
        if self.currency in WHOLE_UNIT_CURRENCIES:
            if self.price != self.price.to_integral_value():
                what = "Telegram Stars" if self.currency == STARS else self.currency
                raise ValueError(f"offer '{self.id}': {what} are counted in whole units")
        elif self.price != self.price.quantize(Decimal("0.01")):
            raise ValueError(f"offer '{self.id}': a price has at most 2 decimals")
        return self

    @property
    def stars(self) -> bool:
        return self.currency == STARS

    @property
    def total_amount(self) -> int:
        """The price in the currency's smallest units, as Telegram counts it."""
        return int(self.price * minor_units(self.currency))


class Script(Model):
    format: Literal[1]
    id: Id
    version: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]
    school: Label
    course: Label
    stages: tuple[Stage, ...] = Field(min_length=2)
    exit_stages: tuple[Stage, ...] = Field(min_length=1)
    roles: Roles = Roles()
    texts: Texts
    questions: tuple[Question, ...] = Field(min_length=1)
    disqualifiers: tuple[Disqualifier, ...] = ()
    buttons: dict[Id, Button] = {}
    outcomes: Outcomes
    send_window: SendWindow = SendWindow()
    frequency_cap: FrequencyCap = FrequencyCap()
    campaigns: tuple[Campaign, ...] = ()
    offers: tuple[Offer, ...] = ()

    @model_validator(mode="after")
    def _references_resolve(self) -> Script:
        problems = list(self._dangling_references())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _dangling_references(self) -> Iterator[str]:
        stage_ids = [s.id for s in (*self.stages, *self.exit_stages)]
        if len(set(stage_ids)) != len(stage_ids):
            yield "two stages have the same id"
        for role, stage in self.roles.model_dump().items():
            if stage not in stage_ids:
                yield f"roles.{role} names stage '{stage}', which is not in stages"
        question_ids = [q.id for q in self.questions]
        if len(set(question_ids)) != len(question_ids):
            yield "two questions have the same id"
        for q in self.questions:
            for o in q.options:
                if o.next not in (None, "end") and o.next not in question_ids:
                    yield f"question '{q.id}' option '{o.id}': next '{o.next}' is no question"
        for d in self.disqualifiers:
            for qid, options in d.when.items():
                question = self.question(qid)
                if question is None:
                    yield f"disqualifier '{d.id}' names question '{qid}', which does not exist"
                    continue
                for oid in options:
                    if question.option(oid) is None:
                        yield f"disqualifier '{d.id}': question '{qid}' has no option '{oid}'"
        for bid, button in self.buttons.items():
            if button.stage is not None and button.stage not in stage_ids:
                yield f"button '{bid}' moves to stage '{button.stage}', which is not in stages"
        outcomes = self.outcomes
        for name in ("hot", "warm", "cold", "disqualified"):
            outcome: Outcome = getattr(outcomes, name)
            if outcome.stage not in stage_ids:
                yield f"outcomes.{name}.stage '{outcome.stage}' is not in stages"
            yield from self._unknown_buttons(f"outcomes.{name}", outcome.buttons)
        campaign_ids = [c.id for c in self.campaigns]
        if len(set(campaign_ids)) != len(campaign_ids):
            yield "two campaigns have the same id"
        disqualifier_ids = {d.id for d in self.disqualifiers}
        for c in self.campaigns:
            for stage in c.stages:
                if stage not in stage_ids:
                    yield f"campaign '{c.id}' names stage '{stage}', which is not in stages"
            for reason in c.exit_reasons:
                if reason not in disqualifier_ids:
                    yield f"campaign '{c.id}' names disqualifier '{reason}', which does not exist"
            for n, step in enumerate(c.steps, 1):
                yield from self._unknown_buttons(f"campaign '{c.id}' step {n}", step.buttons)

    def _unknown_buttons(self, where: str, ids: Sequence[str]) -> Iterator[str]:
        for bid in ids:
            if bid not in self.buttons:
                yield f"{where} uses button '{bid}', which is not in buttons"

    def offer_problems(self) -> Iterator[tuple[tuple[str | int, ...], str]]:
        """Offers named where none is defined, with the place of the reference (the loader
        turns it into a line number)."""
        ids = [o.id for o in self.offers]
        if len(set(ids)) != len(ids):
            yield ("offers",), "two offers have the same id"
        known = set(ids)
        for name in ("hot", "warm", "cold", "disqualified"):
            outcome: Outcome = getattr(self.outcomes, name)
            if outcome.offer is not None and outcome.offer not in known:
                yield (("outcomes", name, "offer"),
                       f"names offer '{outcome.offer}', which is not in offers")  # fmt: skip
        for c_index, campaign in enumerate(self.campaigns):
            for s_index, step in enumerate(campaign.steps):
                if step.offer is not None and step.offer not in known:
                    yield (("campaigns", c_index, "steps", s_index, "offer"),
                           f"names offer '{step.offer}', which is not in offers")  # fmt: skip

    def offer(self, offer_id: str | None) -> Offer | None:
        if offer_id is None:
            return None
        return next((o for o in self.offers if o.id == offer_id), None)

    # -- look-ups -------------------------------------------------------------------------

    @cached_property
    def _questions_by_id(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}

    def question(self, question_id: str | None) -> Question | None:
        if question_id is None:
            return None
        return self._questions_by_id.get(question_id)

    @cached_property
    def funnel_order(self) -> list[str]:
        return [s.id for s in self.stages]

    @cached_property
    def titles(self) -> dict[str, str]:
        return {s.id: s.title for s in (*self.stages, *self.exit_stages)}

    def campaign(self, campaign_id: str) -> Campaign | None:
        return next((c for c in self.campaigns if c.id == campaign_id), None)

    @property
    def label(self) -> str:
        """The version tag stored on each lead (breakdowns by script version)."""
        return f"{self.id}@{self.version}"


def render(template: str, values: Mapping[str, str]) -> str:
    """Fills {placeholders}; values are user data, so they are HTML-escaped here."""
    from html import escape

    return PLACEHOLDER.sub(lambda m: escape(values.get(m.group(1), ""), quote=False), template)
