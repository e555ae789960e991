"""The marketer's message script: its schema, loading from YAML and validation.

Every error names the file and the line, so a marketer can fix a script without reading
Python. Texts may use Telegram's HTML subset and `{placeholders}`; both are checked here.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import time, timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from funnel.core.telegram_text import check_telegram_html, visible_length
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


class ScriptError(Exception):
    """A script that cannot be used; `problems` are 'file:line: message' strings."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


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

    @field_validator("*", mode="before")
    @classmethod
    def _check(cls, value: Any) -> Any:
        return _text(value) if isinstance(value, str) else value


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


def fits_telegram(text: str) -> bool:
    return 1 <= visible_length(text) <= 4096


# -- loading ------------------------------------------------------------------------------

# A script is some ten kilobytes. The bounds stop a wrong file (a log, a dump, a hostile
# upload) before parsing, which would take seconds and gigabytes for a few megabytes.
MAX_SCRIPT_BYTES = 1024 * 1024
# The shipped scripts nest 7 levels and hold about 650 values.
MAX_DEPTH = 20
MAX_VALUES = 20_000
# What a marketer can read (and a Telegram message can carry) of a long list of mistakes.
MAX_PROBLEMS = 50
MAX_PROBLEM_CHARS = 300


def load_script(path: str | Path) -> Script:
    """Reads and validates a script; raises ScriptError naming file and line, whatever the
    file holds."""
    name = str(path)
    try:
        source = _read(Path(path), name)
    except ScriptError:
        raise
    except Exception as e:  # e.g. a path with a NUL byte: still a refusal, not a traceback
        raise ScriptError([f"{name}: cannot read the script ({type(e).__name__})"]) from e
    return parse_script(source, name)


def _read(path: Path, name: str) -> str:
    """The file's text, refused before reading when too big, read once and at most one
    byte past the limit."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise ScriptError([f"{name}: not a regular file"])
        if status.st_size > MAX_SCRIPT_BYTES:
            raise ScriptError([_too_big(name, status.st_size)])
        with path.open("rb") as file:
            # At most one byte past the limit: the file may have grown since stat().
            raw = file.read(MAX_SCRIPT_BYTES + 1)
    except OSError as e:
        raise ScriptError([f"{name}: cannot read the script: {e.strerror or e}"]) from e
    if len(raw) > MAX_SCRIPT_BYTES:
        raise ScriptError([_too_big(name, len(raw))])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ScriptError(
            [f"{name}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8"]
        ) from e


def _too_big(name: str, size: int) -> str:
    return f"{name}: the script is {size:,} bytes; the limit is {MAX_SCRIPT_BYTES:,} bytes (1 MB)"


def parse_script(source: str, name: str = "<script>") -> Script:
    """Validates a script's text; raises ScriptError naming file and line, for any input."""
    try:
        return _parse(source, name)
    except ScriptError:
        raise
    except Exception as e:  # a bug or a resource limit: still a refusal, not a traceback
        raise ScriptError([f"{name}: cannot load the script ({type(e).__name__})"]) from e


def _parse(source: str, name: str) -> Script:
    # Characters are at most as many as bytes: a longer text is surely over the limit.
    if len(source) > MAX_SCRIPT_BYTES:
        raise ScriptError([_too_big(name, len(source.encode("utf-8", "replace")))])
    try:
        root, data = _compose(source)
    except _Refused as e:
        at = e.problem_mark.line + 1 if e.problem_mark else 1
        raise ScriptError([f"{name}:{at}: {e.problem}"]) from e
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ScriptError([_clip(f"{name}{line}: not valid YAML: {e.problem or e}")]) from e
    except yaml.reader.ReaderError as e:
        row = source.count("\n", 0, e.position) + 1
        char: Any = e.character  # the code point for text input, despite the stubs
        code = char if isinstance(char, int) else ord(char)
        raise ScriptError(
            [f"{name}:{row}: character #x{code:04x} is not allowed in a script"]
        ) from e
    except yaml.YAMLError as e:
        raise ScriptError([_clip(f"{name}: not valid YAML: {e}")]) from e
    if not isinstance(data, dict):
        raise ScriptError([f"{name}:1: a script is a mapping with format, stages, questions..."])
    try:
        return Script.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        problems = [_describe(name, root, err) for err in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"{name}: ...and {len(errors) - MAX_PROBLEMS} more problems")
        raise ScriptError(problems) from e


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with bounds on nesting and size, and no aliases: `*name` lets a few lines
    expand into billions of values (a "billion laughs" file)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._values = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _refusal(
                "aliases (*name) are not allowed in a script; write the value out", event
            )
        self._values += 1
        if self._values > MAX_VALUES:
            raise _refusal(f"more than {MAX_VALUES:,} values; a script needs far fewer", event)
        if self._depth >= MAX_DEPTH:
            raise _refusal(f"nested deeper than {MAX_DEPTH} levels", event)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, OverflowError) as e:
            # e.g. an integer of 5000 digits, or a date like 2026-13-45
            kind = str(node.tag).rpartition(":")[2]
            raise _Refused(None, None, f"cannot read this value as {kind}", node.start_mark) from e


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a script may not contain."""


def _refusal(problem: str, event: Any) -> _Refused:
    return _Refused(None, None, problem, event.start_mark)


def _compose(source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML tree (for line numbers) and the data built from that same tree: the text is
    parsed once."""
    loader = _BoundedLoader(source)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def _clip(problem: str) -> str:
    # Messages may quote the offending value, which can be a whole megabyte.
    if len(problem) <= MAX_PROBLEM_CHARS:
        return problem
    return problem[: MAX_PROBLEM_CHARS - 1] + "…"


def _describe(name: str, root: yaml.Node | None, error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    line = _line_of(root, loc)
    where = ".".join(str(p) for p in loc) or "script"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (a typo?)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return _clip(f"{name}:{line}: {where}: {message}")


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node the error location reaches."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if str(key.value) == str(part):
                # A missing/extra field points at its key; a bad value at the value.
                return value if not isinstance(value, yaml.ScalarNode) or value.value else key
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        return node.value[part] if 0 <= part < len(node.value) else None
    return None
