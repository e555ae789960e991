"""Broadcasts for admins: `/segment <filter>` previews who a filter picks; `/broadcast` is a
guided flow (segment → text → buttons → A/B split → time → test send → confirmation) whose
every step is stored in the draft row, so a restart resumes it and a stale or forged button
is recognised by the draft's revision; `/broadcasts` lists them with progress and the report.

Anyone else who sends these learns nothing: the router does not match them. A lead's tap on a
broadcast's reply button is recorded here too."""

from __future__ import annotations

from html import escape

from aiogram import Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.broadcasts import broadcasts
from funnel.broadcasts.segments import (
    count_segment,
    parse_segment,
    sample_segment,
    segment_lead_ids,
)
from funnel.core import inputs, store
from funnel.core.clock import Clock
from funnel.core.errors import InputError
from funnel.core.models import Broadcast
from funnel.core.telegram_text import fit_to_telegram
from funnel.script.schema import Script
from handlers.callbacks import BroadcastCb, BroadcastReplyCb, StaleCb
from handlers.dependencies import BotConfig
from handlers.i18n import N_, t
from handlers.respond import answer_callback
from handlers.views import broadcasts as views

# Which button each step offers (cancel is offered at every step).
ACTS = {"buttons": {"skip"}, "split": {"nosplit"}, "time": {"now"}, "confirm": {"send", "test"}}
TYPED_STEPS = ("segment", "text", "buttons", "split", "time")
FORMATTING = frozenset(
    {"bold", "italic", "underline", "strikethrough", "spoiler", "code", "pre", "text_link",
     "blockquote", "expandable_blockquote", "custom_emoji", "text_mention"}
)  # fmt: skip
# Counting the arms of a split reads every id; past this the confirmation shows the total.
ARMS_COUNTED_UP_TO = 200_000


async def _typing_into_a_draft(
    message: Message, session: AsyncSession
) -> dict[str, Broadcast] | bool:
    """The admin has a draft waiting for typed input: the message is for it."""
    if message.from_user is None:
        return False
    draft = await broadcasts.draft_of(session, message.from_user.id)
    if draft is None or draft.step not in (*TYPED_STEPS, "confirm"):
        return False
    return {"draft": draft}


def _fits(number: int) -> bool:
    """A row id the database can look up (a forged button may carry any integer)."""
    return 0 < number < 2**31


def _typed_text(message: Message) -> str:
    """What the admin wrote as Telegram HTML: formatting made in the app comes as entities
    (kept as tags); otherwise the text itself is the HTML source (links and hashtags Telegram
    detects on its own are no formatting)."""
    if any(e.type in FORMATTING for e in message.entities or ()):
        return message.html_text
    return message.text or ""


async def _show_step(message: Message, draft: Broadcast, lang: str, lead_in: str = "") -> None:
    text = views.prompt(draft.step, lang)
    await message.answer(
        fit_to_telegram(lead_in, text) if lead_in else text,
        reply_markup=views.step_keyboard(draft, lang),
    )


async def _test_send(bot: Bot, chat_id: int, draft: Broadcast, script: Script, name: str) -> None:
    """The admin sees the broadcast exactly as the leads will (each arm of a split)."""
    arms: list[broadcasts.Arm] = ["a", "b"] if draft.text_b is not None else ["a"]
    lang = script.language
    await bot.send_message(chat_id, t("broadcast.test.note", lang=lang, n=len(arms)))
    for arm in arms:
        await bot.send_message(
            chat_id,
            broadcasts.text_for(draft, arm, script, name),
            reply_markup=views.broadcast_keyboard(draft.id, draft.buttons),
        )


async def _confirm(
    bot: Bot,
    chat_id: int,
    session: AsyncSession,
    draft: Broadcast,
    script: Script,
    clock: Clock,
    config: BotConfig,
    name: str,
) -> None:
    """The last step: a test send to the admin, then how many will receive it."""
    count, arms = await _count(session, draft, script, clock)
    await session.commit()
    lang = script.language
    try:
        await _test_send(bot, chat_id, draft, script, name)
    except TelegramBadRequest as e:
        # Telegram refused what our checks let through (a link it does not take, say):
        # back to the text, before any lead could get it.
        broadcasts.go_to(draft, "text")
        draft.text_b = None
        await session.commit()
        refused = t("broadcast.test.refused", lang=lang, problem=escape(e.message[:300]))
        await bot.send_message(chat_id, fit_to_telegram(refused, views.prompt("text", lang)),
                               reply_markup=views.step_keyboard(draft, lang))  # fmt: skip
        return
    await bot.send_message(
        chat_id,
        views.confirmation(draft, count, arms, config.zone, lang),
        reply_markup=views.step_keyboard(draft, lang),
    )


async def _count(
    session: AsyncSession, draft: Broadcast, script: Script, clock: Clock
) -> tuple[int, dict[str, int]]:
    segment = parse_segment(draft.segment or "", script)
    now = clock.now()
    count = await count_segment(session, segment, now)
    arms: dict[str, int] = {}
    if draft.text_b is not None and count <= ARMS_COUNTED_UP_TO:
        ids = await segment_lead_ids(session, segment, now, 0, count + 1)
        for lead_id in ids:
            arm = broadcasts.arm_of(draft.id, lead_id, True)
            arms[arm] = arms.get(arm, 0) + 1
    return count, arms


def router(config: BotConfig) -> Router:
    r = Router(name="broadcasts")
    is_admin = F.from_user.id.in_(config.admin_ids)
    private = F.chat.type == ChatType.PRIVATE

    @r.message(private, is_admin, Command("segment"))
    async def cmd_segment(
        message: Message, command: CommandObject, session: AsyncSession, script: Script,
        clock: Clock,
    ) -> None:  # fmt: skip
        lang = script.language
        text = (command.args or "").strip()
        if not text:
            await message.answer(t("segment.usage", lang=lang))
            return
        try:
            segment = parse_segment(text, script)
        except InputError as e:
            await message.answer(fit_to_telegram(f"⚠️ {views.explain(e, lang)}",
                                                 t("segment.usage", lang=lang)))  # fmt: skip
            return
        now = clock.now()
        count = await count_segment(session, segment, now)
        sample = await sample_segment(session, segment, now, views.SAMPLE)
        await message.answer(views.segment_preview(segment.text, count, sample, script))

    @r.message(private, is_admin, Command("broadcast"))
    async def cmd_broadcast(
        message: Message, command: CommandObject, session: AsyncSession, script: Script,
        clock: Clock, bot: Bot,
    ) -> None:  # fmt: skip
        lang = script.language
        assert message.from_user is not None
        admin_id = message.from_user.id
        try:
            args = inputs.split_args(command.args)
        except ValueError:
            args = ["<too long>"]
        word = args[0].lower() if args else ""
        if word == "cancel":
            await _cancel_command(message, session, args[1:], admin_id, lang)
            return
        if word == "status":
            await _status(message, session, script, clock, args[1:], lang)
            return
        draft = await broadcasts.draft_of(session, admin_id)
        if not args and draft is not None:
            await message.answer(t("broadcast.resumed", lang=lang, id=draft.id))
            if draft.step == "confirm":
                name = message.from_user.first_name
                await _confirm(bot, message.chat.id, session, draft, script, clock, config, name)
            else:
                await _show_step(message, draft, lang)
            return
        draft = await broadcasts.open_draft(session, admin_id, clock.now())
        await session.commit()
        filter_text = (command.args or "").strip() if word != "new" else ""
        if filter_text:
            await _typed(message, session, script, clock, bot, draft, filter_text)
            return
        await _show_step(message, draft, lang, t("broadcast.started", lang=lang, id=draft.id))

    @r.message(private, is_admin, Command("broadcasts"))
    async def cmd_broadcasts(
        message: Message, command: CommandObject, session: AsyncSession, script: Script,
        clock: Clock,
    ) -> None:  # fmt: skip
        try:
            args = inputs.split_args(command.args)
        except ValueError:
            args = ["<too long>"]
        if args:
            await _status(message, session, script, clock, args, script.language)
            return
        items = []
        recent = await broadcasts.recent_broadcasts(session)
        progress = await broadcasts.progress_of(session, [b.id for b in recent])
        for broadcast in recent:
            state = broadcasts.state_of(broadcast, progress[broadcast.id])
            items.append((broadcast, state, progress[broadcast.id]))
        await message.answer(views.list_html(items, config.zone, script.language))

    @r.message(private, is_admin, F.text, ~F.text.startswith("/"), _typing_into_a_draft)
    async def on_draft_text(
        message: Message, draft: Broadcast, session: AsyncSession, script: Script,
        clock: Clock, bot: Bot,
    ) -> None:  # fmt: skip
        text = _typed_text(message) if draft.step in ("text", "split") else message.text or ""
        await _typed(message, session, script, clock, bot, draft, text)

    @r.message(private, is_admin, ~F.text, _typing_into_a_draft)
    async def on_draft_other(message: Message, draft: Broadcast, script: Script) -> None:
        # A sticker or a photo while the flow waits for words: say so, keep the step.
        lang = script.language
        await _show_step(message, draft, lang, t("broadcast.text_expected", lang=lang))

    async def _typed(
        message: Message, session: AsyncSession, script: Script, clock: Clock, bot: Bot,
        draft: Broadcast, text: str,
    ) -> None:  # fmt: skip
        lang = script.language
        step = draft.step
        if step == "confirm":
            # Words at the last step: the admin means the buttons.
            await message.answer(t("broadcast.use_buttons", lang=lang),
                                 reply_markup=views.step_keyboard(draft, lang))  # fmt: skip
            return
        try:
            if step == "segment":
                segment = parse_segment(text, script)
                count = await count_segment(session, segment, clock.now())
                if count == 0:
                    await _show_step(message, draft, lang, t("broadcast.segment_empty", lang=lang))
                    return
                draft.segment = segment.text
                broadcasts.go_to(draft, "text")
                lead_in = t("broadcast.segment_ok", lang=lang, n=count)
            elif step == "text":
                draft.text_a = broadcasts.check_text(text)
                broadcasts.go_to(draft, "buttons")
                lead_in = t("broadcast.text_ok", lang=lang)
            elif step == "buttons":
                draft.buttons = broadcasts.parse_buttons(text)
                broadcasts.go_to(draft, "split")
                lead_in = t("broadcast.buttons_ok", lang=lang, n=len(draft.buttons))
            elif step == "split":
                draft.text_b = broadcasts.check_text(text)
                broadcasts.go_to(draft, "time")
                lead_in = t("broadcast.split_ok", lang=lang)
            else:
                draft.send_at = broadcasts.parse_send_at(text, clock.now(), config.zone)
                broadcasts.go_to(draft, "confirm")
                name = message.from_user.first_name if message.from_user else ""
                await _confirm(bot, message.chat.id, session, draft, script, clock, config, name)
                return
        except InputError as e:
            # Refused before anything was assigned: the draft stays at its step.
            await message.answer(views.refusal(e, step, lang),
                                 reply_markup=views.step_keyboard(draft, lang))  # fmt: skip
            return
        await session.commit()
        await _show_step(message, draft, lang, lead_in)

    @r.callback_query(BroadcastCb.filter(), is_admin)
    async def on_flow_button(
        query: CallbackQuery, callback_data: BroadcastCb, session: AsyncSession,
        script: Script, clock: Clock, bot: Bot,
    ) -> None:  # fmt: skip
        lang = script.language
        draft = await session.get(Broadcast, callback_data.b) if _fits(callback_data.b) else None
        if draft is None or draft.admin_id != query.from_user.id or query.data is None:
            await answer_callback(query, t("broadcast.button.unknown", lang=lang))
            return
        if draft.status != "draft":
            launched = draft.launched_at is not None
            key = N_("broadcast.button.launched") if launched else N_("broadcast.button.closed")
            await answer_callback(query, t(key, lang=lang, id=draft.id))
            return
        act = callback_data.act
        if act == "cancel":
            await broadcasts.cancel(session, draft)
            await session.commit()
            await answer_callback(query)
            await bot.send_message(query.from_user.id, t("broadcast.cancelled", lang=lang,
                                                         id=draft.id))  # fmt: skip
            return
        if callback_data.r != draft.revision or act not in ACTS.get(draft.step, set()):
            await answer_callback(query, t("broadcast.button.stale", lang=lang))
            return
        await answer_callback(query)
        chat_id = query.from_user.id
        name = query.from_user.first_name
        if act == "skip":
            draft.buttons = []
            broadcasts.go_to(draft, "split")
        elif act == "nosplit":
            draft.text_b = None
            broadcasts.go_to(draft, "time")
        elif act == "now":
            draft.send_at = None
            broadcasts.go_to(draft, "confirm")
            await _confirm(bot, chat_id, session, draft, script, clock, config, name)
            return
        elif act == "test":
            await _confirm(bot, chat_id, session, draft, script, clock, config, name)
            return
        elif act == "send":
            await _launch(bot, chat_id, session, draft, script, clock)
            return
        await session.commit()
        await bot.send_message(chat_id, views.prompt(draft.step, lang),
                               reply_markup=views.step_keyboard(draft, lang))  # fmt: skip

    async def _launch(
        bot: Bot, chat_id: int, session: AsyncSession, draft: Broadcast, script: Script,
        clock: Clock,
    ) -> None:  # fmt: skip
        lang = script.language
        try:
            count, _ = await _count(session, draft, script, clock)
        except InputError:
            # The script changed under the draft (a stage or question gone).
            broadcasts.go_to(draft, "segment")
            await session.commit()
            await bot.send_message(chat_id, t("broadcast.segment_gone", lang=lang))
            return
        if count == 0:
            broadcasts.go_to(draft, "segment")
            await session.commit()
            empty = t("broadcast.segment_empty", lang=lang)
            await bot.send_message(chat_id, fit_to_telegram(empty, views.prompt("segment", lang)))
            return
        await broadcasts.launch(session, draft, clock.now(), count)
        await session.commit()
        at = views.when(draft.send_at, config.zone)
        await bot.send_message(chat_id, t("broadcast.launched", lang=lang, id=draft.id, n=count,
                                          at=at))  # fmt: skip

    async def _cancel_command(
        message: Message, session: AsyncSession, args: list[str], admin_id: int, lang: str
    ) -> None:
        if not args:
            draft = await broadcasts.draft_of(session, admin_id)
            if draft is None:
                await message.answer(t("broadcast.no_draft", lang=lang))
                return
            await broadcasts.cancel(session, draft)
            await session.commit()
            await message.answer(t("broadcast.cancelled", lang=lang, id=draft.id))
            return
        broadcast = await _named(message, session, args[0], lang)
        if broadcast is None:
            return
        if broadcast.status == "cancelled":
            await message.answer(t("broadcast.already_cancelled", lang=lang, id=broadcast.id))
            return
        stopped = await broadcasts.cancel(session, broadcast)
        await session.commit()
        await message.answer(t("broadcast.stopped", lang=lang, id=broadcast.id, n=stopped))

    async def _named(
        message: Message, session: AsyncSession, reference: str, lang: str
    ) -> Broadcast | None:
        try:
            number = inputs.parse_id(reference.lstrip("#"), maximum=2**31 - 1, what="id")
        except ValueError:
            number = None
        broadcast = await session.get(Broadcast, number) if number is not None else None
        # Drafts are their admin's own business: /broadcast resumes or cancels one.
        if broadcast is None or broadcast.status == "draft":
            quoted = escape(inputs.quote(reference, 20))
            await message.answer(t("broadcast.not_found", lang=lang, ref=quoted))
            return None
        return broadcast

    async def _status(
        message: Message, session: AsyncSession, script: Script, clock: Clock,
        args: list[str], lang: str,
    ) -> None:  # fmt: skip
        if args:
            broadcast = await _named(message, session, args[0], lang)
        else:
            recent = await broadcasts.recent_broadcasts(session, limit=1)
            broadcast = recent[0] if recent else None
            if broadcast is None:
                await message.answer(t("broadcast.list.empty", lang=lang))
                return
        if broadcast is None:
            return
        report = await broadcasts.broadcast_report(session, broadcast, script, clock.now())
        await message.answer(views.report_html(report, config.zone, lang))

    @r.callback_query(StaleCb.filter(F.of == BroadcastCb.__prefix__), is_admin)
    async def on_stale_flow_button(query: CallbackQuery, script: Script) -> None:
        # Forged, or signed for another chat, or from before buttons were signed.
        await answer_callback(query, t("broadcast.button.stale", lang=script.language))

    @r.callback_query(
        StaleCb.filter(F.of == BroadcastReplyCb.__prefix__),
        F.message.chat.type == ChatType.PRIVATE,
    )
    async def on_stale_quick_reply(query: CallbackQuery) -> None:
        # As a tap on a broadcast the lead never received: not counted, nothing said.
        await answer_callback(query)

    @r.callback_query(BroadcastReplyCb.filter(), F.message.chat.type == ChatType.PRIVATE)
    async def on_quick_reply(
        query: CallbackQuery, callback_data: BroadcastReplyCb, session: AsyncSession,
        script: Script, clock: Clock,
    ) -> None:  # fmt: skip
        lead = await store.lead_by_user(session, query.from_user.id)
        if lead is None or lead.deleted_at is not None or not _fits(callback_data.b):
            await answer_callback(query)
            return
        recorded = await broadcasts.record_quick_reply(
            session, callback_data.b, lead.id, clock.now()
        )
        await session.commit()
        if not recorded:
            await answer_callback(query)
            return
        await answer_callback(query, t("broadcast.reply.thanks", lang=script.language))

    return r
