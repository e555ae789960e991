"""The managers' chat: taking a hot lead's card (once; its follow-ups pause while the manager
holds it), giving it back to the bot, recording its payment (the bot asks
for the amount with a reply prompt whose message id is kept in the database, so no state
waits in memory and a restart loses nothing), or marking it unfit. Texts are in the school's
language (the script's).

Every button pressed in this chat is answered. An action is honoured only on a card the bot
sent to this chat, and an amount only as a reply to the bot's own prompt."""

from __future__ import annotations

import contextlib
from html import escape
from typing import Any

from aiogram import Bot, F, Router
from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, ForceReply, Message
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs, store
from funnel.core.clock import Clock
from funnel.core.models import AmountPrompt, Lead
from funnel.core.stages import can_move
from funnel.core.telegram_text import plain_name
from funnel.handoff import cards, ownership
from funnel.handoff.purchases import record_purchase
from funnel.script.schema import Script
from handlers.callbacks import CardCb
from handlers.dependencies import BotConfig
from handlers.errors import explain
from handlers.i18n import t
from handlers.keyboards import card_keyboard
from handlers.respond import answer_callback
from handlers.views.manager_card import format_manager_card

MEMBERS = {ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
ACTS = frozenset({"take", "paid", "unfit", "release"})


async def is_manager(bot: Bot, config: BotConfig, chat_id: int, user_id: int) -> bool:
    """Members of the managers' chat and the school's admins may act on cards."""
    if config.is_admin(user_id):
        return True
    try:
        member = await bot.get_chat_member(chat_id, user_id)
    except TelegramAPIError:
        return False
    return member.status in MEMBERS


def router(config: BotConfig) -> Router:
    r = Router(name="managers")
    in_managers_chat = F.chat.id == config.manager_chat_id
    r.message.filter(in_managers_chat)
    r.callback_query.filter(F.message.chat.id == config.manager_chat_id)

    @r.callback_query(CardCb.filter())
    async def on_card(
        query: CallbackQuery,
        callback_data: CardCb,
        bot: Bot,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        message = query.message
        if message is None or not _is_ours(query.data, callback_data):
            await answer_callback(query, t("manager.not_a_button", lang=lang))
            return
        if not await is_manager(bot, config, message.chat.id, query.from_user.id):
            await answer_callback(query, t("manager.only_managers", lang=lang))
            return
        lead = await store.lead_by_id(session, callback_data.lead)
        if lead is None or not await cards.has_card(
            session, lead.id, message.chat.id, message.message_id
        ):
            await answer_callback(query, t("manager.not_this_chat", lang=lang))
            return
        if lead.deleted_at is not None:
            await answer_callback(query, t("manager.lead_erased", lang=lang))
            return
        if callback_data.act == "take":
            await _take(query, bot, session, script, clock, lead)
        elif callback_data.act == "release":
            await _release(query, bot, session, script, clock, lead, config)
        elif callback_data.act == "paid":
            # Committed before any request: no write waits for the managers' chat.
            await ownership.note_activity(session, lead.id, clock.now())
            await session.commit()
            await answer_callback(query)
            prompt = await bot.send_message(
                message.chat.id,
                t("manager.amount_prompt", lang=lang, lead=lead.id),
                reply_markup=ForceReply(selective=True),
            )
            # The reply is matched by this message's id, whatever the prompt's words, so the
            # row can only be written once the prompt is sent (a crash in between leaves a
            # prompt whose reply is not taken: the manager presses the button again).
            session.add(
                AmountPrompt(
                    chat_id=prompt.chat.id,
                    message_id=prompt.message_id,
                    lead_id=lead.id,
                    created_at=clock.now(),
                )
            )
            await session.commit()
        elif callback_data.act == "unfit":
            now = clock.now()
            if can_move(script, lead.stage, script.roles.exit):
                store.log_stage(session, lead, script.roles.exit, "manager:unfit", now)
            if lead.manager_id is not None:
                # Not a fit ends the take: the exit stage's campaigns (if any) take over.
                ownership.release(lead, await ownership.open_take(session, lead.id), "unfit", now)
            await session.commit()
            await answer_callback(query, t("manager.unfit_marked", lang=lang))
            await _refresh_card(bot, session, script, lead, message.chat.id, message.message_id)

    @r.callback_query()
    async def on_other_button(query: CallbackQuery, script: Script) -> None:
        # Not a card's button (forged, stale, or another chat's): still stop the spinner.
        await answer_callback(query, t("manager.not_a_button", lang=script.language))

    @r.message(F.reply_to_message, F.text, _replies_to_a_prompt)
    async def on_amount(
        message: Message,
        bot: Bot,
        session: AsyncSession,
        script: Script,
        clock: Clock,
        prompt: AmountPrompt,
    ) -> None:
        lang = script.language
        if message.from_user is None:
            return
        if not await is_manager(bot, config, message.chat.id, message.from_user.id):
            return
        lead = await store.lead_by_id(session, prompt.lead_id)
        if lead is None or not await cards.has_card(session, lead.id, message.chat.id, None):
            await message.reply(t("manager.not_this_chat", lang=lang))
            return
        if lead.deleted_at is not None:
            await message.reply(t("manager.lead_erased_not_recorded", lang=lang))
            return
        try:
            amount = inputs.parse_amount(message.text or "")
        except ValueError as e:
            await message.reply(escape(explain(e, lang)))
            return
        stage = await record_purchase(
            session, script, lead, amount, "RUB", message.from_user.id, clock.now()
        )
        await ownership.note_activity(session, lead.id, clock.now())
        await session.commit()
        title = escape(script.titles.get(stage, stage))
        await message.reply(
            t("paid.recorded", lang=lang, amount=amount, currency="RUB", lead=lead.id, stage=title)
        )

    return r


def _is_ours(data: str | None, callback_data: CardCb) -> bool:
    """Only data the bot itself packs: a known action and a lead number written plainly
    ('m:take:٣' or 'm:take:007' would unpack too)."""
    if callback_data.act not in ACTS or data != callback_data.pack():
        return False
    try:
        inputs.parse_lead_id(str(callback_data.lead))
    except ValueError:
        return False
    return True


async def _replies_to_a_prompt(
    message: Message, bot: Bot, session: AsyncSession
) -> dict[str, Any] | bool:
    """A reply to the bot's own amount prompt in this chat: the prompt's row (as `prompt`),
    found by the replied message's id. Anything else is not this handler's."""
    replied = message.reply_to_message
    if replied is None or not _from_this_bot(replied, bot):
        return False
    prompt = await session.get(AmountPrompt, (message.chat.id, replied.message_id))
    return {"prompt": prompt} if prompt is not None else False


def _from_this_bot(message: Message, bot: Bot) -> bool:
    author = message.from_user
    return author is not None and author.is_bot and author.id == bot.id


async def _take(
    query: CallbackQuery, bot: Bot, session: AsyncSession, script: Script, clock: Clock, lead: Lead
) -> None:
    lang = script.language
    name = plain_name(query.from_user.full_name, 128) or t("manager.default_name", lang=lang)
    now = clock.now()
    message = query.message
    call = await cards.card_call(
        session,
        lead.id,
        message.chat.id if message else 0,
        message.message_id if message else 0,
        fallback=now,
    )
    taken = await ownership.take(
        session, script, lead.id, query.from_user.id, name,
        card_id=call.card_id, called_at=call.called_at, now=now,
    )  # fmt: skip
    await session.commit()
    await session.refresh(lead)
    if not taken:
        await _answer_taken_by(query, lead, lang)
        return
    await answer_callback(query, t("manager.taken", lang=lang))
    if message is not None:
        await _refresh_card(bot, session, script, lead, message.chat.id, message.message_id)


async def _answer_taken_by(query: CallbackQuery, lead: Lead, lang: str) -> None:
    taker = plain_name(lead.manager_name, 64)
    if taker:
        await answer_callback(query, t("manager.taken_by", lang=lang, name=taker))
    else:
        await answer_callback(query, t("manager.taken_by_colleague", lang=lang))


async def _release(
    query: CallbackQuery,
    bot: Bot,
    session: AsyncSession,
    script: Script,
    clock: Clock,
    lead: Lead,
    config: BotConfig,
) -> None:
    """The owner (or an admin) gives the lead back to the bot's follow-ups."""
    lang = script.language
    if lead.manager_id is None:
        await answer_callback(query, t("manager.not_taken", lang=lang))
        return
    if lead.manager_id != query.from_user.id and not config.is_admin(query.from_user.id):
        await _answer_taken_by(query, lead, lang)
        return
    ownership.release(lead, await ownership.open_take(session, lead.id), "released", clock.now())
    await session.commit()
    await answer_callback(query, t("manager.released", lang=lang))
    if query.message is not None:
        await _refresh_card(
            bot, session, script, lead, query.message.chat.id, query.message.message_id
        )


async def _refresh_card(
    bot: Bot, session: AsyncSession, script: Script, lead: Lead, chat_id: int, message_id: int
) -> None:
    card = await cards.manager_card(session, script, lead)
    text = format_manager_card(card, lang=script.language)
    # "message is not modified" after a double tap: the card already says it.
    with contextlib.suppress(TelegramAPIError):
        await bot.edit_message_text(
            text,
            chat_id=chat_id,
            message_id=message_id,
            reply_markup=card_keyboard(card, script.language),
        )
