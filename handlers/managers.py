"""The managers' chat: taking a hot lead's card (once), recording its payment (the bot asks
for the amount with a reply prompt, so no state waits in memory), or marking it unfit."""

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

from bot.handoff import card_keyboard
from bot.settings import Settings
from funnel import handoff, store
from funnel.clock import Clock
from funnel.models import Lead
from funnel.purchases import parse_amount, record_purchase
from funnel.script import Script
from funnel.stages import can_move
from handlers.callbacks import CardCb
from handlers.respond import answer_callback

AMOUNT_PROMPT = "Сумма оплаты для лида #{lead} (ответьте на это сообщение, например 6900):"
PROMPT_LEAD = re.compile(r"лида #(\d+)")
MEMBERS = {ChatMemberStatus.CREATOR, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}


async def is_manager(bot: Bot, settings: Settings, chat_id: int, user_id: int) -> bool:
    """Members of the managers' chat and the school's admins may act on cards."""
    if settings.is_admin(user_id):
        return True
    try:
        member = await bot.get_chat_member(chat_id, user_id)
    except TelegramAPIError:
        return False
    return member.status in MEMBERS


def router(settings: Settings) -> Router:
    r = Router(name="managers")
    in_managers_chat = F.chat.id == settings.manager_chat_id
    r.message.filter(in_managers_chat)
    r.callback_query.filter(F.message.chat.id == settings.manager_chat_id)

    @r.callback_query(CardCb.filter())
    async def on_card(query: CallbackQuery, callback_data: CardCb, bot: Bot,
                      session: AsyncSession, script: Script, clock: Clock) -> None:  # fmt: skip
        message = query.message
        if message is None or not await is_manager(
            bot, settings, message.chat.id, query.from_user.id
        ):
            await answer_callback(query, "Эти кнопки — только для менеджеров школы.")
            return
        lead = await store.lead_by_id(session, callback_data.lead)
        if lead is None or lead.deleted_at is not None:
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
        else:
            await answer_callback(query)

    @r.message(F.reply_to_message.text.regexp(PROMPT_LEAD, mode="search"), F.text)
    async def on_amount(message: Message, bot: Bot, session: AsyncSession, script: Script,
                        clock: Clock) -> None:  # fmt: skip
        if message.from_user is None or message.reply_to_message is None:
            return
        if not await is_manager(bot, settings, message.chat.id, message.from_user.id):
            return
        match = PROMPT_LEAD.search(message.reply_to_message.text or "")
        lead = await store.lead_by_id(session, int(match.group(1))) if match else None
        if lead is None:
            return
        try:
            amount = parse_amount(message.text or "")
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


async def _take(query: CallbackQuery, bot: Bot, session: AsyncSession, script: Script,
                clock: Clock, lead: Lead) -> None:  # fmt: skip
    name = query.from_user.full_name[:128]
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
        await answer_callback(query, f"Лид уже в работе у {lead.manager_name or 'коллеги'}.")
        return
    await session.refresh(lead)
    await answer_callback(query, "Лид ваш. Напишите ему в ближайшее время.")
    if query.message is not None:
        await _refresh_card(bot, session, script, lead, query.message.chat.id,
                            query.message.message_id)  # fmt: skip


async def _refresh_card(bot: Bot, session: AsyncSession, script: Script, lead: Lead,
                        chat_id: int, message_id: int) -> None:  # fmt: skip
    card = await handoff.lead_card(session, script, lead)
    # "message is not modified" after a double tap: the card already says it.
    with contextlib.suppress(TelegramAPIError):
        await bot.edit_message_text(
            card.text, chat_id=chat_id, message_id=message_id, reply_markup=card_keyboard(card)
        )
