"""The marketer's script: the shipped ones load, and every mistake is reported with the
file, the line and the field."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from funnel.script import ScriptError, load_script, parse_script
from handlers.callbacks import AnswerCb, ButtonCb, SystemCb
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
    assert max(len(p.encode()) for p in packed) <= 64


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
    assert "questions.0.options.0.score" in problem


def test_an_unknown_placeholder_is_named() -> None:
    source = _broken("Здравствуйте, {first_name}!", "Здравствуйте, {firstname}!")
    [problem] = _problems(source)
    assert "{firstname}" in problem and "texts.welcome" in problem
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'welcome: |-')}")


def test_broken_html_is_named() -> None:
    source = _broken("<b>Вопрос {question_number}", "<b>Вопрос 3 < 5 {question_number}")
    [problem] = _problems(source)
    assert "bare '<'" in problem and "questions.0.text" in problem


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
