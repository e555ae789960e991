"""Loading the marketer's script from YAML: the file read within bounds, parsed once, and
every refusal written as 'file:line: message', so a marketer can fix a script without
reading Python."""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from funnel.script.schema import ReferenceProblems, Script


class ScriptError(Exception):
    """A script that cannot be used; `problems` are 'file:line: message' strings."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


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
        line, problem = explain_yaml_error(e, source)
        where = f":{line}" if line else ""
        raise ScriptError([_clip(f"{name}{where}: not valid YAML: {problem}")]) from e
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
    duplicates = list(_duplicate_keys(root))
    if duplicates:
        raise ScriptError(_bounded(name, [_clip(f"{name}:{line}: {p}") for line, p in duplicates]))
    try:
        return Script.model_validate(data)
    except ValidationError as e:
        located: list[tuple[int, str]] = []
        for err in e.errors(include_url=False):
            located.extend(_describe(name, root, err))
        located.sort(key=lambda item: item[0])
        raise ScriptError(_bounded(name, [problem for _, problem in located])) from e


def _bounded(name: str, problems: list[str]) -> list[str]:
    if len(problems) <= MAX_PROBLEMS:
        return problems
    return [
        *problems[:MAX_PROBLEMS],
        f"{name}: ...and {len(problems) - MAX_PROBLEMS} more problems",
    ]


def _duplicate_keys(root: yaml.Node | None) -> Iterator[tuple[int, str]]:
    """Every key written twice in one mapping, at the line of the second one: YAML keeps the
    last value silently, so a pasted block would override the original without a word."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    first = seen.get(key.value)
                    line = key.start_mark.line + 1
                    if first is not None:
                        yield (
                            line,
                            (
                                f"'{_shown(key.value)}' is written twice in the same place (first "
                                f"at line {first}); keep one of them"
                            ),
                        )
                    else:
                        seen[key.value] = line
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _shown(value: str) -> str:
    return value if len(value) <= 40 else value[:39] + "…"


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


def _describe(
    name: str, root: yaml.Node | None, error: Mapping[str, Any]
) -> list[tuple[int, str]]:
    """One validation error as (line, 'file:line: where: message'); a script-wide check
    that found several wrong references gives one line per reference, at that reference."""
    loc = tuple(error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ReferenceProblems):
        return [_located(name, root, (*loc, *where), message) for where, message in cause.problems]
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (a typo?)"
    elif error["type"] == "missing":
        message = "required field is missing"
    return [_located(name, root, loc, message)]


def _located(
    name: str, root: yaml.Node | None, loc: tuple[Any, ...], message: str
) -> tuple[int, str]:
    line = _line_of(root, loc)
    where = readable_location(root, loc)
    return line, _clip(f"{name}:{line}: {where + ': ' if where else ''}{message}")


def readable_location(root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
    """A location as the marketer sees it: list items by their id where they have one
    (questions.need.options.career.score), otherwise by their number counted from 1
    (campaigns.nurture_dialogue.steps.2.text), the numbering /campaigns and reports use."""
    parts: list[str] = []
    node = root
    for part in loc:
        if isinstance(part, int):
            item = (
                node.value[part]
                if isinstance(node, yaml.SequenceNode) and 0 <= part < len(node.value)
                else None
            )
            item_id = _id_of(item)
            parts.append(item_id if item_id is not None else str(part + 1))
            node = item
        else:
            parts.append(str(part))
            node = _value_of(node, part)
    return ".".join(parts)


def _id_of(node: yaml.Node | None) -> str | None:
    value = _value_of(node, "id")
    if isinstance(value, yaml.ScalarNode) and value.value and len(value.value) <= 24:
        return str(value.value)
    return None


def _value_of(node: yaml.Node | None, key: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, value in node.value:
            if str(k.value) == str(key):
                return value
    return None


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


# -- YAML's own errors, in plain words ----------------------------------------------------


def explain_yaml_error(error: yaml.MarkedYAMLError, source: str) -> tuple[int | None, str]:
    """(line, what to do) for a YAML syntax error: the parser's wording ("mapping values are
    not allowed here") means nothing to a marketer; the usual causes have a usual fix."""
    problem = str(error.problem or error)
    context = str(error.context or "")
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark else None
    start = error.context_mark.line + 1 if error.context_mark else line
    if problem == "mapping values are not allowed here" and mark is not None:
        text = source.splitlines()[mark.line] if mark.line < len(source.splitlines()) else ""
        if ": " in text[: mark.column] or text[: mark.column].rstrip().endswith(":"):
            return line, (
                'a colon inside a text: put the text in quotes, e.g. text: "Step 2: your goal"'
            )
        return line, (
            "this line is indented more than the line above it: align it with the fields "
            "it belongs with (or, if it continues a text, put the text in quotes)"
        )
    if "'\\t'" in problem or "tab character" in problem:
        return line, "a tab character: indent with spaces only (two per level)"
    if "quoted scalar" in context and "end of stream" in problem:
        return start, _NEVER_CLOSED
    if "quoted scalar" in context and "escape character" in problem:
        return line, (
            "a backslash inside a text in double quotes: write \\\\ for one backslash, or use "
            "single quotes"
        )
    if context == "while scanning a simple key":
        return start, (
            "a line without 'name: value': a field needs a colon after its name, and a text "
            "on several lines needs '|-' after the colon (text: |-)"
        )
    if "block mapping" in context and "found '<scalar>'" in problem and mark is not None:
        opened = _unclosed_quote_above(source, mark.line, mark.column)
        if opened is not None:
            return opened, _NEVER_CLOSED
        return line, "something follows a closing quote or bracket: put the whole text in quotes"
    if "block mapping" in context or "block collection" in context:
        return line, (
            "this line is indented differently from the lines around it: fields of one "
            "thing start at the same column, list items with '- ' at the same column"
        )
    if "flow sequence" in context:
        return start, "a list in [ ] is not closed with ] or lacks a comma between items"
    if "flow mapping" in context:
        return start, "a { } group is not closed with } or lacks a comma between fields"
    if "cannot start any token" in problem:
        return line, (
            "a text starts with a character YAML reserves (@, `, %): put the text in quotes"
        )
    if "alias" in context or "anchor" in context:
        return line, "a text starts with * or &: put the text in quotes"
    if "constructor for the tag" in problem:
        return line, "a text starts with '!': put the text in quotes"
    return line, problem


_NEVER_CLOSED = "a quote opened here is never closed: add the closing quote at the end of the text"


def _unclosed_quote_above(source: str, row: int, column: int) -> int | None:
    """The line where a quote was opened and never closed, when the text before `column` on
    `row` holds an odd number of quotes: the quote there closes one opened on a line above."""
    lines = source.splitlines()
    if row >= len(lines):
        return None
    for quote in "\"'":
        if lines[row][:column].count(quote) % 2 == 1:
            for above in range(row - 1, -1, -1):
                if lines[above].count(quote) % 2 == 1:
                    return above + 1
    return None
