"""The bot's own texts (admin replies, managers' cards and buttons, reports, the menu, hints)
in every language, from gettext catalogs: `locales/<lang>/LC_MESSAGES/leadbot.po`.

Code names keys (`t("admin.paid.recorded", lead=12)`, `tn("alert.touches_sent", 3, ...)`
for a counted text); the catalogs hold the words, with Russian plural forms. They are read
as `.po` and compiled in memory with Babel, so no compiled file lives in the repository or
the wheel. Prospects' texts are not here: they are the marketer's script.
"""

from __future__ import annotations

import gettext
import io
from functools import cache
from pathlib import Path
from typing import Any

from aiogram.utils.i18n import I18n
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "leadbot"
LANGUAGES = ("ru", "en")
DEFAULT_LANGUAGE = "ru"


def locales_dir() -> Path:
    """The catalogs: beside the packages in a checkout, inside the package when installed."""
    installed = Path(__file__).resolve().parent / "locales"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "locales"


class Catalogs(I18n):
    """aiogram's I18n (the current locale per update, `gettext` by key) reading `.po`."""

    def find_locales(self) -> dict[str, gettext.GNUTranslations]:
        translations: dict[str, gettext.GNUTranslations] = {}
        for folder in sorted(self.path.iterdir()):
            po = folder / "LC_MESSAGES" / f"{self.domain}.po"
            if not po.is_file():
                continue
            with po.open("rb") as source:
                catalog = read_po(source, locale=folder.name, domain=self.domain)
            compiled = io.BytesIO()
            write_mo(compiled, catalog)
            compiled.seek(0)
            translations[folder.name] = gettext.GNUTranslations(compiled)
        return translations


@cache
def catalogs() -> Catalogs:
    return Catalogs(path=locales_dir(), default_locale=DEFAULT_LANGUAGE, domain=DOMAIN)


def language_of(code: str | None) -> str:
    """A language the bot speaks, for a script's or Telegram's language code."""
    short = (code or "").split("-")[0].lower()
    return short if short in LANGUAGES else DEFAULT_LANGUAGE


def N_(key: str) -> str:
    """Marks a key for `pybabel extract` where its text is read later with `t(key)`: tables
    from a code to its key stay plain data."""
    return key


def t(key: str, /, *, lang: str | None = None, **fields: Any) -> str:
    """The text of `key` in `lang` (default: the current update's language), with `fields`
    filled in."""
    locale = language_of(lang) if lang is not None else None
    template = catalogs().gettext(key, locale=locale)
    return template.format(**fields) if fields else template


def tn(key: str, n: int, /, *, lang: str | None = None, **fields: Any) -> str:
    """A counted text: `n` picks the plural form of `key` (Russian has three) and fills
    `{n}`. A separate function so that `pybabel extract -k tn:1,1` knows it is plural."""
    locale = language_of(lang) if lang is not None else None
    template = catalogs().gettext(key, key, n, locale=locale)
    return template.format(n=n, **fields)
