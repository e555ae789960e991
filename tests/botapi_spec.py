"""The Bot API spec (`tests/data/telegram/bot-api.json`, MIT, carried by the repository) and
a validator of the requests the bot made, as recorded by the emulator."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from telegram_emulator import FileDescriptor, RecordedRequest

SPEC_PATH = Path(__file__).resolve().parent / "data" / "telegram" / "bot-api.json"
_INTEGER = re.compile(r"^-?\d+$")
_FLOAT = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
_BUTTON_ACTIONS = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)
_MAX_DEPTH = 8


class BotApiSpecMissingError(FileNotFoundError):
    """The spec file is not where the repository layout says it is."""


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    if not SPEC_PATH.is_file():
        raise BotApiSpecMissingError(
            f"Bot API spec not found at {SPEC_PATH}: the repository carries it in "
            "tests/data/telegram/ (restore it from git)"
        )
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return spec


def _decoded(value: Any) -> Any:
    """Objects may still be JSON strings when a field was not decoded by the recorder."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _scalar_ok(type_name: str, value: Any) -> bool | None:
    """True/False for scalar spec types, None when `type_name` is not a scalar."""
    if type_name == "Integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, str) and bool(_INTEGER.match(value)))
    if type_name in ("Float", "Float number"):
        if isinstance(value, bool):
            return False
        return isinstance(value, int | float) or (
            isinstance(value, str) and bool(_FLOAT.match(value))
        )
    if type_name == "String":
        return isinstance(value, str)
    if type_name in ("Boolean", "True"):
        return isinstance(value, bool) or value in ("true", "false", "True", "False")
    if type_name == "InputFile":
        return isinstance(value, FileDescriptor)
    return None


def _check(type_name: str, value: Any, where: str, depth: int) -> list[str]:
    """Problems of `value` against one spec type (e.g. "Array of InlineKeyboardButton")."""
    if type_name.startswith("Array of "):
        value = _decoded(value)
        if not isinstance(value, list):
            return [f"{where}: expected {type_name}, got {type(value).__name__}"]
        inner = type_name.removeprefix("Array of ")
        problems: list[str] = []
        for index, item in enumerate(value):
            problems += _check(inner, item, f"{where}[{index}]", depth + 1)
        return problems
    scalar = _scalar_ok(type_name, value)
    if scalar is not None:
        return [] if scalar else [f"{where}: expected {type_name}, got {value!r:.60}"]
    spec_type = load_spec()["types"].get(type_name)
    if spec_type is None or depth > _MAX_DEPTH:
        return []  # a type the spec does not describe: nothing more to check
    value = _decoded(value)
    if not isinstance(value, dict):
        return [f"{where}: expected {type_name} object, got {type(value).__name__}"]
    if subtypes := spec_type.get("subtypes"):
        return _check_union(subtypes, value, where, depth)
    return _check_object(type_name, spec_type, value, where, depth)


def _check_union(types: list[str], value: Any, where: str, depth: int) -> list[str]:
    attempts = [_check(t, value, where, depth) for t in types]
    if any(not problems for problems in attempts):
        return []
    return min(attempts, key=len)


def _check_object(
    type_name: str, spec_type: dict[str, Any], value: dict[str, Any], where: str, depth: int
) -> list[str]:
    fields = {f["name"]: f for f in spec_type.get("fields", [])}
    problems = [
        f"{where}: unknown field {name!r} in {type_name}" for name in value if name not in fields
    ]
    for name, spec_field in fields.items():
        if name not in value:
            if spec_field["required"]:
                problems.append(f"{where}: missing required field {name!r} of {type_name}")
            continue
        problems += _check_any(spec_field["types"], value[name], f"{where}.{name}", depth + 1)
    if type_name == "InlineKeyboardButton" and not problems:
        problems += _check_button(value, where)
    return problems


def _check_button(button: dict[str, Any], where: str) -> list[str]:
    actions = [name for name in _BUTTON_ACTIONS if name in button]
    if len(actions) != 1:
        return [f"{where}: an InlineKeyboardButton needs exactly one action field, got {actions}"]
    data = button.get("callback_data")
    if isinstance(data, str) and not 1 <= len(data.encode("utf-8")) <= 64:
        return [f"{where}.callback_data: {len(data.encode('utf-8'))} bytes, allowed 1-64"]
    return []


def _check_any(types: list[str], value: Any, where: str, depth: int) -> list[str]:
    if len(types) == 1:
        return _check(types[0], value, where, depth)
    return _check_union(types, value, where, depth)


def validate_request(method: str, params: dict[str, Any]) -> list[str]:
    """What is wrong with a call of `method` with these (decoded) parameters, per the spec:
    unknown method or field, missing required field, wrong scalar type, malformed objects
    (reply_markup and inline keyboards included). An empty list means valid."""
    spec_method = load_spec()["methods"].get(method)
    if spec_method is None:
        return [f"unknown method {method!r}"]
    fields = {f["name"]: f for f in spec_method.get("fields", [])}
    problems = [f"{method}: unknown field {name!r}" for name in params if name not in fields]
    for name, spec_field in fields.items():
        if name not in params:
            if spec_field["required"]:
                problems.append(f"{method}: missing required field {name!r}")
            continue
        problems += _check_any(spec_field["types"], params[name], f"{method}.{name}", 0)
    return problems


def assert_requests_valid(requests: Iterable[RecordedRequest]) -> None:
    """Fail with every problem found in the recorded requests."""
    problems = [
        f"#{index} {problem}"
        for index, request in enumerate(requests)
        for problem in validate_request(request.method, request.params)
    ]
    assert not problems, "requests that do not match the Bot API spec:\n" + "\n".join(problems)
