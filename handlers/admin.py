"""The owner's commands (ADMIN_IDS only): funnel numbers and chart, sources, a lead's card,
payments and ad spend, CSV export, the campaigns' effect, and reloading the script.

Anyone else who sends these learns nothing: the router does not match them, so their
message is handled like any other text from a prospect."""

from __future__ import annotations

import asyncio
from html import escape

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core import inputs, store
from funnel.core.clock import Clock
from funnel.core.models import Lead
from funnel.handoff.purchases import parse_currency, record_purchase, record_spend
from funnel.reports.campaign_effect import campaign_report
from funnel.reports.export import export_leads_csv
from funnel.reports.funnel_report import funnel_report
from funnel.reports.lead_card import lead_card
from funnel.reports.periods import Period, parse_period
from funnel.script.loading import ScriptError
from funnel.script.schema import Script
from handlers.dependencies import BotConfig, ScriptReloader
from handlers.views.campaigns import format_campaign_report_html
from handlers.views.chart import render_funnel_png
from handlers.views.export import csv_labels
from handlers.views.lead_card import format_lead_card_html
from handlers.views.report import format_report_html, format_sources_html

PERIOD = "[7d|30d|all|2026-01-01..2026-01-31]"
USAGE = {
    "stats": f"/stats {PERIOD} [source]",
    "funnel": f"/funnel {PERIOD}",
    "sources": f"/sources {PERIOD}",
    "export": f"/export {PERIOD}",
    "paid": "/paid <lead number or @username> <amount> [currency]",
    "spend": "/spend <source> <amount> [currency]",
    "lead": "/lead <lead number or @username>",
}
# As wide as leads.source and ad_spend.source.
SOURCE_LENGTH = 64


async def _refuse(message: Message, name: str, problem: ValueError) -> None:
    """What was wrong, and how the command is written."""
    await message.answer(f"{escape(str(problem))}\n{escape(USAGE[name])}")


async def _args(message: Message, command: CommandObject, name: str) -> list[str] | None:
    """The command's words; an over-long one gets a short reply instead (None)."""
    try:
        return inputs.split_args(command.args)
    except ValueError as e:
        await _refuse(message, name, e)
        return None


async def _period(
    message: Message, name: str, args: list[str], clock: Clock, config: BotConfig
) -> Period | None:
    """The period named by the first argument; on a bad one, says how to write it."""
    try:
        return parse_period(args[0] if args else None, clock.now(), tz=config.zone)
    except ValueError as e:
        await _refuse(message, name, e)
    except OverflowError:
        # A date next to year 1 or 9999: its day boundaries do not exist.
        await _refuse(message, name, ValueError("Дата периода вне допустимого диапазона."))
    return None


async def _lead(message: Message, name: str, session: AsyncSession, reference: str) -> Lead | None:
    """The lead an admin named; a reply when it is malformed or not found (None)."""
    try:
        lead = await store.lead_by_reference(session, reference)
    except ValueError as e:
        await _refuse(message, name, e)
        return None
    if lead is None:
        await message.answer(f"Лид {escape(inputs.quote(reference, 40))} не найден.")
    return lead


def _source(text: str) -> str:
    return inputs.check_length(text, SOURCE_LENGTH, "Источник")


def router(config: BotConfig) -> Router:
    r = Router(name="admin")
    r.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(config.admin_ids))

    @r.message(Command("stats"))
    async def cmd_stats(message: Message, command: CommandObject, session: AsyncSession,
                        script: Script, clock: Clock) -> None:  # fmt: skip
        args = await _args(message, command, "stats")
        if args is None:
            return
        period = await _period(message, "stats", args, clock, config)
        if period is None:
            return
        try:
            source = _source(args[1]) if len(args) > 1 else None
        except ValueError as e:
            await _refuse(message, "stats", e)
            return
        report = await funnel_report(
            session, script, now=clock.now(), period=period, source=source
        )
        await message.answer(format_report_html(report, lang=script.language))

    @r.message(Command("funnel"))
    async def cmd_funnel(message: Message, command: CommandObject, session: AsyncSession,
                         script: Script, clock: Clock, bot: Bot) -> None:  # fmt: skip
        args = await _args(message, command, "funnel")
        if args is None:
            return
        period = await _period(message, "funnel", args, clock, config)
        if period is None:
            return
        report = await funnel_report(session, script, now=clock.now(), period=period)
        # matplotlib holds the thread for a while: the other updates keep being served.
        png = await asyncio.to_thread(
            render_funnel_png, report, script.course, lang=script.language
        )
        await message.answer_photo(BufferedInputFile(png, "funnel.png"))

    @r.message(Command("sources"))
    async def cmd_sources(message: Message, command: CommandObject, session: AsyncSession,
                          script: Script, clock: Clock) -> None:  # fmt: skip
        args = await _args(message, command, "sources")
        if args is None:
            return
        period = await _period(message, "sources", args, clock, config)
        if period is None:
            return
        report = await funnel_report(session, script, now=clock.now(), period=period)
        await message.answer(format_sources_html(report, lang=script.language))

    @r.message(Command("lead"))
    async def cmd_lead(message: Message, command: CommandObject, session: AsyncSession,
                       script: Script) -> None:  # fmt: skip
        args = await _args(message, command, "lead")
        if args is None:
            return
        if not args:
            await message.answer(escape(USAGE["lead"]))
            return
        lead = await _lead(message, "lead", session, args[0])
        card = await lead_card(session, script, lead.id) if lead else None
        if card is not None:
            await message.answer(format_lead_card_html(card, lang=script.language))

    @r.message(Command("paid"))
    async def cmd_paid(message: Message, command: CommandObject, session: AsyncSession,
                       script: Script, clock: Clock) -> None:  # fmt: skip
        args = await _args(message, command, "paid")
        if args is None:
            return
        if len(args) not in (2, 3):
            await message.answer(escape(USAGE["paid"]))
            return
        lead = await _lead(message, "paid", session, args[0])
        if lead is None:
            return
        try:
            amount = inputs.parse_amount(args[1])
            currency = parse_currency(args[2] if len(args) == 3 else None)
        except ValueError as e:
            await _refuse(message, "paid", e)
            return
        user_id = message.from_user.id if message.from_user else None
        stage = await record_purchase(
            session, script, lead, amount, currency, user_id, clock.now()
        )
        await session.commit()
        title = escape(script.titles.get(stage, stage))
        await message.answer(
            f"Оплата {amount} {currency} от лида #{lead.id} записана. Этап: {title}."
        )

    @r.message(Command("spend"))
    async def cmd_spend(message: Message, command: CommandObject, session: AsyncSession,
                        clock: Clock) -> None:  # fmt: skip
        args = await _args(message, command, "spend")
        if args is None:
            return
        if len(args) not in (2, 3):
            await message.answer(escape(USAGE["spend"]))
            return
        try:
            source = _source(args[0])
            amount = inputs.parse_amount(args[1])
            currency = parse_currency(args[2] if len(args) == 3 else None)
        except ValueError as e:
            await _refuse(message, "spend", e)
            return
        user_id = message.from_user.id if message.from_user else None
        await record_spend(session, source, amount, currency, user_id, clock.now())
        await session.commit()
        await message.answer(f"Расход {amount} {currency} на «{escape(source)}» записан.")

    @r.message(Command("export"))
    async def cmd_export(message: Message, command: CommandObject, session: AsyncSession,
                         script: Script, clock: Clock) -> None:  # fmt: skip
        args = await _args(message, command, "export")
        if args is None:
            return
        period = await _period(message, "export", args, clock, config)
        if period is None:
            return
        data = await export_leads_csv(
            session, script, period, clock.now(), labels=csv_labels(script.language)
        )
        name = f"leads-{clock.now():%Y-%m-%d}.csv"
        await message.answer_document(BufferedInputFile(data, name))

    @r.message(Command("campaigns"))
    async def cmd_campaigns(message: Message, session: AsyncSession, script: Script,
                            clock: Clock) -> None:  # fmt: skip
        report = await campaign_report(session, script, clock.now())
        await message.answer(format_campaign_report_html(report, lang=script.language))

    @r.message(Command("reload"))
    async def cmd_reload(message: Message, scripts: ScriptReloader) -> None:
        try:
            script = await scripts.reload()
        except ScriptError as e:
            lines = "\n".join(escape(p) for p in scripts.problems_that_fit(e.problems))
            await message.answer(f"Сценарий не принят, работает прежний.\n<code>{lines}</code>")
            return
        await message.answer(f"Сценарий {escape(script.label)} загружен.")

    return r
