"""Loading the marketer's script from YAML: the file read within bounds, parsed once, and
every refusal written as 'file:line: message', so a marketer can fix a script without
reading Python."""

from __future__ import annotations

import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from funnel.script.schema import Script


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
        script = Script.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        problems = [_describe(name, root, err) for err in errors[:MAX_PROBLEMS]]
        if len(errors) > MAX_PROBLEMS:
            problems.append(f"{name}: ...and {len(errors) - MAX_PROBLEMS} more problems")
        raise ScriptError(problems) from e
    # References to offers are checked here, where the YAML tree names their lines.
    offer_problems = [
        _clip(f"{name}:{_line_of(root, loc)}: {'.'.join(str(p) for p in loc)}: {message}")
        for loc, message in script.offer_problems()
    ]
    if offer_problems:
        raise ScriptError(offer_problems[:MAX_PROBLEMS])
    return script


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
