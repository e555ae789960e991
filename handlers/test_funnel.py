"""`/test_funnel [scale]` and `/test_funnel stop` for admins: the whole script on themselves,
with the campaigns' delays divided by the scale (nudges in seconds), as a test lead that no
report counts. The run's state lives on the lead in the database."""

from __future__ import annotations

from html import escape

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs
from funnel.core.clock import Clock
from funnel.core.telegram_text import fit_to_telegram
from funnel.dialogue.test_run import DEFAULT_SCALE, parse_scale, start_test_run, stop_test_run
from funnel.script.schema import Script
from handlers.dependencies import BotConfig
from handlers.i18n import t
from handlers.keyboards import keyboard
from handlers.prospect import profile_of


def _scale(scale: float) -> str:
    return f"{scale:g}"


def router(config: BotConfig) -> Router:
    r = Router(name="test_funnel")
    r.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(config.admin_ids))

    @r.message(Command("test_funnel"))
    async def cmd_test_funnel(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
        bot: Bot,
    ) -> None:
        lang = script.language
        user = message.from_user
        if user is None:
            return
        try:
            args = inputs.split_args(command.args)
        except ValueError:
            args = None
        if args is None or len(args) > 1:
            await message.answer(t("test_funnel.usage", lang=lang, scale=_scale(DEFAULT_SCALE)))
            return
        if args and args[0].lower() == "stop":
            stopped = await stop_test_run(session, user.id)
            await session.commit()
            if stopped:
                await message.answer(t("test_funnel.stopped", lang=lang))
            else:
                await message.answer(t("test_funnel.none", lang=lang))
            return
        try:
            scale = parse_scale(args[0] if args else None)
        except ValueError:
            usage = t("test_funnel.usage", lang=lang, scale=_scale(DEFAULT_SCALE))
            await message.answer(f"{t('test_funnel.bad_scale', lang=lang)}\n{usage}")
            return
        run = await start_test_run(
            session, script, clock, profile_of(user, message.chat.id), scale
        )
        await session.commit()
        hour = 3600 / scale
        await message.answer(
            t(
                "test_funnel.started",
                lang=lang,
                scale=_scale(scale),
                hour=f"{hour:.3g}",
                label=escape(script.label),
                lead=run.lead_id,
            )
        )
        await bot.send_message(
            message.chat.id, fit_to_telegram(run.reply.text), reply_markup=keyboard(run.reply)
        )

    return r
