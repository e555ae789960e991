"""The bot's own texts: every key in every language, the same placeholders everywhere, no key
used in the code without its texts, none left over, and plural forms that read right."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from handlers.i18n import DOMAIN, LANGUAGES, locales_dir, t, tn

ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def catalog(language: str) -> dict[str, tuple[str, ...]]:
    path = locales_dir() / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    with path.open("rb") as source:
        messages = read_po(source, locale=language)
    found: dict[str, tuple[str, ...]] = {}
    for message in messages:
        if not message.id:
            continue
        key = message.id[0] if isinstance(message.id, tuple) else message.id
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        found[key] = tuple(strings)
    return found


def keys_named(*functions: str) -> set[str]:
    """The literal keys that calls of `functions` name in bot/, funnel/ and handlers/."""
    used: set[str] = set()
    for folder in ("bot", "funnel", "handlers"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Name)
                    and node.func.id in functions
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    used.add(node.args[0].value)
    return used


def test_every_key_is_in_every_language_with_the_same_placeholders() -> None:
    catalogs = {language: catalog(language) for language in LANGUAGES}
    keys = {language: set(texts) for language, texts in catalogs.items()}
    assert keys["ru"] == keys["en"], keys["ru"] ^ keys["en"]
    for key in keys["ru"]:
        shapes = set()
        for language in LANGUAGES:
            for text in catalogs[language][key]:
                assert text.strip(), f"{language}: {key} is empty"
                shapes.add(frozenset(PLACEHOLDER.findall(text)) - {"n"})
        assert len(shapes) == 1, f"{key}: placeholders differ between languages: {shapes}"


def test_the_code_names_only_keys_that_exist_and_every_key_is_used() -> None:
    known = set(catalog("ru"))
    used = keys_named("t", "tn", "N_")
    assert used - known == set(), "keys without texts"
    assert known - used == set(), "texts no code names"


@pytest.mark.parametrize(
    ("n", "word"), [(1, "сообщение"), (2, "сообщения"), (5, "сообщений"), (21, "сообщение")]
)
def test_russian_plurals(n: int, word: str) -> None:
    text = tn("alert.touches_sent", n, lang="ru", title="T", step=1)
    assert text.endswith(f"{n} {word}")


def test_an_unknown_language_falls_back_to_the_default() -> None:
    assert t("menu.help", lang="de") == t("menu.help", lang="ru") == "Помощь"
    assert t("menu.help", lang="en") == "Help"


def test_counted_texts_are_plural_in_the_catalogs() -> None:
    """`tn` keys have plural forms in every language (what `make i18n-update` keeps)."""
    counted = keys_named("tn")
    assert counted
    plural = {key for key, texts in catalog("en").items() if len(texts) > 1}
    # A plural text read with t() would always take its first form ("2 lead").
    assert plural == counted, plural ^ counted
    for language, forms in (("ru", 3), ("en", 2)):
        texts = catalog(language)
        for key in counted:
            assert len(texts[key]) == forms, (language, key)


# Where Cyrillic may still stand in the application's code: the spellings of a period an
# admin may type in Russian ("7д", "всё") are accepted input, not words the bot says.
ACCEPTED_INPUT = {"funnel/reports/periods.py"}


def test_no_russian_text_is_left_in_the_code() -> None:
    cyrillic = re.compile("[\u0400-\u04ff]")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("bot", "funnel", "handlers")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in ACCEPTED_INPUT
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if cyrillic.search(line)
    ]
    assert not found, "texts belong in locales/: " + ", ".join(found)


def test_english_plurals() -> None:
    assert tn("sources.leads", 1, lang="en", leads="1") == "1 lead"
    assert tn("sources.leads", 2, lang="en", leads="2") == "2 leads"
