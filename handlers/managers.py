"""The managers' chat: taking a hot lead's card (once), recording its payment (the bot asks
for the amount with a reply prompt, so no state waits in memory), or marking it unfit.

Every button pressed in this chat is answered. An action is honoured only on a card the bot
sent to this chat, and an amount only as a reply to the bot's own prompt."""

from __future__ import annotations

import contextlib
import re
from html import escape

from aiogram import Bot, F, Router
from aiogram.enums import ChatMemberStatus
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, ForceReply, Message
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs, store
from funnel.core.clock import Clock
from funnel.core.models import Lead
from funnel.core.stages import can_move
from funnel.core.telegram_text import plain_name
from funnel.handoff import cards
from funnel.handoff.purchases import record_purchase
from funnel.script.schema import Script
from handlers.callbacks import CardCb
from handlers.dependencies import BotConfig
from handlers.keyboards import card_keyboard
from handlers.respond import answer_callback
from handlers.views.manager_card import format_manager_card

AMOUNT_PROMPT = "Сумма оплаты для лида #{lead} (ответьте на это сообщение, например 6900):"
# The prompt itself, not any message naming a lead (such as "Оплата … от лида #7 записана").
PROMPT_LEAD = re.compile("^" + re.escape(AMOUNT_PROMPT.split("{lead}")[0]) + "([0-9]+)")
MEMBERS = {ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
ACTS = frozenset({"take", "paid", "unfit"})
NOT_A_BUTTON = "Эта кнопка не от бота или устарела — ничего не изменилось."
NOT_THIS_CHAT = "Эта карточка не из этого чата (или ещё не доставлена) — ничего не изменилось."


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
    async def on_card(query: CallbackQuery, callback_data: CardCb, bot: Bot,
                      session: AsyncSession, script: Script, clock: Clock) -> None:  # fmt: skip
        message = query.message
        if message is None or not _is_ours(query.data, callback_data):
            await answer_callback(query, NOT_A_BUTTON)
            return
        if not await is_manager(bot, config, message.chat.id, query.from_user.id):
            await answer_callback(query, "Эти кнопки — только для менеджеров школы.")
            return
        lead = await store.lead_by_id(session, callback_data.lead)
        if lead is None or not await cards.has_card(
            session, lead.id, message.chat.id, message.message_id
        ):
            await answer_callback(query, NOT_THIS_CHAT)
            return
        if lead.deleted_at is not None:
            await answer_callback(query, "Лид удалён по его просьбе.")
            return
        if callback_data.act == "take":
            await _take(query, bot, session, script, clock, lead)
        elif callback_data.act == "paid":
            await answer_callback(query)
            await bot.send_message(
                message.chat.id,
                AMOUNT_PROMPT.format(lead=lead.id),
                reply_markup=ForceReply(selective=True),
            )
        elif callback_data.act == "unfit":
            if can_move(script, lead.stage, script.roles.exit):
                store.log_stage(session, lead, script.roles.exit, "manager:unfit", clock.now())
            await session.commit()
            await answer_callback(query, "Отмечен как неподходящий.")
            await _refresh_card(bot, session, script, lead, message.chat.id, message.message_id)

    @r.callback_query()
    async def on_other_button(query: CallbackQuery) -> None:
        # Not a card's button (forged, stale, or another chat's): still stop the spinner.
        await answer_callback(query, NOT_A_BUTTON)

    @r.message(F.reply_to_message.text.regexp(PROMPT_LEAD, mode="search"), F.text)
    async def on_amount(message: Message, bot: Bot, session: AsyncSession, script: Script,
                        clock: Clock) -> None:  # fmt: skip
        prompt = message.reply_to_message
        if message.from_user is None or prompt is None or not _from_this_bot(prompt, bot):
            return
        if not await is_manager(bot, config, message.chat.id, message.from_user.id):
            return
        match = PROMPT_LEAD.search(prompt.text or "")
        try:
            lead_id = inputs.parse_lead_id(match.group(1)) if match else None
        except ValueError:
            lead_id = None
        lead = await store.lead_by_id(session, lead_id) if lead_id is not None else None
        if lead is None or not await cards.has_card(session, lead.id, message.chat.id, None):
            await message.reply(NOT_THIS_CHAT)
            return
        if lead.deleted_at is not None:
            await message.reply("Лид удалён по его просьбе — оплата не записана.")
            return
        try:
            amount = inputs.parse_amount(message.text or "")
        except ValueError as e:
            await message.reply(escape(str(e)))
            return
        stage = await record_purchase(
            session, script, lead, amount, "RUB", message.from_user.id, clock.now()
        )
        await session.commit()
        title = escape(script.titles.get(stage, stage))
        await message.reply(f"Оплата {amount} RUB от лида #{lead.id} записана. Этап: {title}.")

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


def _from_this_bot(message: Message, bot: Bot) -> bool:
    author = message.from_user
    return author is not None and author.is_bot and author.id == bot.id


async def _take(query: CallbackQuery, bot: Bot, session: AsyncSession, script: Script,
                clock: Clock, lead: Lead) -> None:  # fmt: skip
    name = plain_name(query.from_user.full_name, 128) or "менеджер"
    # One UPDATE decides between two managers tapping at once: only one row changes.
    taken = await session.execute(
        update(Lead)
        .where(Lead.id == lead.id, Lead.manager_id.is_(None))
        .values(manager_id=query.from_user.id, manager_name=name, taken_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    if not getattr(taken, "rowcount", 0):
        await session.refresh(lead)
        taker = plain_name(lead.manager_name, 64) or "коллеги"
        await answer_callback(query, f"Лид уже в работе у {taker}.")
        return
    await session.refresh(lead)
    await answer_callback(query, "Лид ваш. Напишите ему в ближайшее время.")
    if query.message is not None:
        await _refresh_card(bot, session, script, lead, query.message.chat.id,
                            query.message.message_id)  # fmt: skip


async def _refresh_card(bot: Bot, session: AsyncSession, script: Script, lead: Lead,
                        chat_id: int, message_id: int) -> None:  # fmt: skip
    card = await cards.manager_card(session, script, lead)
    text = format_manager_card(card, lang=script.language)
    # "message is not modified" after a double tap: the card already says it.
    with contextlib.suppress(TelegramAPIError):
        await bot.edit_message_text(
            text, chat_id=chat_id, message_id=message_id, reply_markup=card_keyboard(card)
        )
