"""Telegram's HTML formatting subset: a strict parser that validates a text the way the Bot API
does and yields the plain text (tags removed, character entities decoded) and MessageEntities."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Tag -> MessageEntity type. `span` and `a` need attributes, checked in `_open_entity`.
_TAG_ENTITY: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_NAMED_ENTITIES: dict[str, str] = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_URL_SCHEMES = ("http://", "https://", "tg://", "ton://", "mailto:")


class HtmlParseError(ValueError):
    """Not valid Telegram HTML; str(error) is what follows "can't parse entities: "."""


@dataclass(frozen=True)
class ParsedText:
    """A text as Telegram stores it: trimmed plain text plus entities (offsets in UTF-16 units)."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _OpenTag:
    name: str
    start: int  # UTF-16 offset in the plain text where the tag's content begins
    byte_offset: int
    attributes: dict[str, str]


def utf16_len(text: str) -> int:
    """Length as Telegram counts entity offsets: UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(source: str, index: int) -> int:
    # Telegram reports positions in UTF-8 bytes; computed only when an error is raised.
    return len(source[:index].encode("utf-8"))


def _decode_entity(source: str, index: int) -> tuple[str, int]:
    """Decode the character entity starting at `source[index] == "&"`; return (char, next index).

    Stricter than Telegram, which keeps an unknown `&...` literally: an unescaped `&` in a text
    sent with parse_mode=HTML is almost always user data that the bot forgot to escape, and that
    same bug turns into a hard 400 as soon as the data contains `<`.
    """
    end = source.find(";", index + 1, index + 12)
    name = source[index + 1 : end] if end != -1 else ""
    if name.startswith("#"):
        digits = name[1:]
        try:
            code = int(digits[1:], 16) if digits[:1] in ("x", "X") else int(digits, 10)
        except ValueError:
            code = -1
        if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
            return chr(code), end + 1
    elif name in _NAMED_ENTITIES:
        return _NAMED_ENTITIES[name], end + 1
    raise HtmlParseError(
        f'Character "&" at byte offset {_byte_offset(source, index)} must be escaped as "&amp;"'
    )


def _decode_value(source: str, value: str, value_index: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "&":
            try:
                char, nxt = _decode_entity(value, i)
            except HtmlParseError:
                raise HtmlParseError(
                    f'Character "&" at byte offset {_byte_offset(source, value_index + i)} '
                    'must be escaped as "&amp;"'
                ) from None
            out.append(char)
            i = nxt
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _parse_start_tag(source: str, index: int) -> tuple[_OpenTag, int]:
    """Parse `<name attr="v" ...>` at `index`; return the tag (start unset) and the next index."""
    n = len(source)
    j = index + 1
    while j < n and not source[j].isspace() and source[j] != ">":
        j += 1
    if j >= n:
        raise HtmlParseError(f"Unclosed start tag at byte offset {_byte_offset(source, index)}")
    name = source[index + 1 : j].lower()
    byte_offset = _byte_offset(source, index)
    if name not in _TAG_ENTITY:
        raise HtmlParseError(f'Unsupported start tag "{name}" at byte offset {byte_offset}')
    attributes: dict[str, str] = {}
    while True:
        while j < n and source[j].isspace():
            j += 1
        if j >= n:
            raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset}")
        if source[j] == ">":
            return _OpenTag(name, 0, byte_offset, attributes), j + 1
        k = j
        while k < n and (source[k].isalnum() or source[k] in "-_"):
            k += 1
        attribute = source[j:k].lower()
        if not attribute:
            raise HtmlParseError(
                f'Empty attribute name in the tag "{name}" at byte offset {byte_offset}'
            )
        while k < n and source[k].isspace():
            k += 1
        if k >= n or source[k] != "=":
            if name == "blockquote" and attribute == "expandable":
                attributes[attribute] = ""
                j = k
                continue
            raise HtmlParseError(
                "Expected equal sign in declaration of an attribute of the tag "
                f'"{name}" at byte offset {byte_offset}'
            )
        k += 1
        while k < n and source[k].isspace():
            k += 1
        if k < n and source[k] in "\"'":
            close = source.find(source[k], k + 1)
            if close == -1:
                raise HtmlParseError(f"Unclosed start tag at byte offset {byte_offset}")
            attributes[attribute] = _decode_value(source, source[k + 1 : close], k + 1)
            j = close + 1
        else:
            end = k
            while end < n and not source[end].isspace() and source[end] != ">":
                end += 1
            attributes[attribute] = _decode_value(source, source[k:end], k)
            j = end


def _check_attributes(tag: _OpenTag) -> None:
    if tag.name == "span" and tag.attributes.get("class") != "tg-spoiler":
        raise HtmlParseError(
            f'Tag "span" must have class "tg-spoiler" at byte offset {tag.byte_offset}'
        )
    if tag.name == "tg-emoji":
        emoji_id = tag.attributes.get("emoji-id")
        if emoji_id is None:
            raise HtmlParseError(
                f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {tag.byte_offset}'
            )
        if not emoji_id.isdigit():
            raise HtmlParseError("Invalid custom emoji identifier specified")


def _close_entity(
    tag: _OpenTag, end: int, parent: _OpenTag | None, entities: list[dict[str, Any]]
) -> None:
    if tag.name == "code" and parent is not None and parent.name == "pre":
        # <pre><code class="language-x"> is one `pre` entity with a language, not two entities.
        language = tag.attributes.get("class", "")
        if language.startswith("language-") and len(language) > len("language-"):
            parent.attributes["language"] = language[len("language-") :]
        return
    length = end - tag.start
    if length <= 0:
        return  # Telegram drops entities that cover no text
    kind = _TAG_ENTITY[tag.name]
    entity: dict[str, Any] = {"type": kind, "offset": tag.start, "length": length}
    if kind == "text_link":
        url = tag.attributes.get("href", "")
        if not url.lower().startswith(_URL_SCHEMES):
            return  # Telegram silently drops links it cannot open
        entity["url"] = url
    elif kind == "pre" and tag.attributes.get("language"):
        entity["language"] = tag.attributes["language"]
    elif kind == "blockquote" and "expandable" in tag.attributes:
        entity["type"] = "expandable_blockquote"
    elif kind == "custom_emoji":
        entity["custom_emoji_id"] = tag.attributes["emoji-id"]
    entities.append(entity)


def strip_text(text: str, entities: list[dict[str, Any]]) -> ParsedText:
    """Trim surrounding whitespace as Telegram does, shifting and clipping the entities."""
    stripped = text.strip()
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    total = utf16_len(stripped)
    result: list[dict[str, Any]] = []
    for entity in entities:
        start = max(0, int(entity["offset"]) - lead)
        end = min(total, int(entity["offset"]) + int(entity["length"]) - lead)
        if end > start:
            result.append({**entity, "offset": start, "length": end - start})
    result.sort(key=lambda e: (e["offset"], -e["length"]))
    return ParsedText(stripped, result)


def parse_html(source: str) -> ParsedText:
    """Parse Telegram HTML; raise HtmlParseError with Telegram's wording on the first problem."""
    out: list[str] = []
    position = 0  # UTF-16 length of `out`
    stack: list[_OpenTag] = []
    entities: list[dict[str, Any]] = []
    i = 0
    n = len(source)
    while i < n:
        char = source[i]
        if char == "&":
            decoded, i = _decode_entity(source, i)
            out.append(decoded)
            position += utf16_len(decoded)
        elif char == "<" and i + 1 < n and source[i + 1] == "/":
            close = source.find(">", i)
            if close == -1:
                raise HtmlParseError(f"Unclosed end tag at byte offset {_byte_offset(source, i)}")
            name = source[i + 2 : close].rstrip().lower()
            if not stack:
                raise HtmlParseError(
                    f"Unexpected end tag at byte offset {_byte_offset(source, i)}"
                )
            if stack[-1].name != name:
                raise HtmlParseError(
                    f"Unmatched end tag at byte offset {_byte_offset(source, i)}, "
                    f'expected "</{stack[-1].name}>", found "</{name}>"'
                )
            tag = stack.pop()
            _close_entity(tag, position, stack[-1] if stack else None, entities)
            i = close + 1
        elif char == "<":
            tag, i = _parse_start_tag(source, i)
            _check_attributes(tag)
            tag.start = position
            stack.append(tag)
        else:
            out.append(char)
            position += 2 if ord(char) > 0xFFFF else 1
            i += 1
    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    return strip_text("".join(out), entities)


def html_to_plain(source: str) -> str:
    """Plain text of a valid Telegram-HTML string (raises HtmlParseError if it is not valid)."""
    return parse_html(source).text
