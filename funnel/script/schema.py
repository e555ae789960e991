"""The marketer's message script as a schema: stages, questions, outcomes, buttons, campaigns
and texts, with the checks every value passes (funnel/script/loading.py reads it from YAML).

Texts may use Telegram's HTML subset and `{placeholders}`; both are checked here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import time, timedelta
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from funnel.core.telegram_text import check_telegram_html
from funnel.script.durations import Duration

FORMAT = 1
# Short ASCII ids keep callback data within Telegram's 64 bytes: the longest, an answer
# button `a:<question>:<option>`, is 51 bytes, and its signature adds 12 (63).
Id = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,23}$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]
# Room for placeholders: a rendered text must stay under Telegram's 4096 characters.
MAX_TEMPLATE_CHARS = 3000
PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
# Filled by the bot in every text; the script's `vars:` add the marketer's own.
PLACEHOLDERS = frozenset(
    {"first_name", "school", "course", "question_number", "questions_total", "stage"}
)
Temperature = Literal["hot", "warm", "cold"]
# Where a value sits in the script, as pydantic writes it: field names and 0-based indexes.
Loc = tuple[str | int, ...]
# The names of the script's `vars:` while that script is being validated, so a text's
# {placeholder} is checked (at the text's own line) against the variables of its script.
_SCRIPT_VARS: ContextVar[frozenset[str]] = ContextVar("script_vars", default=frozenset())
MAX_VAR_CHARS = 200


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReferenceProblems(ValueError):
    """Several script-wide problems, each with the location (as pydantic writes one: field
    names and 0-based list indexes) of the value at fault, so each is reported at its line."""

    def __init__(self, problems: Sequence[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(message for _, message in self.problems))


def known_placeholders() -> frozenset[str]:
    return PLACEHOLDERS | _SCRIPT_VARS.get()


def check_text(value: str) -> str:
    """A marketer's text: Telegram HTML with known {placeholders}, short enough to send."""
    if not value.strip():
        raise ValueError("text is empty")
    if len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"text is {len(value)} characters; keep it under {MAX_TEMPLATE_CHARS}")
    known_names = known_placeholders()
    unknown = sorted(set(PLACEHOLDER.findall(value)) - known_names)
    if unknown:
        known = ", ".join("{" + p + "}" for p in sorted(known_names))
        raise ValueError(
            f"unknown placeholder {{{unknown[0]}}}; known ones are {known} "
            "(add your own under vars:)"
        )
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
    # A/B tests and holdouts: this share of the campaign's leads (sticky per lead) is planned
    # but never sent, so /campaigns can compare the messaged with those left alone.
    holdout: float = 0.0

    _holdout_ok = field_validator("holdout", mode="before")(
        lambda v: _share(v, "holdout", 0.0, 0.5)
    )

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


# -- A/B tests and holdouts ------------------------------------------------------------------


def _share(value: Any, what: str, low: float, high: float) -> float:
    """A share written as "10%" or 10 (percent points), kept as a fraction (0.1)."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{what} is a percentage like 10%")
    if isinstance(value, str):
        written = value.strip().removesuffix("%").strip().replace(",", ".")
        try:
            number = float(written)
        except ValueError:
            raise ValueError(f"{what} is a percentage like 10%, not '{value[:20]}'") from None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        raise ValueError(f"{what} is a percentage like 10%")
    if not 100 * low <= number <= 100 * high:
        raise ValueError(f"{what} must be between {100 * low:g}% and {100 * high:g}%")
    return number / 100


class Variant(Model):
    """One arm of an A/B test; without a text it shows the script's own text (the control)."""

    id: Id
    weight: float = 1.0
    text: str | None = None

    @field_validator("weight", mode="before")
    @classmethod
    def _weight_positive(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("weight is a number above 0, e.g. 50")
        if not 0 < value <= 1_000_000:
            raise ValueError("weight must be above 0 (a variant nobody gets is no variant)")
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _text_ok(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError("a text is expected")
        if not value.strip():
            raise ValueError("text is empty; leave the text out to show the script's own text")
        if len(value) > MAX_TEMPLATE_CHARS:
            raise ValueError(
                f"text is {len(value)} characters; keep it under {MAX_TEMPLATE_CHARS}"
            )
        return value


EXPERIMENT_ID = r"^[a-z0-9_]{1,32}$"
# System texts shown as button labels or to a lead already erased cannot be tested.
UNTESTABLE_TEXTS = frozenset(
    {"continue_button", "restart_button", "stop_button", "forget_yes", "forget_no", "forgotten"}
)
# Texts shown above a question (and campaign steps) know the question's number; others do not.
# {questions_total} reads well anywhere; a question's number only where a question is shown.
QUESTION_PLACEHOLDERS = frozenset({"question_number"})
TEXTS_BEFORE_A_QUESTION = frozenset({"welcome", "use_buttons", "too_long", "unsupported"})


class Experiment(Model):
    """An A/B test of one text: each lead sees one variant, chosen by a hash of the lead and
    the experiment (funnel/experiments/assignment.py), until a winner is set."""

    id: Annotated[str, StringConstraints(pattern=EXPERIMENT_ID)]
    title: Label
    # texts.<key> | questions.<qid>.text | questions.<qid>.options.<oid>.label |
    # outcomes.<hot|warm|cold|disqualified>.text | campaigns.<cid>.steps.<n>.text (n from 1)
    target: Annotated[str, StringConstraints(min_length=3, max_length=120)]
    # The stage whose reach is the goal; by default the stage after the lead's at exposure.
    metric: Id | None = None
    # The smallest difference worth finding (percentage points): it sets how many leads
    # the test needs.
    min_effect: float = 0.05
    variants: tuple[Variant, ...] = Field(min_length=2, max_length=10)
    winner: Id | None = None

    _min_effect_ok = field_validator("min_effect", mode="before")(
        lambda v: _share(v, "min_effect", 0.001, 0.5)
    )

    @model_validator(mode="after")
    def _variants_ok(self) -> Experiment:
        ids = [v.id for v in self.variants]
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"experiment '{self.id}' has two variants with the id '{twice}'")
        if self.winner is not None and self.winner not in ids:
            raise ValueError(
                f"experiment '{self.id}': winner '{self.winner}' is not one of its variants "
                f"({', '.join(ids)})"
            )
        return self

    def variant(self, variant_id: str | None) -> Variant | None:
        return next((v for v in self.variants if v.id == variant_id), None)


def _experiment_problem(index: int, field_name: str, message: str, value: Any) -> InitErrorDetails:
    return InitErrorDetails(
        type=PydanticCustomError("experiment", "{message}", {"message": message}),
        loc=(index, field_name),
        input=value,
    )


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
    # Declared after everything a target may name, so the check below sees it validated.
    experiments: tuple[Experiment, ...] = ()

    @field_validator("experiments")
    @classmethod
    def _experiments_resolve(
        cls, value: tuple[Experiment, ...], info: ValidationInfo
    ) -> tuple[Experiment, ...]:
        """Each target names a text of this script, once; variant texts fit that text."""
        problems: list[InitErrorDetails] = []
        seen_ids: set[str] = set()
        seen_targets: dict[str, str] = {}
        stage_ids = {s.id for s in info.data.get("stages", ())}
        for index, experiment in enumerate(value):
            if experiment.id in seen_ids:
                message = f"two experiments have the id '{experiment.id}'"
                problems.append(_experiment_problem(index, "id", message, experiment.id))
            seen_ids.add(experiment.id)
            found = _target_problem(experiment.target, info.data)
            if isinstance(found, str):
                problems.append(_experiment_problem(index, "target", found, experiment.target))
                continue
            earlier = seen_targets.get(experiment.target)
            if earlier is not None:
                message = (
                    f"experiment '{earlier}' already tests {experiment.target}; "
                    "one text, one experiment at a time (add a variant to it instead)"
                )
                problems.append(_experiment_problem(index, "target", message, experiment.target))
            seen_targets[experiment.target] = experiment.id
            if experiment.metric is not None and stage_ids and experiment.metric not in stage_ids:
                message = f"metric '{experiment.metric}' is not one of the stages"
                problems.append(_experiment_problem(index, "metric", message, experiment.metric))
            for n, variant in enumerate(experiment.variants):
                if variant.text is None:
                    continue
                problem = _variant_text_problem(variant.text, found)
                if problem is not None:
                    problems.append(
                        InitErrorDetails(
                            type=PydanticCustomError(
                                "experiment", "{message}", {"message": problem}
                            ),
                            loc=(index, "variants", n, "text"),
                            input=variant.text,
                        )
                    )
        if problems:
            raise ValidationError.from_exception_data("experiments", problems)
        return value

    # The marketer's own placeholders: {price}, {school_gen}, {manager_name}...
    vars: dict[Id, Annotated[str, StringConstraints(min_length=1, max_length=MAX_VAR_CHARS)]] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _texts_know_the_vars(cls, data: Any, handler: ModelWrapValidatorHandler[Script]) -> Script:
        token = _SCRIPT_VARS.set(_var_names(data))
        try:
            return handler(data)
        finally:
            _SCRIPT_VARS.reset(token)

    @field_validator("vars", mode="before")
    @classmethod
    def _vars_are_texts(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        taken = sorted(PLACEHOLDERS & set(value))
        if taken:
            # Each at the line of its own name.
            why = "is filled by the bot itself; give your variable another name"
            raise ReferenceProblems([((name,), f"'{name}' {why}") for name in taken])
        # A price written as a bare number is still a text to show.
        return {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                for k, v in value.items()}  # fmt: skip

    @model_validator(mode="after")
    def _references_resolve(self) -> Script:
        problems: list[tuple[Loc, str]] = [
            ((), item) if isinstance(item, str) else item for item in self._dangling_references()
        ]
        if problems:
            raise ReferenceProblems(problems)
        return self

    def _dangling_references(self) -> Iterator[tuple[Loc, str] | str]:
        """Each wrong reference with where it is written (a bare string: the script as a
        whole)."""
        yield from self.offer_problems()
        stage_ids = [s.id for s in (*self.stages, *self.exit_stages)]
        seen_stages: set[str] = set()
        for group in ("stages", "exit_stages"):
            for n, stage in enumerate(getattr(self, group)):
                if stage.id in seen_stages:
                    yield (group, n, "id"), f"two stages have the same id '{stage.id}'"
                seen_stages.add(stage.id)
        for role, stage in self.roles.model_dump().items():
            if stage not in stage_ids:
                yield (
                    ("roles", role),
                    f"stage '{stage}' is not in stages ({_listed(stage_ids)})",
                )
        question_ids = [q.id for q in self.questions]
        seen_questions: set[str] = set()
        for n, q in enumerate(self.questions):
            if q.id in seen_questions:
                yield ("questions", n, "id"), f"two questions have the same id '{q.id}'"
            seen_questions.add(q.id)
        for n, q in enumerate(self.questions):
            for m, o in enumerate(q.options):
                if o.next not in (None, "end") and o.next not in question_ids:
                    yield (
                        ("questions", n, "options", m, "next"),
                        f"next '{o.next}' is no question (questions are {_listed(question_ids)};"
                        " or write end)",
                    )
        for n, d in enumerate(self.disqualifiers):
            for qid, options in d.when.items():
                question = self.question(qid)
                if question is None:
                    yield (
                        ("disqualifiers", n, "when", qid),
                        f"question '{qid}' does not exist ({_listed(question_ids)})",
                    )
                    continue
                for oid in options:
                    if question.option(oid) is None:
                        yield (
                            ("disqualifiers", n, "when", qid),
                            f"question '{qid}' has no option '{oid}' "
                            f"({_listed([o.id for o in question.options])})",
                        )
        for bid, button in self.buttons.items():
            if button.stage is not None and button.stage not in stage_ids:
                yield (
                    ("buttons", bid, "stage"),
                    f"stage '{button.stage}' is not in stages ({_listed(stage_ids)})",
                )
        outcomes = self.outcomes
        for name in ("hot", "warm", "cold", "disqualified"):
            outcome: Outcome = getattr(outcomes, name)
            if outcome.stage not in stage_ids:
                yield (
                    ("outcomes", name, "stage"),
                    f"stage '{outcome.stage}' is not in stages ({_listed(stage_ids)})",
                )
            yield from self._unknown_button_refs(("outcomes", name), outcome.buttons)
        seen_campaigns: set[str] = set()
        disqualifier_ids = {d.id for d in self.disqualifiers}
        for n, c in enumerate(self.campaigns):
            if c.id in seen_campaigns:
                yield ("campaigns", n, "id"), f"two campaigns have the same id '{c.id}'"
            seen_campaigns.add(c.id)
            for m, stage in enumerate(c.stages):
                if stage not in stage_ids:
                    yield (
                        ("campaigns", n, "stages", m),
                        f"stage '{stage}' is not in stages ({_listed(stage_ids)})",
                    )
            for m, reason in enumerate(c.exit_reasons):
                if reason not in disqualifier_ids:
                    yield (
                        ("campaigns", n, "exit_reasons", m),
                        f"disqualifier '{reason}' does not exist "
                        f"({_listed(sorted(disqualifier_ids))})",
                    )
            for m, step in enumerate(c.steps):
                yield from self._unknown_button_refs(("campaigns", n, "steps", m), step.buttons)

    def _unknown_button_refs(self, loc: Loc, ids: Sequence[str]) -> Iterator[tuple[Loc, str]]:
        """Each unknown button id in the `buttons:` list at `loc`, at its own place."""
        for n, bid in enumerate(ids):
            if bid not in self.buttons:
                known = _listed(list(self.buttons))
                yield (*loc, "buttons", n), f"button '{bid}' is not in buttons ({known})"

    def _unknown_buttons(self, where: str, ids: Sequence[str]) -> Iterator[str]:
        """The same as one line for the whole script, for checks without a location."""
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

    def experiment(self, experiment_id: str) -> Experiment | None:
        return next((e for e in self.experiments if e.id == experiment_id), None)

    @cached_property
    def experiments_by_target(self) -> dict[str, Experiment]:
        return {e.target: e for e in self.experiments}

    @cached_property
    def experiments_by_system_text(self) -> dict[str, Experiment]:
        """texts.<key> experiments by the text they replace (the renderer sees the text)."""
        found = {}
        for experiment in self.experiments:
            kind, _, key = experiment.target.partition(".")
            if kind == "texts" and isinstance(getattr(self.texts, key, None), str):
                found[getattr(self.texts, key)] = experiment
        return found

    def placeholder_values(self) -> dict[str, str]:
        """What every text of this script may say whoever reads it: the marketer's vars, the
        school, the course and how many questions there are."""
        return {
            **self.vars,
            "school": self.school,
            "course": self.course,
            "questions_total": str(len(self.questions)),
        }

    @property
    def label(self) -> str:
        """The version tag stored on each lead (breakdowns by script version)."""
        return f"{self.id}@{self.version}"


def _var_names(data: Any) -> frozenset[str]:
    """The variable names a script's raw data declares (before it is validated)."""
    if not isinstance(data, Mapping):
        return frozenset()
    declared = data.get("vars")
    if not isinstance(declared, Mapping):
        return frozenset()
    return frozenset(
        k for k in declared if isinstance(k, str) and PLACEHOLDER.fullmatch("{" + k + "}")
    )


def _listed(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def render(template: str, values: Mapping[str, str]) -> str:
    """Fills {placeholders}; values are user data, so they are HTML-escaped here."""
    from html import escape

    return PLACEHOLDER.sub(lambda m: escape(values.get(m.group(1), ""), quote=False), template)


# -- A/B tests: what a target names ------------------------------------------------------


@dataclass(frozen=True)
class TargetKind:
    """What kind of text a target is: a button label (plain, short, no placeholders) or a
    message text, and whether it is shown with a question (its number is known)."""

    label: bool
    with_question: bool


def _target_problem(target: str, data: Mapping[str, Any]) -> TargetKind | str:
    """The kind of text `target` names in the script's validated fields, or what is wrong."""
    parts = target.split(".")
    kinds = (
        "texts.<key>, questions.<id>.text, questions.<id>.options.<id>.label, "
        "outcomes.<hot|warm|cold|disqualified>.text or campaigns.<id>.steps.<n>.text"
    )
    unknown = f"target '{target}' is not a text of this script; a target is one of {kinds}"
    head = parts[0]
    if head == "texts" and len(parts) == 2:
        texts = data.get("texts")
        key = parts[1]
        if texts is None or key not in type(texts).model_fields:
            return f"target '{target}': there is no text '{key}' in texts"
        if key in UNTESTABLE_TEXTS:
            return f"target '{target}': this text cannot be tested (a button label or a farewell)"
        mine = getattr(texts, key)
        for other in type(texts).model_fields:
            if other != key and getattr(texts, other) == mine:
                return (
                    f"target '{target}': texts.{other} is the very same text; "
                    "make them differ before testing one of them"
                )
        return TargetKind(label=False, with_question=key in TEXTS_BEFORE_A_QUESTION)
    if head == "questions" and len(parts) in (3, 5):
        questions = {q.id: q for q in data.get("questions", ())}
        question = questions.get(parts[1])
        if question is None:
            return f"target '{target}': there is no question '{parts[1]}'"
        if len(parts) == 3 and parts[2] == "text":
            return TargetKind(label=False, with_question=True)
        if len(parts) == 5 and parts[2] == "options" and parts[4] == "label":
            if question.option(parts[3]) is None:
                return f"target '{target}': question '{parts[1]}' has no option '{parts[3]}'"
            return TargetKind(label=True, with_question=True)
        return unknown
    if head == "outcomes" and len(parts) == 3 and parts[2] == "text":
        if parts[1] not in ("hot", "warm", "cold", "disqualified"):
            return f"target '{target}': outcomes are hot, warm, cold and disqualified"
        return TargetKind(label=False, with_question=False)
    if head == "campaigns" and len(parts) == 5 and parts[2] == "steps" and parts[4] == "text":
        campaigns = {c.id: c for c in data.get("campaigns", ())}
        campaign = campaigns.get(parts[1])
        if campaign is None:
            return f"target '{target}': there is no campaign '{parts[1]}'"
        if not parts[3].isdigit() or not 1 <= int(parts[3]) <= len(campaign.steps):
            return f"target '{target}': campaign '{parts[1]}' has steps 1 to {len(campaign.steps)}"
        return TargetKind(label=False, with_question=True)
    return unknown


def _variant_text_problem(text: str, kind: TargetKind) -> str | None:
    """Why a variant's text cannot replace a text of this kind, or None."""
    if kind.label:
        if len(text.strip()) > 64:
            return "a button label is at most 64 characters"
        if PLACEHOLDER.search(text):
            return "a button label cannot have {placeholders}"
        return None
    try:
        check_text(text)
    except ValueError as e:
        return str(e)
    used = set(PLACEHOLDER.findall(text))
    if not kind.with_question and used & QUESTION_PLACEHOLDERS:
        wrong = sorted(used & QUESTION_PLACEHOLDERS)[0]
        return f"{{{wrong}}} is unknown where this text is shown (no question goes with it)"
    return None
