"""Request parameters as they travel on the wire (query string, urlencoded, multipart, JSON)
decoded into Python values the way Telegram reads them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from .errors import bad_request
from .state import FileDescriptor

# Parameters whose wire value is a JSON-serialized object or array.
JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "link_preview_options",
        "reply_parameters",
        "allowed_updates",
        "commands",
        "scope",
        "media",
        "suggested_post_parameters",
        "rich_message",
        # payments
        "prices",
        "suggested_tip_amounts",
    }
)
INTEGER_FIELDS = frozenset(
    {
        "chat_id",
        "message_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "cache_time",
        "message_thread_id",
        "direct_messages_topic_id",
        "reply_to_message_id",
        "from_chat_id",
        "duration",
        "width",
        "height",
        "until_date",
        # payments
        "max_tip_amount",
        "photo_size",
        "photo_width",
        "photo_height",
    }
)
BOOLEAN_FIELDS = frozenset(
    {
        "disable_notification",
        "protect_content",
        "allow_paid_broadcast",
        "show_alert",
        "drop_pending_updates",
        "disable_content_type_detection",
        "has_spoiler",
        "show_caption_above_media",
        "allow_sending_without_reply",
        "disable_web_page_preview",
        "revoke_messages",
        "only_if_banned",
        "return_chat_member",
        # payments
        "ok",
        "need_name",
        "need_phone_number",
        "need_email",
        "need_shipping_address",
        "send_phone_number_to_provider",
        "send_email_to_provider",
        "is_flexible",
    }
)
_INTEGER = re.compile(r"^-?\d+$")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass
class Upload:
    """A file attached to a multipart request."""

    filename: str
    content_type: str | None
    data: bytes = field(repr=False)

    def describe(self) -> FileDescriptor:
        return FileDescriptor(self.filename, self.content_type, len(self.data))


def _decode_value(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if name in JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value  # the method reports it with its own wording
    if name in INTEGER_FIELDS and _INTEGER.match(value):
        return int(value)
    if name in BOOLEAN_FIELDS:
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return value


async def read_params(request: web.Request) -> dict[str, Any]:
    """All parameters of a Bot API request, decoded; files become `Upload`s (attach:// links
    resolved)."""
    raw: dict[str, Any] = dict(request.query)
    uploads: dict[str, Upload] = {}
    if request.method == "POST" and request.can_read_body:
        content_type = request.content_type
        if content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise bad_request("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise bad_request("JSON request body must be an object")
            raw.update(body)
        elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, FileField):
                    data = value.file.read()
                    uploads[key] = Upload(value.filename, value.content_type, data)
                else:
                    raw[key] = value
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str) and value.startswith("attach://"):
            upload = uploads.pop(value.removeprefix("attach://"), None)
            if upload is None:
                raise bad_request(f"file {value!r} is not attached")
            params[key] = upload
        else:
            params[key] = _decode_value(key, value)
    # A file sent directly under the parameter's own name (curl -F photo=@chart.png).
    for key, upload in uploads.items():
        params.setdefault(key, upload)
    return params


def for_record(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters as stored in `emu.requests`: uploads reduced to a descriptor."""
    return {k: v.describe() if isinstance(v, Upload) else v for k, v in params.items()}
