"""What users send, as Telegram describes it: a message stored in its chat and queued as the
bot's update, the entities Telegram marks in it, and the ChatMember objects of a status.
Below the Bot API methods (methods.py), the payments (payments.py) and the simulated users
(users.py), which all post or describe such things."""

from __future__ import annotations

import re
from typing import Any

from .html_entities import utf16_len
from .state import BotMessage, ChatRecord, UserMessage, UserRecord, World

_BOT_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
MessageRef = BotMessage | int


def command_entities(text: str) -> list[dict[str, Any]]:
    """`bot_command` entities the way Telegram marks them (offsets in UTF-16 units)."""
    return [
        {
            "type": "bot_command",
            "offset": utf16_len(text[: match.start()]),
            "length": utf16_len(match.group()),
        }
        for match in _BOT_COMMAND.finditer(text)
    ]


def post_message(
    world: World,
    chat: ChatRecord,
    user: UserRecord,
    *,
    kind: str = "text",
    text: str | None = None,
    reply_to: MessageRef | None = None,
    **content: Any,
) -> UserMessage:
    """Store a message from `user` in `chat` and queue the `message` update for the bot."""
    message = UserMessage(
        message_id=chat.next_message_id(),
        chat_id=chat.id,
        user_id=user.id,
        date=world.now(),
        kind=kind,
        text=text,
    )
    raw: dict[str, Any] = {
        "message_id": message.message_id,
        "from": user.to_api(),
        "chat": chat.to_api(),
        "date": message.date,
    }
    if text is not None:
        raw["text"] = text
        if entities := command_entities(text):
            raw["entities"] = entities
    raw.update(content)
    if reply_to is not None:
        reply_id = reply_to.message_id if isinstance(reply_to, BotMessage) else reply_to
        original = chat.by_id.get(reply_id)
        replied = original.raw if original is not None else None
        if replied is None and reply_id in chat.user_messages:
            replied = chat.user_messages[reply_id].raw
        if replied is None:
            raise LookupError(f"no message {reply_id} in chat {chat.id} to reply to")
        raw["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
    message.raw = raw
    chat.user_messages[message.message_id] = message
    if not chat.is_group or chat.bot_status not in ("left", "kicked"):
        world.enqueue("message", raw)
    return message


def member_object(user: dict[str, Any], status: str) -> dict[str, Any]:
    """A ChatMember of the right subtype for `status`."""
    if status == "creator":
        return {"status": "creator", "user": user, "is_anonymous": False}
    if status == "administrator":
        rights = (
            "can_manage_chat",
            "can_delete_messages",
            "can_manage_video_chats",
            "can_restrict_members",
            "can_promote_members",
            "can_change_info",
            "can_invite_users",
            "can_post_stories",
            "can_edit_stories",
            "can_delete_stories",
            "can_send_welcome_messages",
        )
        member: dict[str, Any] = {
            "status": "administrator",
            "user": user,
            "can_be_edited": False,
            "is_anonymous": False,
        }
        member.update(dict.fromkeys(rights, True))
        return member
    if status == "kicked":
        return {"status": "kicked", "user": user, "until_date": 0}
    if status == "member":
        return {"status": "member", "user": user}
    return {"status": "left", "user": user}
