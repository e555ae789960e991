"""The Bot API methods the emulator serves: Telegram's validation, flood limits and the effect
of each call on the world."""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ApiError, bad_request, forbidden
from .html_entities import HtmlParseError, ParsedText, parse_html, strip_text
from .inbound import member_object
from .limits import RateLimiter
from .markup import ParsedMarkup, parse_reply_markup
from .params import Upload
from .payments import PaymentMethods
from .state import (
    BotIdentity,
    BotMessage,
    CallbackAnswer,
    ChatRecord,
    FileInfo,
    WebhookConfig,
    World,
)

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_ANSWER = 200
SENDING_METHODS = frozenset({"sendMessage", "sendPhoto", "sendDocument", "sendInvoice"})
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_COMMAND = re.compile(r"^[a-z0-9_]{1,32}$")
_SECRET_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DEFAULT_PHOTO_SIZE = (800, 600)
_THUMBNAIL_SIDES = (90, 320, 800, 1280)
_MAX_PHOTO_SIDE = 2560

Handler = Callable[[BotIdentity, dict[str, Any]], Awaitable[Any]]


def _present(params: dict[str, Any], name: str) -> bool:
    return params.get(name) not in (None, "")


def _require(params: dict[str, Any], name: str) -> Any:
    if not _present(params, name):
        raise bad_request(f"{name} is empty")
    return params[name]


def _integer(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"invalid {name} specified")
    return value


def _string(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a String")
    return value


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data.startswith(_PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


class BotApi:
    """Dispatches a decoded request to its method; raises ApiError for what Telegram refuses."""

    def __init__(self, world: World, limiter: RateLimiter | None) -> None:
        self.world = world
        self.limiter = limiter
        self.closing = False
        self._poll_generation = 0
        self.handlers: dict[str, Handler] = {
            "getMe": self.get_me,
            "getUpdates": self.get_updates,
            "setWebhook": self.set_webhook,
            "deleteWebhook": self.delete_webhook,
            "getWebhookInfo": self.get_webhook_info,
            "setMyCommands": self.set_my_commands,
            "getMyCommands": self.get_my_commands,
            "deleteMyCommands": self.delete_my_commands,
            "sendMessage": self.send_message,
            "sendPhoto": self.send_photo,
            "sendDocument": self.send_document,
            "editMessageText": self.edit_message_text,
            "editMessageReplyMarkup": self.edit_message_reply_markup,
            "answerCallbackQuery": self.answer_callback_query,
            "sendChatAction": self.send_chat_action,
            "deleteMessage": self.delete_message,
            "getChat": self.get_chat,
            "getChatMember": self.get_chat_member,
        }
        # Payments (sendInvoice, answerPreCheckoutQuery, refundStarPayment) live apart.
        self.handlers.update(PaymentMethods(self).handlers())
        # Telegram's method names are case-insensitive.
        self.canonical = {name.lower(): name for name in self.handlers}

    def wake_pollers(self) -> None:
        self.closing = True
        self.world.updates_changed.notify()

    # --- shared checks ---------------------------------------------------------------------

    def _chat(self, params: dict[str, Any]) -> ChatRecord:
        chat_id = _require(params, "chat_id")
        chat = self.world.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise bad_request("chat not found")
        return chat

    def _check_can_write(self, chat: ChatRecord) -> None:
        user = chat.user
        if user is not None:
            if user.deactivated:
                raise forbidden("user is deactivated")
            if user.blocked:
                raise forbidden("bot was blocked by the user")
            if not user.started:
                raise forbidden("bot can't initiate conversation with a user")
        elif chat.bot_status == "kicked":
            raise forbidden("bot was kicked from the supergroup chat")
        elif chat.bot_status == "left":
            raise forbidden("bot is not a member of the supergroup chat")

    def _flood_check(self, bot: BotIdentity, chat: ChatRecord) -> None:
        if self.limiter is None:
            return
        retry_after = self.limiter.acquire(bot.id, chat.id, chat.is_group)
        if retry_after is not None:
            raise ApiError(
                429,
                f"Too Many Requests: retry after {retry_after}",
                {"retry_after": retry_after},
            )

    def _parse_text(
        self,
        text: str,
        parse_mode: Any,
        entities: Any,
        what: str,
    ) -> tuple[ParsedText, str | None]:
        mode = parse_mode if isinstance(parse_mode, str) and parse_mode else None
        if mode is not None and mode.lower() not in ("html", "markdown", "markdownv2"):
            raise bad_request(f"unsupported parse_mode {mode!r}")
        if mode is not None and mode.lower() == "html":
            try:
                return parse_html(text), mode
            except HtmlParseError as error:
                raise bad_request(f"can't parse entities: {error}") from None
        given: list[dict[str, Any]] = []
        if entities not in (None, ""):
            if not isinstance(entities, list) or not all(
                isinstance(e, dict)
                and isinstance(e.get("type"), str)
                and isinstance(e.get("offset"), int)
                and isinstance(e.get("length"), int)
                for e in entities
            ):
                raise bad_request(f"can't parse {what} entities JSON object")
            given = entities
        # Markdown modes are accepted as is: the bot formats with HTML only.
        return strip_text(text, given), mode

    def _message_text(self, params: dict[str, Any]) -> tuple[str, ParsedText, str | None]:
        text = params.get("text")
        if text is not None and not isinstance(text, str):
            raise bad_request("message text must be a String")
        if not text:
            raise bad_request("message text is empty")
        parsed, mode = self._parse_text(text, params.get("parse_mode"), params.get("entities"), "")
        if not parsed.text:
            raise bad_request("message text is empty")
        if len(parsed.text) > MAX_TEXT:
            raise bad_request("message is too long")
        return text, parsed, mode

    def _caption(self, params: dict[str, Any]) -> tuple[str, ParsedText, str | None]:
        caption = _string(params, "caption") or ""
        parsed, mode = self._parse_text(
            caption, params.get("parse_mode"), params.get("caption_entities"), "caption"
        )
        if len(parsed.text) > MAX_CAPTION:
            raise bad_request("message caption is too long")
        return caption, parsed, mode

    def _reply_to(self, chat: ChatRecord, params: dict[str, Any]) -> int | None:
        reply = params.get("reply_parameters")
        message_id: Any = params.get("reply_to_message_id")
        allow_missing = params.get("allow_sending_without_reply") is True
        if isinstance(reply, dict):
            message_id = reply.get("message_id")
            allow_missing = reply.get("allow_sending_without_reply") is True
        elif reply not in (None, ""):
            raise bad_request("can't parse reply parameters JSON object")
        if message_id is None:
            return None
        exists = message_id in chat.user_messages or (
            message_id in chat.by_id and not chat.by_id[message_id].deleted
        )
        if not exists:
            if allow_missing:
                return None
            raise bad_request("message to be replied not found")
        return int(message_id)

    def _message_raw(
        self,
        bot: BotIdentity,
        chat: ChatRecord,
        message: BotMessage,
        inline: dict[str, Any] | None,
    ) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "message_id": message.message_id,
            "from": bot.to_api(),
            "chat": chat.to_api(),
            "date": message.date,
        }
        entities_key = "entities"
        if message.kind == "text":
            raw["text"] = message.plain_text
        else:
            entities_key = "caption_entities"
            if message.plain_text:
                raw["caption"] = message.plain_text
        if message.entities:
            raw[entities_key] = message.entities
        if message.photo is not None:
            raw["photo"] = self._photo_sizes(message.photo)
        if message.document is not None:
            doc = message.document
            raw["document"] = {
                "file_id": doc.file_id,
                "file_unique_id": doc.file_unique_id,
                "file_size": doc.file_size,
            }
            if doc.file_name:
                raw["document"]["file_name"] = doc.file_name
            if doc.mime_type:
                raw["document"]["mime_type"] = doc.mime_type
        if message.reply_to_message_id is not None:
            replied = chat.user_messages.get(message.reply_to_message_id)
            original = replied.raw if replied is not None else None
            if original is None and message.reply_to_message_id in chat.by_id:
                original = chat.by_id[message.reply_to_message_id].raw
            if original:
                raw["reply_to_message"] = {
                    k: v for k, v in original.items() if k != "reply_to_message"
                }
        if message.edit_date is not None:
            raw["edit_date"] = message.edit_date
        if inline is not None:
            raw["reply_markup"] = inline
        return raw

    def _deliver(
        self,
        bot: BotIdentity,
        method: str,
        chat: ChatRecord,
        message: BotMessage,
        markup: ParsedMarkup,
    ) -> dict[str, Any]:
        message.raw = self._message_raw(bot, chat, message, markup.inline)
        stats = self.world.stats
        stats.sent += 1
        stats.sent_by_method[method] += 1
        stats.sent_by_chat[chat.id] += 1
        self.world.add_bot_message(chat, message)
        return message.raw

    # --- files -----------------------------------------------------------------------------

    def _register_file(self, info: FileInfo) -> FileInfo:
        self.world.files[info.file_id] = info
        return info

    def _file(self, params: dict[str, Any], name: str, kind: str) -> FileInfo:
        value = _require(params, name)
        if isinstance(value, Upload):
            if not value.data:
                raise bad_request("file must be non-empty")
            prefix = "AgACAgIAAxkBAAI" if kind == "photo" else "BQACAgIAAxkBAAI"
            info = FileInfo(
                file_id=self.world.unique(prefix),
                file_unique_id=self.world.unique("AQAD"),
                kind=kind,
                file_name=value.filename,
                mime_type=self._mime_type(value),
                file_size=len(value.data),
                data=value.data,
            )
            if kind == "photo":
                info.width, info.height = _png_size(value.data) or _DEFAULT_PHOTO_SIZE
            return self._register_file(info)
        if isinstance(value, str):
            if value in self.world.files:
                return self.world.files[value]
            if value.startswith(("http://", "https://")):
                info = FileInfo(
                    file_id=self.world.unique("AgACAgIAAxkBAAI"),
                    file_unique_id=self.world.unique("AQAD"),
                    kind=kind,
                    file_name=value.rsplit("/", 1)[-1] or None,
                    mime_type=mimetypes.guess_type(value)[0],
                )
                if kind == "photo":
                    info.width, info.height = _DEFAULT_PHOTO_SIZE
                return self._register_file(info)
        raise bad_request("wrong file identifier/HTTP URL specified")

    @staticmethod
    def _mime_type(upload: Upload) -> str | None:
        if upload.content_type and upload.content_type != "application/octet-stream":
            return upload.content_type
        return mimetypes.guess_type(upload.filename)[0] or upload.content_type

    def _photo_sizes(self, info: FileInfo) -> list[dict[str, Any]]:
        """Telegram stores a photo in several sizes (thumbnails first, then the largest)."""
        width, height = info.width or 1, info.height or 1
        longest = max(width, height)
        sides = [side for side in _THUMBNAIL_SIDES if side < longest]
        sides.append(min(longest, _MAX_PHOTO_SIDE))
        sizes: list[dict[str, Any]] = []
        for index, side in enumerate(sides):
            scale = side / longest
            last = index == len(sides) - 1
            sizes.append(
                {
                    "file_id": info.file_id if last else f"{info.file_id}_{side}",
                    "file_unique_id": info.file_unique_id
                    if last
                    else f"{info.file_unique_id}_{side}",
                    "width": max(1, round(width * scale)),
                    "height": max(1, round(height * scale)),
                    "file_size": info.file_size
                    if last
                    else max(1, int(info.file_size * scale * scale)),
                }
            )
        return sizes

    # --- methods ---------------------------------------------------------------------------

    async def get_me(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        return {
            **bot.to_api(),
            "can_join_groups": True,
            "can_read_all_group_messages": True,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def get_updates(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        if self.world.webhook is not None:
            raise ApiError(409, WEBHOOK_ACTIVE)
        offset = _integer(params, "offset")
        limit = min(100, max(1, _integer(params, "limit", 100) or 100))
        timeout = max(0, _integer(params, "timeout", 0) or 0)
        allowed = params.get("allowed_updates")
        if allowed not in (None, "") and not (
            isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)
        ):
            raise bad_request("can't parse allowed_updates JSON array")
        if offset is not None:
            self.world.confirm(offset)
        self.world.set_allowed_updates(allowed if isinstance(allowed, list) else None)
        # A newer getUpdates terminates a waiting one, as on Telegram.
        self._poll_generation += 1
        generation = self._poll_generation
        self.world.updates_changed.notify()

        def ready() -> tuple[str, list[dict[str, Any]]] | None:
            if generation != self._poll_generation:
                return ("conflict", [])
            updates = self.world.pending_updates(limit)
            if updates or self.closing:
                return ("updates", updates)
            return None

        try:
            outcome, updates = await self.world.updates_changed.wait_until(ready, timeout or 0.0)
        except TimeoutError:
            return []
        if outcome == "conflict":
            raise ApiError(409, CONFLICT)
        return updates

    async def set_webhook(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        url = _string(params, "url") or ""
        if not url:
            # An empty URL removes the webhook, as on Telegram.
            return await self.delete_webhook(bot, params)
        if not url.startswith(("https://", "http://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = _string(params, "secret_token")
        if secret is not None and not _SECRET_TOKEN.match(secret):
            raise bad_request("bad webhook: secret token contains unallowed characters")
        connections = _integer(params, "max_connections", 40) or 40
        if not 1 <= connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        allowed = params.get("allowed_updates")
        if allowed not in (None, "") and not (
            isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)
        ):
            raise bad_request("can't parse allowed_updates JSON array")
        if params.get("drop_pending_updates") is True:
            self.world.drop_pending_updates()
        self.world.set_allowed_updates(allowed if isinstance(allowed, list) else None)
        self.world.webhook = WebhookConfig(url, secret, connections)
        # A waiting getUpdates ends; the delivery starts.
        self._poll_generation += 1
        self.world.updates_changed.notify()
        return True

    async def delete_webhook(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        if params.get("drop_pending_updates") is True:
            self.world.drop_pending_updates()
        self.world.webhook = None
        self.world.updates_changed.notify()
        return True

    async def get_webhook_info(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        hook = self.world.webhook
        info: dict[str, Any] = {
            "url": hook.url if hook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.world.updates),
        }
        if hook is not None:
            info["max_connections"] = hook.max_connections
            if hook.last_error_date is not None:
                info["last_error_date"] = hook.last_error_date
                info["last_error_message"] = hook.last_error_message or ""
            if self.world.allowed_updates is not None:
                info["allowed_updates"] = sorted(self.world.allowed_updates)
        return info

    @staticmethod
    def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
        scope = params.get("scope")
        if scope in (None, ""):
            scope = {"type": "default"}
        if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
            raise bad_request("can't parse BotCommandScope JSON object")
        language = params.get("language_code") or ""
        if not isinstance(language, str):
            raise bad_request("invalid language_code specified")
        return json.dumps(scope, sort_keys=True), language

    async def set_my_commands(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if commands is None:
            raise bad_request("commands is empty")
        if not isinstance(commands, list) or len(commands) > 100:
            raise bad_request("can't parse commands JSON array")
        for command in commands:
            if not isinstance(command, dict):
                raise bad_request("can't parse BotCommand JSON object")
            if not isinstance(command.get("command"), str) or not _COMMAND.match(
                command["command"]
            ):
                raise bad_request("BOT_COMMAND_INVALID")
            description = command.get("description")
            if not isinstance(description, str) or not 1 <= len(description) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(params)
        self.world.commands[key] = [
            {"command": c["command"], "description": c["description"]} for c in commands
        ]
        return True

    async def get_my_commands(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        return list(self.world.commands.get(self._commands_key(params), []))

    async def delete_my_commands(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        self.world.commands.pop(self._commands_key(params), None)
        return True

    async def send_message(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        self._check_can_write(chat)
        text, parsed, mode = self._message_text(params)
        markup = parse_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_to(chat, params)
        self._flood_check(bot, chat)
        message = BotMessage(
            message_id=chat.next_message_id(),
            chat_id=chat.id,
            date=self.world.now(),
            kind="text",
            text=text,
            plain_text=parsed.text,
            parse_mode=mode,
            entities=parsed.entities,
            buttons=markup.buttons,
            reply_keyboard=markup.reply_keyboard,
            remove_keyboard=markup.remove_keyboard,
            reply_to_message_id=reply_to,
        )
        return self._deliver(bot, "sendMessage", chat, message, markup)

    async def _send_media(self, bot: BotIdentity, params: dict[str, Any], kind: str) -> Any:
        chat = self._chat(params)
        self._check_can_write(chat)
        caption, parsed, mode = self._caption(params)
        markup = parse_reply_markup(params.get("reply_markup"))
        reply_to = self._reply_to(chat, params)
        info = self._file(params, kind, kind)
        self._flood_check(bot, chat)
        message = BotMessage(
            message_id=chat.next_message_id(),
            chat_id=chat.id,
            date=self.world.now(),
            kind=kind,
            text=caption,
            plain_text=parsed.text,
            parse_mode=mode,
            entities=parsed.entities,
            buttons=markup.buttons,
            reply_keyboard=markup.reply_keyboard,
            remove_keyboard=markup.remove_keyboard,
            photo=info if kind == "photo" else None,
            document=info if kind == "document" else None,
            reply_to_message_id=reply_to,
        )
        method = "sendPhoto" if kind == "photo" else "sendDocument"
        return self._deliver(bot, method, chat, message, markup)

    async def send_photo(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        return await self._send_media(bot, params, "photo")

    async def send_document(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        return await self._send_media(bot, params, "document")

    def _editable(self, params: dict[str, Any]) -> tuple[ChatRecord, BotMessage]:
        if _present(params, "inline_message_id"):
            raise bad_request("MESSAGE_ID_INVALID")  # no inline mode in the emulator
        chat = self._chat(params)
        message_id = _integer(params, "message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        self._check_can_write(chat)
        message = chat.by_id.get(message_id)
        if message is None or message.deleted:
            if message_id in chat.user_messages:
                raise bad_request("message can't be edited")
            raise bad_request("message to edit not found")
        return chat, message

    def _apply_edit(
        self,
        bot: BotIdentity,
        chat: ChatRecord,
        message: BotMessage,
        markup: ParsedMarkup,
    ) -> dict[str, Any]:
        message.buttons = markup.buttons
        message.edit_date = self.world.now()
        message.raw = self._message_raw(bot, chat, message, markup.inline)
        self.world.changed.notify()
        return message.raw

    async def edit_message_text(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat, message = self._editable(params)
        if message.kind != "text":
            raise bad_request("there is no text in the message to edit")
        text, parsed, mode = self._message_text(params)
        markup = parse_reply_markup(params.get("reply_markup"), inline_only=True)
        if (
            parsed.text == message.plain_text
            and parsed.entities == message.entities
            and markup.inline == message.raw.get("reply_markup")
        ):
            raise bad_request(NOT_MODIFIED)
        message.history.append(message.text)
        message.text, message.plain_text = text, parsed.text
        message.entities, message.parse_mode = parsed.entities, mode
        return self._apply_edit(bot, chat, message, markup)

    async def edit_message_reply_markup(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat, message = self._editable(params)
        markup = parse_reply_markup(params.get("reply_markup"), inline_only=True)
        if markup.inline == message.raw.get("reply_markup"):
            raise bad_request(NOT_MODIFIED)
        return self._apply_edit(bot, chat, message, markup)

    async def answer_callback_query(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        query_id = params.get("callback_query_id")
        if query_id in (None, ""):
            raise bad_request("callback_query_id is empty")
        record = self.world.find_callback(str(query_id))
        if record is None or record.answer is not None:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        text = _string(params, "text")
        if text is not None and len(text) > MAX_CALLBACK_ANSWER:
            raise bad_request("MESSAGE_TOO_LONG")
        record.answer = CallbackAnswer(
            query_id=record.query_id,
            text=text or None,
            show_alert=params.get("show_alert") is True,
            url=_string(params, "url"),
            cache_time=_integer(params, "cache_time", 0) or 0,
        )
        self.world.changed.notify()
        return True

    async def send_chat_action(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        action = _require(params, "action")
        self._check_can_write(chat)
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    async def delete_message(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        message_id = _integer(params, "message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = chat.by_id.get(message_id)
        if message is not None and not message.deleted:
            message.deleted = True
        elif chat.user_messages.pop(message_id, None) is None:
            raise bad_request("message to delete not found")
        self.world.changed.notify()
        return True

    async def get_chat(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        info = chat.to_api()
        info.update(
            {
                "accent_color_id": 0,
                "max_reaction_count": 11,
                "accepted_gift_types": {
                    "unlimited_gifts": True,
                    "limited_gifts": True,
                    "unique_gifts": True,
                    "premium_subscription": True,
                    "gifts_from_channels": True,
                },
            }
        )
        return info

    async def get_chat_member(self, bot: BotIdentity, params: dict[str, Any]) -> Any:
        chat = self._chat(params)
        user_id = _integer(params, "user_id")
        if user_id is None:
            raise bad_request("user_id is empty")
        if chat.is_group and chat.bot_status in ("left", "kicked"):
            raise forbidden("bot is not a member of the supergroup chat")
        if user_id == bot.id:
            return member_object(bot.to_api(), chat.bot_status)
        user = self.world.users.get(user_id)
        if user is None:
            raise bad_request("user not found")
        return member_object(user.to_api(), self.world.member_status(chat.id, user_id))
