"""The owner's commands (ADMIN_IDS only): funnel numbers and chart, sources, a lead's card,
payments and ad spend, CSV export, the campaigns' effect, and reloading the script.

Anyone else who sends these learns nothing: the router does not match them, so their
message is handled like any other text from a prospect."""

from __future__ import annotations

from html import escape

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject
from aiogram.types import BufferedInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession

from bot.chart import render_funnel_png
from bot.scripts import ScriptHolder
from bot.settings import Settings
from funnel import store
from funnel.analytics import funnel_report
from funnel.campaign_report import campaign_report, format_campaign_report_html
from funnel.clock import Clock
from funnel.export import export_leads_csv
from funnel.lead_card import format_lead_card_html, lead_card
from funnel.periods import Period, parse_period
from funnel.purchases import parse_amount, parse_currency, record_purchase, record_spend
from funnel.report_text import format_report_html, format_sources_html
from funnel.script import Script, ScriptError

USAGE = {
    "stats": "/stats [7d|30d|all|2026-01-01..2026-01-31] [source]",
    "paid": "/paid <lead number or @username> <amount> [currency]",
    "spend": "/spend <source> <amount> [currency]",
    "lead": "/lead <lead number or @username>",
}


def _args(command: CommandObject) -> list[str]:
    return (command.args or "").split()


async def _period(
    message: Message, args: list[str], clock: Clock, settings: Settings
) -> Period | None:
    """The period named by the first argument; on a bad one, says how to write it."""
    try:
        return parse_period(args[0] if args else None, clock.now(), tz=settings.zone)
    except ValueError as e:
        await message.answer(f"{escape(str(e))}\n{escape(USAGE['stats'])}")
        return None


def router(settings: Settings) -> Router:
    r = Router(name="admin")
    r.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(settings.admin_ids))

    @r.message(Command("stats"))
    async def cmd_stats(message: Message, command: CommandObject, session: AsyncSession,
                        script: Script, clock: Clock) -> None:  # fmt: skip
        args = _args(command)
        period = await _period(message, args, clock, settings)
        if period is None:
            return
        source = args[1] if len(args) > 1 else None
        report = await funnel_report(
            session, script, now=clock.now(), period=period, source=source
        )
        await message.answer(format_report_html(report))

    @r.message(Command("funnel"))
    async def cmd_funnel(message: Message, command: CommandObject, session: AsyncSession,
                         script: Script, clock: Clock, bot: Bot) -> None:  # fmt: skip
        args = _args(command)
        period = await _period(message, args, clock, settings)
        if period is None:
            return
        report = await funnel_report(session, script, now=clock.now(), period=period)
        png = render_funnel_png(report, title=script.course)
        await message.answer_photo(BufferedInputFile(png, "funnel.png"))

    @r.message(Command("sources"))
    async def cmd_sources(message: Message, command: CommandObject, session: AsyncSession,
                          script: Script, clock: Clock) -> None:  # fmt: skip
        args = _args(command)
        period = await _period(message, args, clock, settings)
        if period is None:
            return
        report = await funnel_report(session, script, now=clock.now(), period=period)
        await message.answer(format_sources_html(report))

    @r.message(Command("lead"))
    async def cmd_lead(message: Message, command: CommandObject, session: AsyncSession,
                       script: Script) -> None:  # fmt: skip
        args = _args(command)
        lead = await store.lead_by_reference(session, args[0]) if args else None
        card = await lead_card(session, script, lead.id) if lead else None
        if card is None:
            await message.answer(f"Лид не найден. {escape(USAGE['lead'])}")
            return
        await message.answer(format_lead_card_html(card))

    @r.message(Command("paid"))
    async def cmd_paid(message: Message, command: CommandObject, session: AsyncSession,
                       script: Script, clock: Clock) -> None:  # fmt: skip
        args = _args(command)
        if len(args) not in (2, 3):
            await message.answer(escape(USAGE["paid"]))
            return
        lead = await store.lead_by_reference(session, args[0])
        if lead is None:
            await message.answer(f"Лид {escape(args[0][:40])} не найден.")
            return
        try:
            amount = parse_amount(args[1])
            currency = parse_currency(args[2] if len(args) == 3 else None)
        except ValueError as e:
            await message.answer(f"{escape(str(e))}\n{escape(USAGE['paid'])}")
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
        args = _args(command)
        if len(args) not in (2, 3):
            await message.answer(escape(USAGE["spend"]))
            return
        try:
            amount = parse_amount(args[1])
            currency = parse_currency(args[2] if len(args) == 3 else None)
        except ValueError as e:
            await message.answer(f"{escape(str(e))}\n{escape(USAGE['spend'])}")
            return
        source = args[0][:64]
        user_id = message.from_user.id if message.from_user else None
        await record_spend(session, source, amount, currency, user_id, clock.now())
        await session.commit()
        await message.answer(f"Расход {amount} {currency} на «{escape(source)}» записан.")

    @r.message(Command("export"))
    async def cmd_export(message: Message, command: CommandObject, session: AsyncSession,
                         script: Script, clock: Clock) -> None:  # fmt: skip
        args = _args(command)
        period = await _period(message, args, clock, settings)
        if period is None:
            return
        data = await export_leads_csv(session, script, period, clock.now())
        name = f"leads-{clock.now():%Y-%m-%d}.csv"
        await message.answer_document(BufferedInputFile(data, name))

    @r.message(Command("campaigns"))
    async def cmd_campaigns(message: Message, session: AsyncSession, script: Script,
                            clock: Clock) -> None:  # fmt: skip
        report = await campaign_report(session, script, clock.now())
        await message.answer(format_campaign_report_html(report))

    @r.message(Command("reload"))
    async def cmd_reload(message: Message, scripts: ScriptHolder) -> None:
        try:
            script = await scripts.reload()
        except ScriptError as e:
            lines = "\n".join(escape(p) for p in scripts.problems_that_fit(e.problems))
            await message.answer(f"Сценарий не принят, работает прежний.\n<code>{lines}</code>")
            return
        await message.answer(f"Сценарий {escape(script.label)} загружен.")

    return r
