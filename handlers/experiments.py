"""The owner's /ab (ADMIN_IDS only): every A/B test of the script, or one by its id, with
exposures, conversions, intervals and the verdict (funnel/experiments/report.py)."""

from __future__ import annotations

import re
from html import escape

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs
from funnel.core.clock import Clock
from funnel.experiments.report import ab_report
from funnel.script.schema import EXPERIMENT_ID, Script
from handlers.dependencies import BotConfig
from handlers.errors import explain
from handlers.i18n import t
from handlers.views.experiments import format_ab_report_html


def router(config: BotConfig) -> Router:
    r = Router(name="experiments")
    r.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(config.admin_ids))

    @r.message(Command("ab"))
    async def cmd_ab(
        message: Message, command: CommandObject, session: AsyncSession, script: Script,
        clock: Clock,
    ) -> None:  # fmt: skip
        lang = script.language
        try:
            args = inputs.split_args(command.args)
        except ValueError as e:
            await message.answer(f"{escape(explain(e, lang))}\n{escape(t('ab.usage', lang=lang))}")
            return
        if len(args) > 1:
            await message.answer(escape(t("ab.usage", lang=lang)))
            return
        only = args[0].lower() if args else None
        if only is not None and not re.fullmatch(EXPERIMENT_ID, only):
            await _not_found(message, args[0], script, lang)
            return
        report = await ab_report(session, script, clock.now(), only)
        if only is not None and not report.experiments:
            await _not_found(message, args[0], script, lang)
            return
        await message.answer(format_ab_report_html(report, script, lang=lang))

    return r


async def _not_found(message: Message, asked: str, script: Script, lang: str) -> None:
    known = ", ".join(e.id for e in script.experiments) or "—"
    await message.answer(
        t(
            "ab.not_found",
            lang=lang,
            id=escape(inputs.quote(asked, 40)),
            known=escape(known[:300]),
        )
    )
