"""Telegram's HTML subset as the bot writes it: checking marketers' texts, measuring length,
and cutting a text to Telegram's limit without breaking a tag or an entity."""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

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


def fit_html(text: str, limit: int = 4096) -> str:
    """`text` if Telegram accepts its length; else its visible text, cut and re-escaped
    (formatting is lost, the message is not)."""
    if 1 <= visible_length(text) <= limit:
        return text
    plain = visible_text(text).strip() or "…"
    return plain_to_html(cut_plain(plain, limit))
