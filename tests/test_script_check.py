"""`python -m bot check` on the mistakes marketers make: a key written twice, a reference to
something that does not exist, YAML syntax, and the script's own variables; every problem
at the line where the mistake is, with list items named as /campaigns and reports name them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from funnel.core.models import Lead
from funnel.dialogue.messages import text_for
from funnel.script.loading import ScriptError, load_script, parse_script
from tests.conftest import EN_SCRIPT, RU_SCRIPT

SOURCE = RU_SCRIPT.read_text(encoding="utf-8")


def _broken(old: str, new: str, source: str = SOURCE) -> str:
    assert old in source, old
    return source.replace(old, new, 1)


def _line_of(source: str, fragment: str, nth: int = 1) -> int:
    at = -1
    for _ in range(nth):
        at = source.index(fragment, at + 1)
    return source[:at].count("\n") + 1


def _problems(source: str) -> list[str]:
    with pytest.raises(ScriptError) as caught:
        parse_script(source, "ru.yaml")
    return caught.value.problems


# -- duplicate keys -----------------------------------------------------------------------


def test_a_top_level_key_written_twice_is_named_at_the_second() -> None:
    source = _broken('course: "Python-разработчик"\n', 'course: "Python-разработчик"\n' * 2)
    [problem] = _problems(source)
    second = _line_of(source, "course:", 2)
    assert problem.startswith(f"ru.yaml:{second}: 'course' is written twice")
    assert f"first at line {second - 1}" in problem


def test_a_nested_key_written_twice_is_named() -> None:
    # A pasted text under texts: YAML would keep the later one without a word.
    source = _broken("  continue_button:", '  welcome: "Привет"\n  continue_button:')
    [problem] = _problems(source)
    line = _line_of(source, 'welcome: "Привет"')
    assert problem.startswith(f"ru.yaml:{line}: 'welcome'")


def test_a_key_written_twice_inside_a_list_item() -> None:
    source = _broken("    bant: timing\n", "    bant: timing\n    bant: need\n")
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'bant: timing') + 1}: 'bant'")


def test_every_duplicate_is_listed() -> None:
    source = _broken("format: 1\n", "format: 1\nformat: 1\n")
    source = _broken("  forget_no:", "  forget_yes: x\n  forget_no:", source)
    assert len(_problems(source)) == 2


def test_same_names_in_different_places_are_no_duplicate() -> None:
    # `text:` and `id:` appear in many items: only one mapping at a time counts.
    parse_script(SOURCE, "ru.yaml")


# -- references at their own line ---------------------------------------------------------


def test_a_wrong_next_is_named_at_the_next() -> None:
    option = '{id: career, label: "Сменить профессию", score: 30}'
    source = _broken(option, option[:-1] + ", next: expirience}")
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'next: expirience')}: ")
    assert "questions.need.options.career.next" in problem and "'expirience'" in problem
    assert "need, timing, budget, authority" in problem


def test_a_wrong_stage_in_a_campaign_is_named_at_that_stage() -> None:
    source = _broken(
        "    stages: [qualified]\n", "    stages:\n      - qualified\n      - qualifyed\n"
    )
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, '- qualifyed')}: ")
    assert "campaigns.nurture_qualified.stages.2" in problem and "'qualifyed'" in problem


def test_a_wrong_button_of_a_step_is_named_with_the_step_counted_from_one() -> None:
    source = _broken("        buttons: [trial]\n", "        buttons: [trail]\n")
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'buttons: [trail]')}: ")
    # The second step of the campaign, as /campaigns numbers it.
    assert "campaigns.nurture_qualified.steps.2.buttons.1" in problem


def test_a_wrong_outcome_stage_and_button() -> None:
    source = _broken("    stage: disqualified\n    text:", "    stage: disqalified\n    text:")
    source = _broken("buttons: [book, trial]", "buttons: [book, trail]", source)
    first, second = _problems(source)
    assert first.startswith(f"ru.yaml:{_line_of(source, 'buttons: [book, trail]')}: ")
    assert "outcomes.hot.buttons.2" in first and "'trail'" in first
    assert second.startswith(f"ru.yaml:{_line_of(source, 'stage: disqalified')}: ")
    assert "outcomes.disqualified.stage" in second


def test_a_wrong_disqualifier_reference() -> None:
    source = _broken("when: {need: curious, timing: not_now}", "when: {need: curios}")
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'need: curios')}: ")
    assert "disqualifiers.just_curious.when.need" in problem and "'curios'" in problem


def test_a_wrong_exit_reason_and_role() -> None:
    source = _broken("exit_reasons: [not_now]", "exit_reasons: [not_yet]")
    source = _broken("exit_stages:", "roles: {booked: consult}\nexit_stages:", source)
    problems = _problems(source)
    assert len(problems) == 2
    assert problems[0].startswith(f"ru.yaml:{_line_of(source, 'booked: consult')}: roles.booked")
    assert problems[1].startswith(f"ru.yaml:{_line_of(source, '[not_yet]')}: ")
    assert "campaigns.winback_not_now.exit_reasons.1" in problems[1]


def test_two_questions_with_one_id_are_named_at_the_second() -> None:
    source = _broken("  - id: authority\n", "  - id: budget\n")
    problems = _problems(source)
    assert problems[0].startswith(f"ru.yaml:{_line_of(source, '- id: budget', 2)}: ")
    assert "same id 'budget'" in problems[0]


def test_problems_are_listed_in_the_order_of_the_file() -> None:
    # vars: come early in the file and last in the checks' own order.
    source = _broken("after: 23h", "after: 23x")
    source = _broken('  manager_name: "Анна"', "  manager_name: [a]", source)
    lines = [int(p.split(":")[1]) for p in _problems(source)]
    assert lines == sorted(lines) and len(lines) == 2


def test_a_value_error_in_a_step_is_counted_from_one() -> None:
    source = _broken("after: 23h", "after: 23x")
    [problem] = _problems(source)
    assert "campaigns.nurture_dialogue.steps.2.after" in problem


# -- YAML syntax in plain words -----------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "line_of", "words"),
    [
        (
            '  stopped: "Хорошо,',
            "  stopped: Итак: хорошо,",
            "stopped: Итак",
            "a colon inside a text: put the text in quotes",
        ),
        ("  forget_no:", "\tforget_no:", "forget_no:", "a tab character"),
        ('  forget_no: "Нет', '   forget_no: "Нет', "forget_no:", "indented differently"),
        ("  forget_no:", "  forget_yes: Да\n    forget_no:", "forget_no:", "indented more than"),
        ("  - id: budget\n", " - id: budget\n", "- id: budget", "indented differently"),
        (
            '  forget_yes: "Да, удалить"',
            '  forget_yes: "Да, удалить',
            "forget_yes:",
            "never closed",
        ),
        ("stages: [new, engaged]", "stages: [new, engaged", "stages: [new, engaged", "not closed"),
        ("  forget_no:", "  forget_never\n  forget_no:", "forget_never", "without 'name: value'"),
        (
            '  forget_no: "Нет, оставить"',
            "  forget_no: @нет",
            "forget_no: @",
            "put the text in quotes",
        ),
    ],
    ids=[
        "colon",
        "tab",
        "over-indented",
        "over-indented-text",
        "list-indent",
        "quote",
        "list",
        "no-colon",
        "at-sign",
    ],
)
def test_yaml_syntax_errors_in_plain_words(old: str, new: str, line_of: str, words: str) -> None:
    source = _broken(old, new)
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, line_of)}: not valid YAML: "), problem
    assert words in problem, problem


# -- vars and placeholders ----------------------------------------------------------------


def test_an_unknown_placeholder_is_named_at_its_text_and_points_to_vars() -> None:
    source = _broken("от {price_month} в месяц", "от {price} в месяц")
    [problem] = _problems(source)
    # A text written with |- is reported at its first line, the one with |-.
    assert problem.startswith(f"ru.yaml:{_line_of(source, '{price} в месяц') - 1}: ")
    assert "questions.budget.text" in problem and "{price}" in problem
    assert "{price_month}" in problem and "vars:" in problem


def test_a_declared_var_may_be_used_in_any_text() -> None:
    source = _broken('  price_month: "6 900 ₽"\n', '  price_month: "6 900 ₽"\n  price: 49900\n')
    source = _broken("Если передумаете", "Курс стоит {price} ₽. Если передумаете", source)
    script = parse_script(source, "ru.yaml")
    assert script.vars["price"] == "49900"  # a bare number is a text to show


def test_a_var_may_not_take_a_name_the_bot_fills() -> None:
    source = _broken('  manager_name: "Анна"\n', '  manager_name: "Анна"\n  first_name: "Аня"\n')
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'first_name: ')}: vars.first_name: ")
    assert "'first_name' is filled by the bot" in problem


@pytest.mark.parametrize("value", ['""', "[a, b]", '"' + "x" * 201 + '"'])
def test_a_var_must_be_a_short_text(value: str) -> None:
    source = _broken('  manager_name: "Анна"', f"  manager_name: {value}")
    [problem] = _problems(source)
    assert problem.startswith(f"ru.yaml:{_line_of(source, 'manager_name: ')}: vars.manager_name")


def _lead(first_name: str = "Мария", position: str | None = "need") -> Lead:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    return Lead(
        id=1, user_id=1, chat_id=1, first_name=first_name, stage="new", position=position,
        script_version="x", cycle=1, cycle_started_at=now, created_at=now, stage_changed_at=now,
    )  # fmt: skip


def test_the_shipped_russian_texts_read_correctly() -> None:
    script = load_script(RU_SCRIPT)
    welcome = text_for(script, _lead(), script.texts.welcome)
    assert "Я помощник Школы «Код будущего»" in welcome
    assert "вопросов всего 4" in welcome
    assert "в Школе «Код будущего»" in text_for(script, _lead(), script.texts.help)
    assert "Школа «" not in welcome + text_for(script, _lead(), script.texts.help)
    budget = script.question("budget")
    assert budget is not None and "6 900 ₽" in text_for(script, _lead(), budget.text)


def test_the_number_of_questions_follows_the_script() -> None:
    five = _broken(
        "# Жёсткие стоп-факторы",
        '  - id: format\n    text: "Какой формат удобнее?"\n'
        '    options: [{id: online, label: "Онлайн"}]\n\n# Жёсткие стоп-факторы',
    )
    script = parse_script(five, "ru.yaml")
    assert "вопросов всего 5" in text_for(script, _lead(), script.texts.welcome)
    english = load_script(EN_SCRIPT)
    assert "4 quick questions" in text_for(english, _lead(), english.texts.welcome)


def test_var_values_are_escaped_as_plain_text() -> None:
    source = _broken('  manager_name: "Анна"', '  manager_name: "Анна <b>&"')
    script = parse_script(source, "ru.yaml")
    reply = script.buttons["book"].reply
    assert reply is not None
    assert "Анна &lt;b&gt;&amp;" in text_for(script, _lead(), reply)


def test_question_number_is_known_outside_questions_too() -> None:
    script = load_script(RU_SCRIPT)
    text = text_for(script, _lead(position="budget"), "{question_number} из {questions_total}")
    assert text == "3 из 4"


# -- what a reload changed ----------------------------------------------------------------


def test_the_diff_names_questions_texts_and_campaigns_by_key() -> None:
    from funnel.script.diff import diff_scripts

    old = load_script(RU_SCRIPT)
    source = _broken('version: "2026-11-1"', 'version: "v2"')
    source = _broken("Зачем вам Python?", "Для чего вам Python?", source)
    source = _broken("  - id: authority\n", "  - id: decision\n", source)
    source = _broken('  price_month: "6 900 ₽"', '  price_month: "7 900 ₽"', source)
    source = _broken("after: 23h", "after: 20h", source)
    source = _broken('send_window: {start: "10:00"', 'send_window: {start: "09:00"', source)
    diff = diff_scripts(old, parse_script(source, "ru.yaml"))
    assert diff.questions.added == ("decision",) and diff.questions.removed == ("authority",)
    assert diff.questions.changed == ("need",)
    assert diff.texts.changed == ("vars.price_month",)
    assert diff.campaigns.changed == ("nurture_dialogue",)
    assert diff.other == ("send_window",)
    same = diff_scripts(old, load_script(RU_SCRIPT))
    assert same.empty


# -- the time scale of a test run ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scale"), [(None, 3600.0), ("", 3600.0), ("600", 600.0), ("x60", 60.0), ("1", 1.0)]
)
def test_a_time_scale_is_read(text: str | None, scale: float) -> None:
    from funnel.dialogue.test_run import parse_scale

    assert parse_scale(text) == scale


@pytest.mark.parametrize("text", ["0", "0.5", "-3", "nan", "inf", "1e9", "fast", "x"])
def test_a_bad_time_scale_is_refused_in_words(text: str) -> None:
    from funnel.dialogue.test_run import parse_scale

    with pytest.raises(ValueError, match="time scale"):
        parse_scale(text)


def test_the_chat_refuses_a_bad_time_scale(capsys: pytest.CaptureFixture[str]) -> None:
    from bot.__main__ import main

    with pytest.raises(SystemExit) as leaving:
        main(["chat", "--time-scale", "0"])
    assert leaving.value.code == 2
    assert "time scale is between 1 and" in capsys.readouterr().err
