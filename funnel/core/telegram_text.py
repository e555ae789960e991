"""Telegram's text rules, in one place: the HTML subset (checking marketers' texts, escaping
users' text, measuring what the reader sees), the 4096-character limit, and fitting a
message into it without breaking a tag or an entity."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from html.parser import HTMLParser

# The most characters a message's text may have (after entities are parsed).
TELEGRAM_LIMIT = 4096

# Tags Telegram accepts with parse_mode=HTML.
ALLOWED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
     "span", "tg-spoiler", "blockquote", "tg-emoji"}
)  # fmt: skip
TAG = re.compile(r"<[^>]*>")
# Format (bidi overrides, zero-width), control, private-use and lone surrogate characters:
# invisible, yet they reorder or hide what follows them in a manager's or admin's chat.
INVISIBLE = frozenset({"Cf", "Cc", "Co", "Cs"})
ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|lt|gt|amp|quot);")


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problem: str | None = None

    def _fail(self, message: str) -> None:
        if self.problem is None:
            self.problem = message

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self._fail(f"tag <{tag}> is not supported by Telegram")
        elif tag == "a" and not dict(attrs).get("href"):
            self._fail("<a> needs href")
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._fail(f"tag <{tag}/> is not supported by Telegram")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self._fail(f"closing </{tag}> does not match an open tag")
            return
        self.stack.pop()


def check_telegram_html(text: str) -> str | None:
    """None when Telegram would parse `text`; otherwise what is wrong, in words."""
    for match in re.finditer(r"&", text):
        if not ENTITY.match(text, match.start()):
            return "a bare '&' (write &amp;)"
    for match in re.finditer(r"<", text):
        if not re.match(r"</?[a-zA-Z][\w-]*(\s[^<>]*)?/?>", text[match.start() :]):
            return "a bare '<' (write &lt;)"
    checker = _Checker()
    checker.feed(text)
    checker.close()
    if checker.problem:
        return checker.problem
    if checker.stack:
        return f"<{checker.stack[-1]}> is never closed"
    return None


def visible_text(text: str) -> str:
    """What the reader sees: tags removed, entities decoded."""
    return html.unescape(TAG.sub("", text))


def visible_length(text: str) -> int:
    return len(visible_text(text))


def plain_to_html(text: str) -> str:
    """User-written text made safe to embed in an HTML message."""
    return html.escape(text, quote=False)


def cut_plain(text: str, limit: int, ellipsis: str = "…") -> str:
    """A plain (not yet escaped) text cut to `limit` characters."""
    return text if len(text) <= limit else text[: max(0, limit - len(ellipsis))] + ellipsis


def plain_name(text: str | None, limit: int = 64) -> str:
    """A name or username as people see it: invisible characters removed, any run of
    whitespace (line breaks included) made one space, cut to `limit`; plain, not escaped."""
    kept = []
    for ch in text or "":
        if ch.isspace():
            kept.append(" ")
        elif unicodedata.category(ch) not in INVISIBLE:
            kept.append(ch)
    return cut_plain(" ".join("".join(kept).split()), limit)


def fits_telegram(text: str, limit: int = TELEGRAM_LIMIT) -> bool:
    """Whether Telegram accepts the text's length: 1 to `limit` visible characters."""
    return 1 <= visible_length(text) <= limit


def fit_to_telegram(*sections: str, separator: str = "\n\n", limit: int = TELEGRAM_LIMIT) -> str:
    """One message Telegram accepts, from one text or from several sections.

    Sections are joined while the whole stays within `limit` characters as written; one that
    would overflow is left out whole (never a tag cut in half) and the next are still tried.
    When nothing fits that way, the first section is sent if its visible text fits, else its
    visible text is cut and re-escaped: the formatting is lost, the message is not.
    """
    text = ""
    for section in sections:
        candidate = f"{text}{separator}{section}" if text else section
        if len(candidate) <= limit:
            text = candidate
    if fits_telegram(text, limit):
        return text
    first = sections[0] if sections else ""
    if fits_telegram(first, limit):
        return first
    plain = visible_text(first).strip() or "…"
    return plain_to_html(cut_plain(plain, limit))


def lines_that_fit(
    lines: Sequence[str], budget: int, more: Callable[[int], str], cap: int | None = None
) -> list[str]:
    """As many lines as fit in `budget` characters (and `cap` lines), then `more(n)` naming
    the n lines left out ("…and 12 more")."""
    kept: list[str] = []
    used = 0
    for n, line in enumerate(lines):
        rest = len(lines) - n
        tail = len(more(rest)) + 1 if rest > 1 else 0
        if (cap is not None and n >= cap) or used + len(line) + 1 + tail > budget:
            kept.append(more(rest))
            return kept
        kept.append(line)
        used += len(line) + 1
    return kept
