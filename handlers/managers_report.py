"""/managers (ADMIN_IDS only, in a private chat): per manager, the leads taken in a period and
what came of them. Anyone else who sends it learns nothing: the router does not match, and
the message is handled like any other text."""

from __future__ import annotations

from html import escape

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs
from funnel.core.clock import Clock
from funnel.core.errors import InputError
from funnel.reports.managers import managers_report
from funnel.reports.periods import parse_period
from funnel.script.schema import Script
from handlers.dependencies import BotConfig
from handlers.errors import explain
from handlers.i18n import t
from handlers.views.managers_report import format_managers_html

PERIOD = "[7d|30d|all|2026-01-01..2026-01-31]"


def router(config: BotConfig) -> Router:
    r = Router(name="managers_report")
    r.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(config.admin_ids))

    @r.message(Command("managers"))
    async def cmd_managers(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        usage = escape(t("admin.usage.managers", lang=lang, period=PERIOD))
        try:
            args = inputs.split_args(command.args)
            if len(args) > 1:
                await message.answer(usage)
                return
            period = parse_period(args[0] if args else None, clock.now(), tz=config.zone)
        except ValueError as e:
            await message.answer(f"{escape(explain(e, lang))}\n{usage}")
            return
        except OverflowError:
            # A date next to year 1 or 9999: its day boundaries do not exist.
            await message.answer(
                f"{escape(explain(InputError('period.out_of_range'), lang))}\n{usage}"
            )
            return
        report = await managers_report(session, script, period)
        await message.answer(format_managers_html(report, lang=lang))

    return r
