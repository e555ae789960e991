"""The prospect's side of the chat: /start, answers by button or text, /help, /stop,
/forget, unsupported content, stale or forged buttons, and blocking the bot."""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import (
    KICKED,
    MEMBER,
    ChatMemberUpdatedFilter,
    Command,
    CommandObject,
    CommandStart,
)
from aiogram.types import CallbackQuery, ChatMemberUpdated, Message, User
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.clock import Clock
from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue, Result
from funnel.script.schema import Script
from handlers.callbacks import AnswerCb, ButtonCb, SystemCb
from handlers.dependencies import HandOffPort
from handlers.respond import respond


def _dialogue(
    session: AsyncSession, script: Script, clock: Clock, handoff: HandOffPort
) -> Dialogue:
    return Dialogue(session, script, clock, managers=handoff.manager_chat_id is not None)


def profile_of(user: User, chat_id: int) -> Profile:
    return Profile(
        user_id=user.id,
        chat_id=chat_id,
        first_name=user.first_name,
        last_name=user.last_name,
        username=user.username,
        language=user.language_code,
    )


async def _finish(
    dialogue: Dialogue, bot: Bot, chat_id: int, result: Result, handoff: HandOffPort,
    callback: CallbackQuery | None = None,
) -> None:  # fmt: skip
    # The card and the CRM webhook are written in the dialogue's transaction (respond commits
    # it), then delivered at once; the tick delivers whatever an error or a crash left.
    planned = await handoff.plan(dialogue.session, result)
    try:
        await respond(dialogue, bot, chat_id, result, callback)
    finally:
        if planned:
            handoff.kick()


def router() -> Router:
    r = Router(name="prospect")
    private = F.chat.type == ChatType.PRIVATE
    r.message.filter(private)
    r.callback_query.filter(F.message.chat.type == ChatType.PRIVATE)
    r.my_chat_member.filter(F.chat.type == ChatType.PRIVATE)

    @r.message(CommandStart())
    async def on_start(message: Message, command: CommandObject, bot: Bot,
                       session: AsyncSession, script: Script, clock: Clock,
                       handoff: HandOffPort) -> None:  # fmt: skip
        if message.from_user is None:
            return
        dialogue = _dialogue(session, script, clock, handoff)
        result = await dialogue.start(profile_of(message.from_user, message.chat.id), command.args)
        await _finish(dialogue, bot, message.chat.id, result, handoff)

    @r.message(Command("help", "stop", "forget"))
    async def on_command(message: Message, command: CommandObject, bot: Bot,
                         session: AsyncSession, script: Script, clock: Clock,
                         handoff: HandOffPort) -> None:  # fmt: skip
        if message.from_user is None:
            return
        dialogue = _dialogue(session, script, clock, handoff)
        profile = profile_of(message.from_user, message.chat.id)
        actions = {"help": dialogue.help, "stop": dialogue.stop, "forget": dialogue.forget_request}
        result = await actions[command.command](profile)
        await _finish(dialogue, bot, message.chat.id, result, handoff)

    @r.message(F.text)
    async def on_text(message: Message, bot: Bot, session: AsyncSession, script: Script,
                      clock: Clock, handoff: HandOffPort) -> None:  # fmt: skip
        if message.from_user is None or message.text is None:
            return
        dialogue = _dialogue(session, script, clock, handoff)
        profile = profile_of(message.from_user, message.chat.id)
        if message.text.startswith("/"):
            result = await dialogue.unknown_command(profile)
        else:
            result = await dialogue.answer(profile, None, text=message.text)
        await _finish(dialogue, bot, message.chat.id, result, handoff)

    @r.message()
    async def on_unsupported(message: Message, bot: Bot, session: AsyncSession,
                             script: Script, clock: Clock,
                             handoff: HandOffPort) -> None:  # fmt: skip
        """Stickers, photos, voice, contacts...: never stored as an answer."""
        if message.from_user is None:
            return
        dialogue = _dialogue(session, script, clock, handoff)
        result = await dialogue.unsupported(profile_of(message.from_user, message.chat.id))
        await _finish(dialogue, bot, message.chat.id, result, handoff)

    @r.callback_query(AnswerCb.filter())
    async def on_answer(query: CallbackQuery, callback_data: AnswerCb, bot: Bot,
                        session: AsyncSession, script: Script, clock: Clock,
                        handoff: HandOffPort) -> None:  # fmt: skip
        dialogue = _dialogue(session, script, clock, handoff)
        chat_id = _chat_id(query)
        result = await dialogue.answer(
            profile_of(query.from_user, chat_id), callback_data.q, option_id=callback_data.o
        )
        await _finish(dialogue, bot, chat_id, result, handoff, query)

    @r.callback_query(ButtonCb.filter())
    async def on_button(query: CallbackQuery, callback_data: ButtonCb, bot: Bot,
                        session: AsyncSession, script: Script, clock: Clock,
                        handoff: HandOffPort) -> None:  # fmt: skip
        dialogue = _dialogue(session, script, clock, handoff)
        chat_id = _chat_id(query)
        result = await dialogue.press(profile_of(query.from_user, chat_id), callback_data.id)
        await _finish(dialogue, bot, chat_id, result, handoff, query)

    @r.callback_query(SystemCb.filter())
    async def on_system(query: CallbackQuery, callback_data: SystemCb, bot: Bot,
                        session: AsyncSession, script: Script, clock: Clock,
                        handoff: HandOffPort) -> None:  # fmt: skip
        dialogue = _dialogue(session, script, clock, handoff)
        chat_id = _chat_id(query)
        result = await dialogue.system(profile_of(query.from_user, chat_id), callback_data.op)
        await _finish(dialogue, bot, chat_id, result, handoff, query)

    @r.callback_query()
    async def on_forged(query: CallbackQuery, bot: Bot, session: AsyncSession, script: Script,
                        clock: Clock, handoff: HandOffPort) -> None:  # fmt: skip
        """Data we never issued (forged, or from a much older bot): the current question."""
        dialogue = _dialogue(session, script, clock, handoff)
        chat_id = _chat_id(query)
        result = await dialogue.system(profile_of(query.from_user, chat_id), "stale")
        await _finish(dialogue, bot, chat_id, result, handoff, query)

    @r.my_chat_member(ChatMemberUpdatedFilter(member_status_changed=KICKED))
    async def on_blocked(event: ChatMemberUpdated, session: AsyncSession, script: Script,
                         clock: Clock) -> None:  # fmt: skip
        await Dialogue(session, script, clock).blocked(event.from_user.id, True)
        await session.commit()

    @r.my_chat_member(ChatMemberUpdatedFilter(member_status_changed=MEMBER))
    async def on_unblocked(event: ChatMemberUpdated, session: AsyncSession, script: Script,
                           clock: Clock) -> None:  # fmt: skip
        await Dialogue(session, script, clock).blocked(event.from_user.id, False)
        await session.commit()

    return r


def _chat_id(query: CallbackQuery) -> int:
    # A tap on a message too old for Telegram to include still comes from the user's chat.
    return query.message.chat.id if query.message is not None else query.from_user.id
