"""The emulated Telegram world: users, chats, messages, uploaded files, callback queries, the
update queue, recorded requests and statistics. Plain data plus event-driven change signals."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

# What Telegram delivers when a bot never passed allowed_updates (Bot API, getUpdates).
DEFAULT_EXCLUDED_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
FIRST_USER_ID = 100_000_001
FIRST_GROUP_ID = -1_001_234_567_890


class ChangeSignal:
    """Wakes every waiter when the world changes; waiters re-check their own condition.

    A fresh Event per generation means no waiter can miss a change that happened between its
    check and its wait, and no lock is needed to notify from synchronous code.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float | None) -> None:  # noqa: ASYNC109
        """Until the next change, or `timeout` seconds, whichever comes first."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    async def wait_until(
        self,
        check: Callable[[], T | None],
        timeout: float | None,  # noqa: ASYNC109
    ) -> T:
        """Return the first truthy `check()`; raise TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                event = self._event
                result = check()
                if result:
                    return result
                await event.wait()


class Button(NamedTuple):
    """One inline keyboard button as the user sees it."""

    text: str
    callback_data: str | None = None
    url: str | None = None


@dataclass
class FileInfo:
    """A file the bot uploaded (or referenced by file_id / URL)."""

    file_id: str
    file_unique_id: str
    kind: str  # "photo" | "document"
    file_name: str | None = None
    mime_type: str | None = None
    file_size: int = 0
    width: int | None = None
    height: int | None = None
    data: bytes | None = field(default=None, repr=False)


@dataclass
class FileDescriptor:
    """How an uploaded file appears in a recorded request (the bytes are not kept there)."""

    filename: str
    content_type: str | None
    size: int


@dataclass
class BotMessage:
    """A message the bot sent, as the chat shows it now (edits applied in place)."""

    message_id: int
    chat_id: int
    date: int
    kind: str  # "text" | "photo" | "document"
    text: str  # the text or caption exactly as sent, HTML included ("" for no caption)
    plain_text: str  # what the user reads: tags removed, entities decoded, trimmed
    parse_mode: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    buttons: list[list[Button]] = field(default_factory=list)
    reply_keyboard: list[list[str]] | None = None
    remove_keyboard: bool = False
    photo: FileInfo | None = None
    document: FileInfo | None = None
    reply_to_message_id: int | None = None
    edit_date: int | None = None
    history: list[str] = field(default_factory=list)  # earlier `text` values, oldest first
    deleted: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the Bot API Message

    @property
    def labels(self) -> list[str]:
        return [button.text for row in self.buttons for button in row]

    @property
    def callback_data(self) -> list[str]:
        return [b.callback_data for row in self.buttons for b in row if b.callback_data]

    def button(self, label: str) -> Button:
        for row in self.buttons:
            for candidate in row:
                if candidate.text == label:
                    return candidate
        raise LookupError(
            f"message {self.message_id} in chat {self.chat_id} has no button {label!r}; "
            f"buttons: {self.labels}"
        )


@dataclass
class UserMessage:
    """A message a simulated user sent to a chat."""

    message_id: int
    chat_id: int
    user_id: int
    date: int
    kind: str  # "text" | "sticker" | "photo" | "voice" | "contact" | "location"
    text: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class CallbackAnswer:
    """What the bot answered to a callback query (answerCallbackQuery)."""

    query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    cache_time: int


@dataclass
class CallbackQueryRecord:
    """A button press: `answer` is set once the bot calls answerCallbackQuery."""

    query_id: str
    user_id: int
    chat_id: int
    message_id: int
    data: str
    answer: CallbackAnswer | None = None


@dataclass
class UserRecord:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = "ru"
    blocked: bool = False
    deactivated: bool = False
    started: bool = True  # False: the user never opened the bot, so the bot cannot write first

    def to_api(self) -> dict[str, Any]:
        user: dict[str, Any] = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        if self.last_name:
            user["last_name"] = self.last_name
        if self.username:
            user["username"] = self.username
        if self.language_code:
            user["language_code"] = self.language_code
        return user


@dataclass
class BotIdentity:
    id: int
    first_name: str
    username: str

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


@dataclass
class ChatRecord:
    id: int
    type: str  # "private" | "supergroup"
    title: str | None = None
    user: UserRecord | None = None  # the other side of a private chat
    members: dict[int, str] = field(default_factory=dict)  # user id -> ChatMember status
    bot_status: str = "member"  # "member" | "administrator" | "left" | "kicked"
    last_message_id: int = 0
    log: list[BotMessage] = field(default_factory=list)  # bot messages in send order
    user_messages: dict[int, UserMessage] = field(default_factory=dict)
    by_id: dict[int, BotMessage] = field(default_factory=dict)

    @property
    def is_group(self) -> bool:
        return self.type != "private"

    def next_message_id(self) -> int:
        self.last_message_id += 1
        return self.last_message_id

    def to_api(self) -> dict[str, Any]:
        if self.user is not None:
            chat = self.user.to_api()
            chat.pop("is_bot")
            chat.pop("language_code", None)
            chat["type"] = "private"
            return chat
        return {"id": self.id, "type": self.type, "title": self.title or ""}


@dataclass
class RecordedRequest:
    """One Bot API call the bot made, as the emulator understood it."""

    method: str  # canonical name, e.g. "sendMessage"
    params: dict[str, Any]  # decoded: ints, bools, JSON objects; files as FileDescriptor
    status: int | None = None  # HTTP status; None while the request is still being served
    at: float = 0.0  # wall-clock time the request arrived
    duration: float = 0.0
    description: str | None = None  # the error description for a refused request
    result: Any = None  # the `result` returned for a successful request
    token: str = ""
    injected: bool = False  # the answer came from fail_next() / hang_next()

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class WebhookConfig:
    """What the bot set with setWebhook."""

    url: str
    secret_token: str | None = None
    max_connections: int = 40
    last_error_date: int | None = None
    last_error_message: str | None = None


@dataclass
class WebhookDeliveryRecord:
    """One POST of an update to a webhook: where, what came back (None: no answer)."""

    update_id: int
    target: str
    status: int | None
    at: float
    duplicate: bool = False  # a second delivery of an update on purpose (duplicate_rate)
    error: str | None = None


@dataclass
class EmulatorStats:
    requests: Counter[str] = field(default_factory=Counter)  # by method
    sent: int = 0  # accepted sendMessage / sendPhoto / sendDocument
    sent_by_method: Counter[str] = field(default_factory=Counter)
    sent_by_chat: Counter[int] = field(default_factory=Counter)
    too_many_requests: int = 0
    too_many_by_method: Counter[str] = field(default_factory=Counter)
    too_many_by_chat: Counter[int] = field(default_factory=Counter)
    errors_by_code: Counter[int] = field(default_factory=Counter)
    forbidden: int = 0
    updates_enqueued: int = 0
    updates_dropped: int = 0  # not in the bot's allowed_updates
    webhook_posts: int = 0  # POSTs to a webhook, duplicates and failed ones included
    webhook_failed: int = 0  # no 2xx: the update is sent again later
    webhook_duplicates: int = 0  # updates delivered twice on purpose

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "sent": self.sent,
            "sent_by_method": dict(self.sent_by_method),
            "sent_by_chat": {str(k): v for k, v in self.sent_by_chat.items()},
            "too_many_requests": self.too_many_requests,
            "too_many_by_method": dict(self.too_many_by_method),
            "too_many_by_chat": {str(k): v for k, v in self.too_many_by_chat.items()},
            "errors_by_code": {str(k): v for k, v in self.errors_by_code.items()},
            "forbidden": self.forbidden,
            "updates_enqueued": self.updates_enqueued,
            "updates_dropped": self.updates_dropped,
            "webhook_posts": self.webhook_posts,
            "webhook_failed": self.webhook_failed,
            "webhook_duplicates": self.webhook_duplicates,
        }


class World:
    """Everything the emulator knows. Mutated only from the event loop that serves requests."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self.wall_clock = wall_clock
        self.bot = BotIdentity(id=0, first_name="Leadbot", username="leadbot_test_bot")
        self.users: dict[int, UserRecord] = {}
        self.chats: dict[int, ChatRecord] = {}
        self.files: dict[str, FileInfo] = {}
        self.callbacks: dict[str, CallbackQueryRecord] = {}
        self.commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.updates: list[dict[str, Any]] = []
        self.allowed_updates: frozenset[str] | None = None
        self.webhook: WebhookConfig | None = None
        self.webhook_log: list[WebhookDeliveryRecord] = []
        self.requests: list[RecordedRequest] = []
        self.stats = EmulatorStats()
        self.changed = ChangeSignal()  # messages, edits, deletions, callback answers
        self.updates_changed = ChangeSignal()
        self._last_update_id = 0
        self._user_ids = itertools.count(FIRST_USER_ID)
        self._group_ids = itertools.count(FIRST_GROUP_ID, -1)
        self._sequence = itertools.count(1)

    def now(self) -> int:
        return int(self.wall_clock())

    def unique(self, prefix: str) -> str:
        """A unique opaque identifier (file ids, callback query ids)."""
        return f"{prefix}{next(self._sequence):08d}"

    # --- users and chats -------------------------------------------------------------------

    def add_user(
        self,
        first_name: str,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "ru",
        *,
        user_id: int | None = None,
        started: bool = True,
    ) -> UserRecord:
        uid = user_id if user_id is not None else next(self._user_ids)
        while user_id is None and uid in self.users:
            uid = next(self._user_ids)
        if uid in self.users:
            raise ValueError(f"user {uid} already exists")
        user = UserRecord(uid, first_name, last_name, username, language_code, started=started)
        self.users[uid] = user
        self.chats[uid] = ChatRecord(id=uid, type="private", user=user)
        return user

    def add_group(
        self, title: str, member_ids: list[int], *, chat_id: int | None = None
    ) -> ChatRecord:
        cid = chat_id if chat_id is not None else next(self._group_ids)
        if cid in self.chats:
            raise ValueError(f"chat {cid} already exists")
        chat = ChatRecord(id=cid, type="supergroup", title=title, bot_status="left")
        for index, member in enumerate(member_ids):
            chat.members[member] = "creator" if index == 0 else "member"
        self.chats[cid] = chat
        return chat

    def member_status(self, chat_id: int, user_id: int) -> str:
        """ChatMember status of a user in a chat: creator/administrator/member/left/kicked."""
        chat = self.chats.get(chat_id)
        if chat is None:
            return "left"
        if user_id == self.bot.id:
            return chat.bot_status
        if chat.user is not None:
            if chat.user.id != user_id:
                return "left"
            return "kicked" if chat.user.blocked else "member"
        return chat.members.get(user_id, "left")

    # --- the update queue ------------------------------------------------------------------

    def set_allowed_updates(self, allowed: list[str] | None) -> None:
        if allowed is None:
            return  # not passed: keep the previous setting, as Telegram does
        self.allowed_updates = frozenset(allowed) if allowed else None

    def is_allowed(self, kind: str) -> bool:
        if self.allowed_updates is None:
            return kind not in DEFAULT_EXCLUDED_UPDATES
        return kind in self.allowed_updates

    def enqueue(self, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Queue an update for getUpdates; updates the bot did not subscribe to are dropped."""
        if not self.is_allowed(kind):
            self.stats.updates_dropped += 1
            return None
        self._last_update_id += 1
        update = {"update_id": self._last_update_id, kind: payload}
        self.updates.append(update)
        self.stats.updates_enqueued += 1
        self.updates_changed.notify()
        return update

    def confirm(self, offset: int) -> None:
        """getUpdates' offset: updates with a smaller id are confirmed and forgotten; a negative
        offset keeps only the last -offset updates."""
        if offset < 0:
            self.updates = self.updates[offset:]
        else:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]

    def pending_updates(self, limit: int) -> list[dict[str, Any]]:
        kept = [u for u in self.updates if self.is_allowed(update_kind(u))]
        self.stats.updates_dropped += len(self.updates) - len(kept)
        self.updates = kept
        return kept[:limit]

    def drop_pending_updates(self) -> None:
        self.updates.clear()

    def acknowledge(self, update_id: int) -> None:
        """A webhook answered 2xx for this update: Telegram forgets it."""
        self.updates = [u for u in self.updates if u["update_id"] != update_id]

    # --- messages --------------------------------------------------------------------------

    def add_bot_message(self, chat: ChatRecord, message: BotMessage) -> None:
        chat.log.append(message)
        chat.by_id[message.message_id] = message
        self.changed.notify()

    def find_callback(self, query_id: str) -> CallbackQueryRecord | None:
        return self.callbacks.get(query_id)


def update_kind(update: dict[str, Any]) -> str:
    return next(key for key in update if key != "update_id")
