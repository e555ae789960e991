"""Simulated Telegram users and groups: their actions become realistic updates, and they read
what the bot sent them (event-driven waiting, no polling)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .inbound import MessageRef, command_entities, member_object, post_message
from .state import (
    BotMessage,
    CallbackAnswer,
    CallbackQueryRecord,
    ChatRecord,
    UserMessage,
    UserRecord,
    World,
)

if TYPE_CHECKING:
    from .payments import PaymentResult, PreCheckoutRecord

# Waiting helpers take `timeout=` on purpose (hence the ASYNC109 waivers): a test reads
# `await user.next_message(timeout=2)`, like the other Telegram test clients.
DEFAULT_TIMEOUT = 5.0


def _describe(messages: list[BotMessage]) -> str:
    if not messages:
        return "the bot sent nothing"
    tail = messages[-3:]
    return "last bot messages: " + "; ".join(
        f"#{m.message_id} {m.plain_text[:80]!r} buttons={m.labels}" for m in tail
    )


class _ChatReader:
    """Reading the bot's messages in one chat: shared by private chats and groups."""

    def __init__(self, world: World, chat: ChatRecord) -> None:
        self._world = world
        self._chat = chat
        self._cursor = 0  # how many messages next_message() has handed out

    @property
    def messages(self) -> list[BotMessage]:
        """The bot's messages in this chat, oldest first, edits applied, deleted ones left out."""
        return [m for m in self._chat.log if not m.deleted]

    @property
    def last_message(self) -> BotMessage | None:
        messages = self.messages
        return messages[-1] if messages else None

    async def next_message(
        self,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> BotMessage:
        """The next message the bot sent here that next_message() has not returned yet."""

        def check() -> BotMessage | None:
            if self._cursor < len(self._chat.log):
                self._cursor += 1
                return self._chat.log[self._cursor - 1]
            return None

        try:
            return await self._world.changed.wait_until(check, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no new bot message in chat {self._chat.id} within {timeout}s; "
                + _describe(self.messages)
            ) from None

    def skip_received(self) -> None:
        """Mark every message received so far as consumed by next_message()."""
        self._cursor = len(self._chat.log)

    async def wait_for(
        self,
        predicate: Callable[[BotMessage], bool],
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
        *,
        after: MessageRef | None = None,
    ) -> BotMessage:
        """Wait until a (non-deleted) bot message here satisfies `predicate` and return the
        newest such message; `after` restricts the search to later messages."""
        floor = after.message_id if isinstance(after, BotMessage) else (after or 0)

        def check() -> BotMessage | None:
            for message in reversed(self._chat.log):
                if message.message_id > floor and not message.deleted and predicate(message):
                    return message
            return None

        try:
            return await self._world.changed.wait_until(check, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no bot message in chat {self._chat.id} matched within {timeout}s; "
                + _describe(self.messages)
            ) from None

    async def wait_for_count(
        self,
        count: int,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> list[BotMessage]:
        """Wait until the bot has sent at least `count` messages here (deleted ones included)."""
        try:
            return await self._world.changed.wait_until(
                lambda: list(self._chat.log) if len(self._chat.log) >= count else None, timeout
            )
        except TimeoutError:
            raise TimeoutError(
                f"chat {self._chat.id} has {len(self._chat.log)} bot messages, expected {count} "
                f"within {timeout}s; " + _describe(self.messages)
            ) from None


class SimUser(_ChatReader):
    """A person talking to the bot in a private chat (chat id == user id)."""

    def __init__(self, world: World, record: UserRecord) -> None:
        super().__init__(world, world.chats[record.id])
        self.record = record

    def __repr__(self) -> str:
        return f"SimUser(id={self.id}, first_name={self.first_name!r})"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def chat_id(self) -> int:
        return self.record.id

    @property
    def first_name(self) -> str:
        return self.record.first_name

    @property
    def username(self) -> str | None:
        return self.record.username

    @property
    def blocked(self) -> bool:
        return self.record.blocked

    @property
    def deactivated(self) -> bool:
        return self.record.deactivated

    def to_api(self) -> dict[str, Any]:
        return self.record.to_api()

    # --- actions in the private chat -------------------------------------------------------

    def _prepare_private_action(self) -> None:
        if self.record.deactivated:
            raise RuntimeError(f"user {self.id} is deactivated and cannot act")
        if self.record.blocked:
            # Writing to a blocked bot first unblocks it ("Restart" in the apps).
            self._set_blocked(False)
        self.record.started = True

    async def send(self, text: str, *, reply_to: MessageRef | None = None) -> UserMessage:
        """Send a text; `/command payload` texts get a bot_command entity."""
        self._prepare_private_action()
        return post_message(self._world, self._chat, self.record, text=text, reply_to=reply_to)

    async def send_sticker(self, emoji: str = "👍") -> UserMessage:
        self._prepare_private_action()
        sticker = {
            "file_id": self._world.unique("CAACAgIAAxkBAAI"),
            "file_unique_id": self._world.unique("AgAD"),
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
        }
        return post_message(self._world, self._chat, self.record, kind="sticker", sticker=sticker)

    async def send_photo(self, caption: str | None = None) -> UserMessage:
        self._prepare_private_action()
        file_id = self._world.unique("AgACAgIAAxkBAAI")
        unique = self._world.unique("AQAD")
        photo = [
            {
                "file_id": f"{file_id}_s",
                "file_unique_id": f"{unique}_s",
                "width": 90,
                "height": 68,
                "file_size": 1200,
            },
            {
                "file_id": file_id,
                "file_unique_id": unique,
                "width": 1280,
                "height": 960,
                "file_size": 98000,
            },
        ]
        extra: dict[str, Any] = {"photo": photo}
        if caption:
            extra["caption"] = caption
        return post_message(self._world, self._chat, self.record, kind="photo", **extra)

    async def send_voice(self, duration: int = 3) -> UserMessage:
        self._prepare_private_action()
        voice = {
            "file_id": self._world.unique("AwACAgIAAxkBAAI"),
            "file_unique_id": self._world.unique("AgAD"),
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": 4000 * duration,
        }
        return post_message(self._world, self._chat, self.record, kind="voice", voice=voice)

    async def send_contact(self, phone_number: str, *, own: bool = True) -> UserMessage:
        """Share a phone number; `own=True` is the "share my contact" button (user_id set)."""
        self._prepare_private_action()
        contact: dict[str, Any] = {
            "phone_number": phone_number,
            "first_name": self.record.first_name,
        }
        if self.record.last_name:
            contact["last_name"] = self.record.last_name
        if own:
            contact["user_id"] = self.id
        return post_message(self._world, self._chat, self.record, kind="contact", contact=contact)

    async def send_location(
        self, latitude: float = 55.755826, longitude: float = 37.6173
    ) -> UserMessage:
        self._prepare_private_action()
        location = {"latitude": latitude, "longitude": longitude}
        return post_message(
            self._world, self._chat, self.record, kind="location", location=location
        )

    async def edit(self, message: UserMessage, new_text: str) -> UserMessage:
        """Edit a text this user sent earlier: an `edited_message` update."""
        chat = self._world.chats[message.chat_id]
        if chat.user_messages.get(message.message_id) is not message:
            raise LookupError(f"message {message.message_id} is not in chat {chat.id}")
        if message.user_id != self.id or message.kind != "text":
            raise ValueError("a user can edit only their own text messages")
        message.text = new_text
        message.raw = {**message.raw, "text": new_text, "edit_date": self._world.now()}
        message.raw.pop("entities", None)
        if entities := command_entities(new_text):
            message.raw["entities"] = entities
        self._world.enqueue("edited_message", message.raw)
        return message

    async def press(self, message: MessageRef, label: str) -> CallbackQueryRecord:
        """Tap the inline button labelled `label` (LookupError if there is none)."""
        bot_message = self._resolve(message)
        button = bot_message.button(label)
        if button.callback_data is None:
            raise ValueError(f"button {label!r} opens {button.url!r}; it sends no callback")
        return self._callback(bot_message, button.callback_data)

    async def press_data(self, message: MessageRef, data: str) -> CallbackQueryRecord:
        """A callback query with arbitrary (possibly forged or stale) data."""
        return self._callback(self._resolve(message), data)

    def _resolve(self, message: MessageRef) -> BotMessage:
        if isinstance(message, BotMessage):
            chat = self._world.chats[message.chat_id]
            message_id = message.message_id
        else:
            chat, message_id = self._chat, message
        found = chat.by_id.get(message_id)
        if found is None or found.deleted:
            raise LookupError(f"no bot message {message_id} in chat {chat.id}")
        if chat.user is None and self._world.member_status(chat.id, self.id) in ("left", "kicked"):
            raise PermissionError(f"user {self.id} is not a member of chat {chat.id}")
        return found

    def _callback(self, message: BotMessage, data: str) -> CallbackQueryRecord:
        if self.record.deactivated:
            raise RuntimeError(f"user {self.id} is deactivated and cannot act")
        record = CallbackQueryRecord(
            query_id=str(4_000_000_000_000_000_000 + len(self._world.callbacks) + 1),
            user_id=self.id,
            chat_id=message.chat_id,
            message_id=message.message_id,
            data=data,
        )
        self._world.callbacks[record.query_id] = record
        self._world.enqueue(
            "callback_query",
            {
                "id": record.query_id,
                "from": self.record.to_api(),
                "message": message.raw,
                "chat_instance": str(abs(message.chat_id) * 7 + 1_000_000_000),
                "data": data,
            },
        )
        return record

    # --- payments (telegram_emulator/payments.py) -------------------------------------------

    async def pay(
        self,
        invoice: MessageRef,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> PaymentResult:
        """Pay an invoice the bot sent: the pre-checkout query (the bot has `timeout`
        seconds, Telegram's 10, to answer it), then the successful_payment message."""
        from . import payments

        return await payments.pay(self._world, self.record, self._resolve(invoice),
                                  timeout=timeout)  # fmt: skip

    async def checkout(
        self,
        invoice: MessageRef,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> PreCheckoutRecord:
        """Only the pre-checkout half of paying; `complete_payment` is the other half."""
        from . import payments

        return await payments.checkout(self._world, self.record, self._resolve(invoice),
                                       timeout=timeout)  # fmt: skip

    def complete_payment(self, query: PreCheckoutRecord) -> PaymentResult:
        from . import payments

        return payments.complete(self._world, self.record, query)

    async def pre_checkout(
        self,
        payload: str,
        currency: str,
        total_amount: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> PreCheckoutRecord:
        """A pre-checkout query with any content (a forged or stale payload)."""
        from . import payments

        return await payments.pre_checkout(
            self._world, self.record, payload=payload, currency=currency,
            total_amount=total_amount, timeout=timeout,
        )  # fmt: skip

    def deliver_payment_again(self, result: PaymentResult) -> UserMessage:
        """Telegram delivering the same successful payment again, in a new update."""
        from . import payments

        assert result.charge is not None, "only a paid result has a charge"
        return payments.deliver_successful_payment(self._world, self.record, result.charge)

    @property
    def callback_answers(self) -> list[CallbackAnswer]:
        """Answers to this user's button presses, in the order of the presses."""
        return [
            record.answer
            for record in self._world.callbacks.values()
            if record.user_id == self.id and record.answer is not None
        ]

    async def wait_for_answer(
        self,
        query: CallbackQueryRecord,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    ) -> CallbackAnswer:
        """Wait until the bot answers this button press (answerCallbackQuery)."""
        try:
            return await self._world.changed.wait_until(lambda: query.answer, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"the bot did not answer callback query {query.query_id} ({query.data!r}) "
                f"within {timeout}s"
            ) from None

    # --- relationship with the bot ---------------------------------------------------------

    def _set_blocked(self, blocked: bool) -> None:
        self.record.blocked = blocked
        bot = self._world.bot.to_api()
        member: dict[str, Any] = {"status": "member", "user": bot}
        kicked: dict[str, Any] = {"status": "kicked", "user": bot, "until_date": 0}
        self._world.enqueue(
            "my_chat_member",
            {
                "chat": self._chat.to_api(),
                "from": self.record.to_api(),
                "date": self._world.now(),
                "old_chat_member": member if blocked else kicked,
                "new_chat_member": kicked if blocked else member,
            },
        )

    async def block(self) -> None:
        """Block the bot: sends fail with 403 and the bot gets a my_chat_member update."""
        if not self.record.blocked:
            self._set_blocked(True)

    async def unblock(self) -> None:
        if self.record.blocked:
            self._set_blocked(False)

    async def deactivate(self) -> None:
        """Delete the account: sends fail with 403 `user is deactivated` (no update, as on
        Telegram)."""
        self.record.deactivated = True


class SimGroup(_ChatReader):
    """A supergroup (e.g. the sales managers' chat) with simulated members."""

    def __init__(self, world: World, chat: ChatRecord) -> None:
        super().__init__(world, chat)
        self.chat = chat

    def __repr__(self) -> str:
        return f"SimGroup(id={self.id}, title={self.title!r})"

    @property
    def id(self) -> int:
        return self.chat.id

    @property
    def chat_id(self) -> int:
        return self.chat.id

    @property
    def title(self) -> str:
        return self.chat.title or ""

    def add_member(self, user: SimUser, status: str = "member") -> None:
        """Make `user` a member ("member", "administrator" or "creator") without an update."""
        self.chat.members[user.id] = status

    def remove_member(self, user: SimUser) -> None:
        self.chat.members[user.id] = "left"

    def _bot_membership(self, by: SimUser, new_status: str) -> None:
        old_status = self.chat.bot_status
        self.chat.bot_status = new_status
        bot = self._world.bot.to_api()
        self._world.enqueue(
            "my_chat_member",
            {
                "chat": self.chat.to_api(),
                "from": by.to_api(),
                "date": self._world.now(),
                "old_chat_member": member_object(bot, old_status),
                "new_chat_member": member_object(bot, new_status),
            },
        )

    async def add_bot(self, by: SimUser, *, as_admin: bool = False) -> None:
        """`by` adds the bot to the group: a my_chat_member update (left -> member/admin)."""
        if self._world.member_status(self.id, by.id) in ("left", "kicked"):
            raise PermissionError(f"user {by.id} is not a member of group {self.id}")
        self._bot_membership(by, "administrator" if as_admin else "member")

    async def remove_bot(self, by: SimUser) -> None:
        self._bot_membership(by, "kicked")

    async def send(
        self, user: SimUser, text: str, *, reply_to: MessageRef | None = None
    ) -> UserMessage:
        """`user` writes `text` in the group."""
        if self._world.member_status(self.id, user.id) in ("left", "kicked"):
            raise PermissionError(f"user {user.id} is not a member of group {self.id}")
        return post_message(self._world, self.chat, user.record, text=text, reply_to=reply_to)
