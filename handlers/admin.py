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
from funnel.core.errors import InputError
from funnel.core.models import Lead
from funnel.handoff.purchases import parse_currency, record_purchase, record_spend
from funnel.reports.campaign_effect import campaign_report
from funnel.reports.export import FORMATS, build_sheets, render
from funnel.reports.funnel_report import funnel_report
from funnel.reports.lead_card import lead_card
from funnel.reports.periods import Period, parse_period
from funnel.script.loading import ScriptError
from funnel.script.schema import Script
from handlers.dependencies import BotConfig, ScriptReloader
from handlers.errors import explain
from handlers.i18n import t
from handlers.views.campaigns import format_campaign_report_html
from handlers.views.chart import render_funnel_png
from handlers.views.export import export_labels
from handlers.views.lead_card import format_lead_card_html
from handlers.views.report import format_report_html, format_sources_html
from handlers.views.script_diff import format_refusal_html, format_reload_html

PERIOD = "[7d|30d|all|2026-01-01..2026-01-31]"


def usage(name: str, lang: str) -> str:
    """How the command is written, in `lang`."""
    texts = {
        "stats": lambda: t("admin.usage.stats", lang=lang, period=PERIOD),
        "funnel": lambda: t("admin.usage.funnel", lang=lang, period=PERIOD),
        "sources": lambda: t("admin.usage.sources", lang=lang, period=PERIOD),
        "export": lambda: t("admin.usage.export", lang=lang, period=f"{PERIOD} [xlsx|csv]"),
        "paid": lambda: t("admin.usage.paid", lang=lang),
        "spend": lambda: t("admin.usage.spend", lang=lang),
        "lead": lambda: t("admin.usage.lead", lang=lang),
    }
    return texts[name]()


# As wide as leads.source and ad_spend.source.
SOURCE_LENGTH = 64


async def _refuse(message: Message, name: str, problem: ValueError, lang: str) -> None:
    """What was wrong, and how the command is written."""
    await message.answer(f"{escape(explain(problem, lang))}\n{escape(usage(name, lang))}")


async def _args(
    message: Message, command: CommandObject, name: str, lang: str
) -> list[str] | None:
    """The command's words; an over-long one gets a short reply instead (None)."""
    try:
        return inputs.split_args(command.args)
    except ValueError as e:
        await _refuse(message, name, e, lang)
        return None


async def _period(
    message: Message, name: str, args: list[str], clock: Clock, config: BotConfig, lang: str
) -> Period | None:
    """The period named by the first argument; on a bad one, says how to write it."""
    try:
        return parse_period(args[0] if args else None, clock.now(), tz=config.zone)
    except ValueError as e:
        await _refuse(message, name, e, lang)
    except OverflowError:
        # A date next to year 1 or 9999: its day boundaries do not exist.
        await _refuse(message, name, InputError("period.out_of_range"), lang)
    return None


async def _period_asked(
    message: Message,
    command: CommandObject,
    name: str,
    clock: Clock,
    config: BotConfig,
    lang: str,
) -> tuple[list[str], Period] | None:
    """A report command's words and the period they name; a reply instead when either is
    wrong (None)."""
    args = await _args(message, command, name, lang)
    if args is None:
        return None
    period = await _period(message, name, args, clock, config, lang)
    return None if period is None else (args, period)


async def _lead(
    message: Message, name: str, session: AsyncSession, reference: str, lang: str
) -> Lead | None:
    """The lead an admin named; a reply when it is malformed or not found (None)."""
    try:
        lead = await store.lead_by_reference(session, reference)
    except ValueError as e:
        await _refuse(message, name, e, lang)
        return None
    if lead is None:
        quoted = escape(inputs.quote(reference, 40))
        await message.answer(t("admin.lead.not_found", lang=lang, lead=quoted))
    return lead


def _source(text: str) -> str:
    return inputs.check_length(text, SOURCE_LENGTH, "source")


def router(config: BotConfig) -> Router:
    r = Router(name="admin")
    r.message.filter(F.chat.type == ChatType.PRIVATE, F.from_user.id.in_(config.admin_ids))

    @r.message(Command("stats"))
    async def cmd_stats(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        asked = await _period_asked(message, command, "stats", clock, config, lang)
        if asked is None:
            return
        args, period = asked
        try:
            source = _source(args[1]) if len(args) > 1 else None
        except ValueError as e:
            await _refuse(message, "stats", e, lang)
            return
        report = await funnel_report(
            session, script, now=clock.now(), period=period, source=source
        )
        await message.answer(format_report_html(report, lang=script.language))

    @r.message(Command("funnel"))
    async def cmd_funnel(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
        bot: Bot,
    ) -> None:
        lang = script.language
        asked = await _period_asked(message, command, "funnel", clock, config, lang)
        if asked is None:
            return
        _, period = asked
        report = await funnel_report(session, script, now=clock.now(), period=period)
        # matplotlib holds the thread for a while: the other updates keep being served.
        png = await asyncio.to_thread(
            render_funnel_png, report, script.course, lang=script.language
        )
        await message.answer_photo(BufferedInputFile(png, "funnel.png"))

    @r.message(Command("sources"))
    async def cmd_sources(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        asked = await _period_asked(message, command, "sources", clock, config, lang)
        if asked is None:
            return
        _, period = asked
        report = await funnel_report(session, script, now=clock.now(), period=period)
        await message.answer(format_sources_html(report, lang=script.language))

    @r.message(Command("lead"))
    async def cmd_lead(
        message: Message, command: CommandObject, session: AsyncSession, script: Script
    ) -> None:
        lang = script.language
        args = await _args(message, command, "lead", lang)
        if args is None:
            return
        if not args:
            await message.answer(escape(usage("lead", lang)))
            return
        lead = await _lead(message, "lead", session, args[0], lang)
        card = await lead_card(session, script, lead.id) if lead else None
        if card is not None:
            await message.answer(format_lead_card_html(card, lang=script.language))

    @r.message(Command("paid"))
    async def cmd_paid(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        args = await _args(message, command, "paid", lang)
        if args is None:
            return
        if len(args) not in (2, 3):
            await message.answer(escape(usage("paid", lang)))
            return
        lead = await _lead(message, "paid", session, args[0], lang)
        if lead is None:
            return
        try:
            amount = inputs.parse_amount(args[1])
            currency = parse_currency(args[2] if len(args) == 3 else None)
        except ValueError as e:
            await _refuse(message, "paid", e, lang)
            return
        user_id = message.from_user.id if message.from_user else None
        stage = await record_purchase(
            session, script, lead, amount, currency, user_id, clock.now()
        )
        await session.commit()
        title = escape(script.titles.get(stage, stage))
        await message.answer(
            t(
                "paid.recorded",
                lang=lang,
                amount=amount,
                currency=currency,
                lead=lead.id,
                stage=title,
            )
        )

    @r.message(Command("spend"))
    async def cmd_spend(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        args = await _args(message, command, "spend", lang)
        if args is None:
            return
        if len(args) not in (2, 3):
            await message.answer(escape(usage("spend", lang)))
            return
        try:
            source = _source(args[0])
            amount = inputs.parse_amount(args[1])
            currency = parse_currency(args[2] if len(args) == 3 else None)
        except ValueError as e:
            await _refuse(message, "spend", e, lang)
            return
        user_id = message.from_user.id if message.from_user else None
        await record_spend(session, source, amount, currency, user_id, clock.now())
        await session.commit()
        await message.answer(
            t(
                "admin.spend.recorded",
                lang=lang,
                amount=amount,
                currency=currency,
                source=escape(source),
            )
        )

    @r.message(Command("export"))
    async def cmd_export(
        message: Message,
        command: CommandObject,
        session: AsyncSession,
        script: Script,
        clock: Clock,
    ) -> None:
        lang = script.language
        args = await _args(message, command, "export", lang)
        if args is None:
            return
        # "/export 30d csv", "/export csv", "/export": the workbook unless CSV is asked for.
        formats = [a.lower() for a in args if a.lower() in FORMATS]
        words = [a for a in args if a.lower() not in FORMATS]
        if len(formats) > 1 or len(words) > 1:
            await message.answer(escape(usage("export", lang)))
            return
        period = await _period(message, "export", words, clock, config, lang)
        if period is None:
            return
        fmt = "csv" if formats == ["csv"] else "xlsx"
        # The funnel's clock, not the wall's: what the bot recorded is all there.
        now = clock.now()
        labels = export_labels(lang, config.zone.key)
        sheets = await build_sheets(session, script, period, now, zone=config.zone, labels=labels)
        # A big workbook takes a while to write: the other updates keep being served.
        data = await asyncio.to_thread(render, sheets, labels, fmt)
        name = f"leads-{now.astimezone(config.zone):%Y-%m-%d}.{fmt}"
        await message.answer_document(BufferedInputFile(data, name))

    @r.message(Command("campaigns"))
    async def cmd_campaigns(
        message: Message, session: AsyncSession, script: Script, clock: Clock
    ) -> None:
        report = await campaign_report(session, script, clock.now())
        await message.answer(format_campaign_report_html(report, lang=script.language))

    @r.message(Command("reload"))
    async def cmd_reload(message: Message, scripts: ScriptReloader, script: Script) -> None:
        # `script` is the version this update began with: the diff is from it to the new one.
        try:
            loaded = await scripts.reload()
        except ScriptError as e:
            shown = scripts.problems_that_fit(e.problems)
            await message.answer(format_refusal_html(shown, script.language))
            return
        await message.answer(format_reload_html(script, loaded))

    return r
