"""The prospect's side of the chat: /start, answers by button or text, /help, /stop,
/forget, unsupported content, stale or forged buttons, and blocking the bot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiogram import BaseMiddleware, Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import (
    KICKED,
    MEMBER,
    ChatMemberUpdatedFilter,
    Command,
    CommandObject,
    CommandStart,
)
from aiogram.types import CallbackQuery, ChatMemberUpdated, Message, TelegramObject, User
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue, Result
from handlers.callbacks import AnswerCb, ButtonCb, SystemCb
from handlers.dependencies import HandOffPort, ReplyPort
from handlers.respond import respond


def profile_of(user: User, chat_id: int) -> Profile:
    return Profile(
        user_id=user.id,
        chat_id=chat_id,
        first_name=user.first_name,
        last_name=user.last_name,
        username=user.username,
        language=user.language_code,
    )


@dataclass(frozen=True)
class Reply:
    """Delivers a dialogue result to the prospect's chat: plans the hand-off in the dialogue's
    transaction, commits, answers the tap, sends, then kicks the hand-off's delivery."""

    dialogue: Dialogue
    bot: Bot
    chat_id: int
    handoff: HandOffPort
    callback: CallbackQuery | None = None
    provider_token: str | None = None
    replies: ReplyPort | None = None

    async def __call__(self, result: Result) -> None:
        # The card and the CRM webhook are written in the dialogue's transaction (respond
        # commits it), then delivered at once; the tick delivers what an error or crash left.
        planned = await self.handoff.plan(self.dialogue.session, result)
        try:
            await respond(
                self.dialogue, self.bot, self.chat_id, result, self.callback,
                self.provider_token, self.replies,
            )  # fmt: skip
        finally:
            if planned:
                self.handoff.kick()


class ProspectContext(BaseMiddleware):
    """Gives each prospect handler its `dialogue`, the sender's `profile` and `reply`, so a
    handler is one line of funnel call."""

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None:
            return None  # a channel post or an anonymous admin: no prospect to talk to
        chat = data.get("event_chat")
        # A tap on a message too old for Telegram to include still comes from the user's chat.
        chat_id = chat.id if chat is not None else user.id
        handoff: HandOffPort = data["handoff"]
        dialogue = Dialogue(
            data["session"],
            data["script"],
            data["clock"],
            managers=handoff.manager_chat_id is not None,
        )
        callback = event if isinstance(event, CallbackQuery) else None
        data["dialogue"] = dialogue
        data["profile"] = profile_of(user, chat_id)
        token = data["config"].payment_provider_token
        data["reply"] = Reply(
            dialogue, data["bot"], chat_id, handoff, callback, token, data.get("replies")
        )
        return await handler(event, data)


def router() -> Router:
    r = Router(name="prospect")
    private = F.chat.type == ChatType.PRIVATE
    r.message.filter(private)
    r.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)
    r.my_chat_member.filter(F.chat.type == ChatType.PRIVATE)
    for observer in (r.message, r.callback_query, r.my_chat_member):
        observer.middleware(ProspectContext())

    @r.message(CommandStart())
    async def on_start(
        message: Message,
        command: CommandObject,
        dialogue: Dialogue,
        profile: Profile,
        reply: Reply,
    ) -> None:
        await reply(await dialogue.start(profile, command.args))

    @r.message(Command("help", "stop", "forget"))
    async def on_command(
        message: Message,
        command: CommandObject,
        dialogue: Dialogue,
        profile: Profile,
        reply: Reply,
    ) -> None:
        actions = {"help": dialogue.help, "stop": dialogue.stop, "forget": dialogue.forget_request}
        await reply(await actions[command.command](profile))

    @r.message(F.text)
    async def on_text(
        message: Message, dialogue: Dialogue, profile: Profile, reply: Reply
    ) -> None:
        text = message.text or ""
        if text.startswith("/"):
            await reply(await dialogue.unknown_command(profile))
        else:
            await reply(await dialogue.answer(profile, None, text=text))

    @r.message()
    async def on_unsupported(
        message: Message, dialogue: Dialogue, profile: Profile, reply: Reply
    ) -> None:
        """Stickers, photos, voice, contacts...: never stored as an answer."""
        await reply(await dialogue.unsupported(profile))

    @r.callback_query(AnswerCb.filter())
    async def on_answer(
        query: CallbackQuery,
        callback_data: AnswerCb,
        dialogue: Dialogue,
        profile: Profile,
        reply: Reply,
    ) -> None:
        await reply(await dialogue.answer(profile, callback_data.q, option_id=callback_data.o))

    @r.callback_query(ButtonCb.filter())
    async def on_button(
        query: CallbackQuery,
        callback_data: ButtonCb,
        dialogue: Dialogue,
        profile: Profile,
        reply: Reply,
    ) -> None:
        await reply(await dialogue.press(profile, callback_data.id))

    @r.callback_query(SystemCb.filter())
    async def on_system(
        query: CallbackQuery,
        callback_data: SystemCb,
        dialogue: Dialogue,
        profile: Profile,
        reply: Reply,
    ) -> None:
        await reply(await dialogue.system(profile, callback_data.op))

    @r.callback_query()
    async def on_forged(
        query: CallbackQuery, dialogue: Dialogue, profile: Profile, reply: Reply
    ) -> None:
        """A stale button: data that failed its signature (forged, copied from another chat,
        or sent before buttons were signed) arrives as a `StaleCb`; data we never issued at
        all lands here too. The same answer as a button the dialogue has moved past."""
        await reply(await dialogue.system(profile, "stale"))

    @r.my_chat_member(ChatMemberUpdatedFilter(member_status_changed=KICKED))
    async def on_blocked(
        event: ChatMemberUpdated, dialogue: Dialogue, session: AsyncSession
    ) -> None:
        await dialogue.blocked(event.from_user.id, True)
        await session.commit()

    @r.my_chat_member(ChatMemberUpdatedFilter(member_status_changed=MEMBER))
    async def on_unblocked(
        event: ChatMemberUpdated, dialogue: Dialogue, session: AsyncSession
    ) -> None:
        await dialogue.blocked(event.from_user.id, False)
        await session.commit()

    return r
