"""The marketer's script: the shipped ones load, and every mistake is reported with the
file, the line and the field."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from funnel.script.loading import (
    MAX_DEPTH,
    MAX_PROBLEMS,
    MAX_SCRIPT_BYTES,
    MAX_VALUES,
    ScriptError,
    load_script,
    parse_script,
)
from funnel.script.schema import Id, Script
from handlers.callbacks import TELEGRAM_MAX_BYTES, AnswerCb, ButtonCb, Signer, SystemCb
from tests.conftest import EN_SCRIPT, RU_SCRIPT

SHIPPED = [RU_SCRIPT, EN_SCRIPT]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scripts_load(path: Path) -> None:
    script = load_script(path)
    assert [s.id for s in script.stages] == [
        "new", "engaged", "qualified", "consultation", "customer", "loyal"
    ]  # fmt: skip
    assert [s.id for s in script.exit_stages] == ["disqualified"]
    assert [q.bant for q in script.questions] == ["need", "timing", "budget", "authority"]
    assert {c.kind for c in script.campaigns} == {"nurture", "winback", "postsale"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_button_fits_telegrams_64_bytes(path: Path) -> None:
    script = load_script(path)
    packed = [AnswerCb(q=q.id, o=o.id).pack() for q in script.questions for o in q.options]
    packed += [ButtonCb(id=b).pack() for b in script.buttons]
    packed += [SystemCb(op="forget_yes").pack()]
    signer = Signer.from_token("1:token")
    assert max(len(signer.sign(p, -1001234567890).encode()) for p in packed) <= 64


def test_the_longest_ids_the_loader_allows_fit_with_their_signature() -> None:
    ids = TypeAdapter(Id)
    longest = ids.validate_python("q" + "x" * 23)
    with pytest.raises(ValidationError):
        ids.validate_python(longest + "x")
    packed = AnswerCb(q=longest, o=longest).pack()
    signed = Signer.from_token("1:token").sign(packed, -1001234567890)
    assert len(signed.encode()) <= TELEGRAM_MAX_BYTES


def test_translation_has_the_same_structure() -> None:
    ru, en = load_script(RU_SCRIPT), load_script(EN_SCRIPT)
    assert [(q.id, [o.id for o in q.options]) for q in ru.questions] == [
        (q.id, [o.id for o in q.options]) for q in en.questions
    ]
    assert ru.buttons.keys() == en.buttons.keys()
    assert [c.id for c in ru.campaigns] == [c.id for c in en.campaigns]


def _broken(old: str, new: str) -> str:
    source = RU_SCRIPT.read_text(encoding="utf-8")
    assert old in source, old
    return source.replace(old, new, 1)


def _line_of(source: str, fragment: str) -> int:
    return source[: source.index(fragment)].count("\n") + 1


def _problems(source: str) -> list[str]:
    with pytest.raises(ScriptError) as caught:
        parse_script(source, "ru.yaml")
    return caught.value.problems


def test_a_wrong_type_names_file_line_and_field() -> None:
    source = _broken("score: 30}", "score: lots}")
    [problem, *_] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'score: lots')}: ")
    assert "questions.need.options.career.score" in problem


def test_an_unknown_placeholder_is_named() -> None:
    source = _broken("Здравствуйте, {first_name}!", "Здравствуйте, {firstname}!")
    [problem] = _problems(source)
    assert "{firstname}" in problem and "texts.welcome" in problem
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'welcome: |-')}")


def test_broken_html_is_named() -> None:
    source = _broken("<b>Вопрос {question_number}", "<b>Вопрос 3 < 5 {question_number}")
    [problem] = _problems(source)
    assert "bare '<'" in problem and "questions.need.text" in problem


def test_a_typo_in_a_field_name() -> None:
    source = _broken("    bant: timing", "    bnat: timing")
    [problem] = _problems(source)
    assert "unknown field" in problem
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'bnat')}")


def test_a_dangling_reference() -> None:
    source = _broken("buttons: [book, trial]", "buttons: [book, trail]")
    [problem] = _problems(source)
    assert "'trail'" in problem and "outcomes.hot" in problem


def test_a_bad_duration() -> None:
    source = _broken("after: 23h", "after: 23x")
    [problem] = _problems(source)
    assert "23x" in problem
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'after: 23x')}")


def test_invalid_yaml_names_the_line() -> None:
    source = _broken("  - id: timing", "  - id: [timing")
    [problem] = _problems(source)
    assert problem.startswith("ru.yaml:") and "not valid YAML" in problem


def test_a_missing_file() -> None:
    with pytest.raises(ScriptError) as caught:
        load_script(Path("no/such/script.yaml"))
    assert "cannot read" in caught.value.problems[0]


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=300).filter(lambda t: t.strip() and "{" not in t))
def test_any_escaped_text_is_accepted(text: str) -> None:
    data = yaml.safe_load(RU_SCRIPT.read_text(encoding="utf-8"))
    data["texts"]["help"] = html.escape(text, quote=False)
    parse_script(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=80, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20,
))  # fmt: skip
def test_garbage_is_rejected_with_script_error_only(data: object) -> None:
    with pytest.raises(ScriptError):
        parse_script(yaml.safe_dump(data, allow_unicode=True), "x.yaml")


# -- hostile files: refused with file:line, quickly, never a traceback ----------------------


def _refused(tmp_path: Path, content: bytes, name: str = "script.yaml") -> list[str]:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ScriptError) as caught:
        load_script(path)
    return caught.value.problems


def test_a_file_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as file:
        file.truncate(5 * 1024**3)  # 5 GB, sparse: reading it would take minutes
    started = time.perf_counter()
    with pytest.raises(ScriptError) as caught:
        load_script(huge)
    assert time.perf_counter() - started < 1
    [problem] = caught.value.problems
    assert problem.startswith(f"{huge}: ") and "limit" in problem and "1 MB" in problem


def test_the_limit_is_exact(tmp_path: Path) -> None:
    source = RU_SCRIPT.read_bytes()
    padding = MAX_SCRIPT_BYTES - len(source) - 1
    at_limit = source + b"\n" + b"#" * padding
    assert len(at_limit) == MAX_SCRIPT_BYTES
    path = tmp_path / "at_limit.yaml"
    path.write_bytes(at_limit)
    assert load_script(path).id == load_script(RU_SCRIPT).id
    [problem] = _refused(tmp_path, at_limit + b"#")
    assert f"{MAX_SCRIPT_BYTES + 1:,} bytes" in problem


def test_a_text_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(ScriptError) as caught:
        parse_script("#" * (MAX_SCRIPT_BYTES + 1), "big.yaml")
    assert caught.value.problems[0].startswith("big.yaml: ") and "limit" in str(caught.value)


def test_something_else_than_a_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScriptError) as caught:
        load_script(tmp_path)
    assert caught.value.problems == [f"{tmp_path}: not a regular file"]


def test_non_utf8_bytes_name_their_line(tmp_path: Path) -> None:
    source = RU_SCRIPT.read_bytes()
    label = "Сменить профессию"
    line = source[: source.index(label.encode())].count(b"\n") + 1
    broken = source.replace(label.encode(), label.encode("cp1251"), 1)
    [problem] = _refused(tmp_path, broken)
    assert problem.startswith(f"{tmp_path / 'script.yaml'}:{line}: not UTF-8")


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"a: " + b"[" * 100_000, 1),  # flow nesting: recursion in PyYAML's composer
        (b"format: 1\n" + b"".join(b"  " * n + b"k:\n" for n in range(40)), 21),
        (b"a: " + b"{b: " * 30_000, 1),
    ],
    ids=["flow", "block", "mappings"],
)
def test_deep_nesting_is_refused_with_a_line(tmp_path: Path, content: bytes, line: int) -> None:
    [problem] = _refused(tmp_path, content)
    assert problem == f"{tmp_path / 'script.yaml'}:{line}: nested deeper than {MAX_DEPTH} levels"


def test_an_alias_bomb_is_refused_at_its_first_alias(tmp_path: Path) -> None:
    rows = [b'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [b"a%d: &a%d [%s]" % (n, n, b", ".join([b"*a%d" % (n - 1)] * 9)) for n in range(1, 10)]
    started = time.perf_counter()
    [problem] = _refused(tmp_path, b"\n".join(rows) + b"\n")
    assert time.perf_counter() - started < 1
    assert problem.startswith(f"{tmp_path / 'script.yaml'}:2: aliases (*name) are not allowed")


def test_a_merge_key_with_an_alias_is_refused(tmp_path: Path) -> None:
    [problem] = _refused(tmp_path, b"base: &base {score: 1}\nother:\n  <<: *base\n")
    assert problem.startswith(f"{tmp_path / 'script.yaml'}:3: aliases")


def test_too_many_values_are_refused(tmp_path: Path) -> None:
    content = b"x: [" + b"1, " * (MAX_VALUES + 10) + b"1]\n"
    assert len(content) < MAX_SCRIPT_BYTES
    [problem] = _refused(tmp_path, content)
    assert problem.startswith(f"{tmp_path / 'script.yaml'}:1: more than {MAX_VALUES:,} values")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"format: 1\nid: " + b"7" * 10_000 + b"\n", "cannot read this value as int"),
        (b"format: 1\nid: 2026-13-45\n", "cannot read this value as timestamp"),
        (b"format: 1\nid: !!float many\n", "cannot read this value as float"),
        (b"format: 1\nid: \x07\n", "character #x0007 is not allowed"),
        (b"format: 1\nid: !!python/object:os.system {}\n", "a text starts with '!'"),
        (b"format: 1\n? [a, b]\n: c\n", "found unhashable key"),
    ],
    ids=["long-int", "bad-date", "bad-float", "control-char", "python-tag", "list-key"],
)
def test_unreadable_values_name_their_line(tmp_path: Path, content: bytes, message: str) -> None:
    [problem] = _refused(tmp_path, content)
    assert problem.startswith(f"{tmp_path / 'script.yaml'}:2: ") and message in problem


def test_any_unexpected_error_is_a_script_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: object) -> None:
        raise RuntimeError("a bug in a validator")

    monkeypatch.setattr(Script, "model_validate", broken)
    with pytest.raises(ScriptError) as caught:
        parse_script(RU_SCRIPT.read_text(encoding="utf-8"), "ru.yaml")
    assert caught.value.problems == ["ru.yaml: cannot load the script (RuntimeError)"]


def test_the_file_is_read_and_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    scans: list[object] = []
    real_open, real_scan = Path.open, yaml.scanner.Scanner.fetch_stream_start

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(self)
        return real_open(self, *args, **kwargs)

    def counting_scan(self: yaml.scanner.Scanner) -> None:
        scans.append(self)
        real_scan(self)

    monkeypatch.setattr(Path, "open", counting_open)
    monkeypatch.setattr(yaml.scanner.Scanner, "fetch_stream_start", counting_scan)
    assert load_script(RU_SCRIPT).id
    assert (len(opened), len(scans)) == (1, 1)


def test_many_mistakes_are_listed_up_to_a_bound(tmp_path: Path) -> None:
    extra = b"".join(b"typo_%d: 1\n" % n for n in range(5000))
    problems = _refused(tmp_path, RU_SCRIPT.read_bytes() + extra)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[-1].endswith(f"...and {5000 - MAX_PROBLEMS} more problems")
    assert "unknown field" in problems[0]


def test_a_huge_value_is_not_repeated_in_full() -> None:
    source = _broken("after: 23h", "after: " + "x" * 200_000)
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'after: xxx')}: campaigns.")
    assert len(problem) <= 300


YAML_PIECES = st.sampled_from(
    ["a", ":", " ", "\n", "  ", "-", "[", "]", "{", "}", ",", "&x", "*x", "!!", "'", '"', "#",
     "? ", "|", ">", "<<: ", "1", "\t", "%YAML 1.1", "---", "...", "\\", "\x00", "é"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.lists(YAML_PIECES, max_size=60).map("".join))
def test_yaml_like_noise_is_rejected_with_script_error_only(source: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse_script(source, "x.yaml")
    assert all(p.startswith("x.yaml") for p in caught.value.problems)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_rejected_with_script_error_only(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("bytes") / "x.yaml"
    path.write_bytes(data)
    with pytest.raises(ScriptError) as caught:
        load_script(path)
    assert all(p.startswith(str(path)) for p in caught.value.problems)
