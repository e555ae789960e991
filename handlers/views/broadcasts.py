"""Broadcasts as the admin reads them, in the school's language: the segment's preview, each
step's prompt and buttons, the confirmation, progress and the report per A/B arm; and the
keyboard a broadcast goes out with. Every admin-typed value shown back is escaped."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from funnel.broadcasts.broadcasts import ArmReport, BroadcastReport, Progress
from funnel.core.errors import InputError
from funnel.core.models import Broadcast, Lead
from funnel.core.telegram_text import TELEGRAM_LIMIT, fit_to_telegram, lines_that_fit
from funnel.script.schema import Script
from handlers.callbacks import BroadcastCb, BroadcastReplyCb
from handlers.i18n import N_, t
from handlers.views.numbers import format_number, format_percent

# The domain's refusals of what an admin typed, as keys of the catalog.
ERRORS = {
    "segment.too_long": N_("segment.error.too_long"),
    "segment.empty": N_("segment.error.empty"),
    "segment.empty_value": N_("segment.error.empty_value"),
    "segment.too_many_values": N_("segment.error.too_many_values"),
    "segment.bad_value": N_("segment.error.bad_value"),
    "segment.bad_duration": N_("segment.error.bad_duration"),
    "segment.too_long_ago": N_("segment.error.too_long_ago"),
    "segment.bad_activity": N_("segment.error.bad_activity"),
    "segment.repeated": N_("segment.error.repeated"),
    "segment.unknown_word": N_("segment.error.unknown_word"),
    "segment.unknown_key": N_("segment.error.unknown_key"),
    "segment.bad_question": N_("segment.error.bad_question"),
    "segment.free_question": N_("segment.error.free_question"),
    "segment.bad_source": N_("segment.error.bad_source"),
    "segment.bad_version": N_("segment.error.bad_version"),
    "segment.all_with_others": N_("segment.error.all_with_others"),
    "segment.contradiction": N_("segment.error.contradiction"),
    "broadcast.text_empty": N_("broadcast.error.text_empty"),
    "broadcast.text_placeholder": N_("broadcast.error.text_placeholder"),
    "broadcast.text_html": N_("broadcast.error.text_html"),
    "broadcast.text_too_long": N_("broadcast.error.text_too_long"),
    "broadcast.buttons_empty": N_("broadcast.error.buttons_empty"),
    "broadcast.too_many_buttons": N_("broadcast.error.too_many_buttons"),
    "broadcast.button_format": N_("broadcast.error.button_format"),
    "broadcast.button_label": N_("broadcast.error.button_label"),
    "broadcast.two_reply_buttons": N_("broadcast.error.two_reply_buttons"),
    "broadcast.button_url": N_("broadcast.error.button_url"),
    "broadcast.time_format": N_("broadcast.error.time_format"),
    "broadcast.time_past": N_("broadcast.error.time_past"),
    "broadcast.time_too_far": N_("broadcast.error.time_too_far"),
}

STATES = {
    "draft": N_("broadcast.state.draft"),
    "scheduled": N_("broadcast.state.scheduled"),
    "launching": N_("broadcast.state.launching"),
    "running": N_("broadcast.state.running"),
    "finished": N_("broadcast.state.finished"),
    "cancelled": N_("broadcast.state.cancelled"),
}

PROMPTS = {
    "segment": N_("broadcast.prompt.segment"),
    "text": N_("broadcast.prompt.text"),
    "buttons": N_("broadcast.prompt.buttons"),
    "split": N_("broadcast.prompt.split"),
    "time": N_("broadcast.prompt.time"),
}

SAMPLE = 10


def explain(error: ValueError, lang: str) -> str:
    """What was wrong with the admin's input, as HTML (values quoted from it are escaped)."""
    if isinstance(error, InputError) and error.code in ERRORS:
        fields: dict[str, Any] = {k: escape(str(v)) for k, v in error.fields.items()}
        return t(ERRORS[error.code], lang=lang, **fields)
    return escape(t("error.unknown", lang=lang))


def refusal(error: ValueError, step: str, lang: str) -> str:
    """The refusal and the step's prompt again, so the admin sees how to write it."""
    prompt = t(PROMPTS[step], lang=lang) if step in PROMPTS else ""
    return fit_to_telegram(f"⚠️ {explain(error, lang)}", prompt)


def when(moment: datetime | None, zone: ZoneInfo) -> str:
    return "—" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def segment_preview(segment: str, count: int, sample: Sequence[Lead], script: Script) -> str:
    lang = script.language
    lines = [
        t("segment.preview.title", lang=lang, segment=escape(segment)),
        t("segment.preview.count", lang=lang, n=format_number(count)),
    ]
    if sample:
        lines.append(t("segment.preview.sample", lang=lang))
        for lead in sample:
            stage = escape(script.titles.get(lead.stage, lead.stage))
            lines.append(
                t("segment.preview.lead", lang=lang, lead=lead.id, stage=stage,
                  source=escape(lead.source))
            )  # fmt: skip
    return fit_to_telegram("\n".join(lines))


def prompt(step: str, lang: str) -> str:
    """The step's question; read without fields, so its {placeholders} show as written."""
    return t(PROMPTS[step], lang=lang)


def _button(broadcast: Broadcast, act: str, key: str, lang: str) -> InlineKeyboardButton:
    data = BroadcastCb(b=broadcast.id, r=broadcast.revision, act=act).pack()
    return InlineKeyboardButton(text=t(key, lang=lang), callback_data=data)


def step_keyboard(broadcast: Broadcast, lang: str) -> InlineKeyboardMarkup:
    """The buttons of the draft's current step (each carries the draft's revision)."""
    rows: list[list[InlineKeyboardButton]] = []
    if broadcast.step == "buttons":
        rows.append([_button(broadcast, "skip", N_("broadcast.button.no_buttons"), lang)])
    elif broadcast.step == "split":
        rows.append([_button(broadcast, "nosplit", N_("broadcast.button.no_split"), lang)])
    elif broadcast.step == "time":
        rows.append([_button(broadcast, "now", N_("broadcast.button.now"), lang)])
    elif broadcast.step == "confirm":
        rows.append([_button(broadcast, "send", N_("broadcast.button.send"), lang)])
        rows.append([_button(broadcast, "test", N_("broadcast.button.test_again"), lang)])
    rows.append([_button(broadcast, "cancel", N_("broadcast.button.cancel"), lang)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def confirmation(
    broadcast: Broadcast, count: int, arms: dict[str, int], zone: ZoneInfo, lang: str
) -> str:
    lines = [
        t("broadcast.confirm.title", lang=lang, id=broadcast.id),
        t("broadcast.confirm.segment", lang=lang, segment=escape(broadcast.segment or "")),
        t("broadcast.confirm.count", lang=lang, n=format_number(count)),
    ]
    if broadcast.text_b is not None:
        lines.append(
            t("broadcast.confirm.split", lang=lang, a=format_number(arms.get("a", 0)),
              b=format_number(arms.get("b", 0)))
        )  # fmt: skip
    moment = when(broadcast.send_at, zone) if broadcast.send_at else t("broadcast.now", lang=lang)
    lines.append(t("broadcast.confirm.at", lang=lang, at=moment, zone=escape(zone.key)))
    lines.append(t("broadcast.confirm.buttons", lang=lang, n=len(broadcast.buttons)))
    lines.append(t("broadcast.confirm.question", lang=lang))
    return "\n".join(lines)


def _progress_line(progress: Progress, lang: str) -> str:
    line = t(
        "broadcast.progress",
        lang=lang,
        planned=format_number(progress.planned),
        sent=format_number(progress.sent),
        blocked=format_number(progress.blocked),
        skipped=format_number(progress.skipped),
        failed=format_number(progress.failed),
    )
    if progress.unknown:
        line += " " + t("broadcast.progress.unknown", lang=lang, n=format_number(progress.unknown))
    return line


def _share(part: int, whole: int) -> str:
    return format_percent(100 * part / whole) if whole else "—"


def _arm_line(arm: ArmReport, split: bool, lang: str) -> str:
    name = t("broadcast.report.arm", lang=lang, arm=arm.arm.upper()) if split else ""
    return name + t(
        "broadcast.report.line",
        lang=lang,
        recipients=format_number(arm.recipients),
        delivered=format_number(arm.delivered),
        blocked=format_number(arm.blocked),
        replied=format_number(arm.replied),
        replied_share=_share(arm.replied, arm.delivered),
        converted=format_number(arm.converted),
        converted_share=_share(arm.converted, arm.delivered),
    )


def report_html(report: BroadcastReport, zone: ZoneInfo, lang: str) -> str:
    broadcast = report.broadcast
    split = broadcast.text_b is not None
    lines = [
        t("broadcast.report.title", lang=lang, id=broadcast.id,
          state=t(STATES.get(report.state, "broadcast.state.draft"), lang=lang)),
        t("broadcast.confirm.segment", lang=lang, segment=escape(broadcast.segment or "")),
        t("broadcast.report.when", lang=lang, at=when(broadcast.send_at, zone),
          expected=format_number(broadcast.expected or 0),
          written=format_number(broadcast.recipients)),
        _progress_line(report.progress, lang),
        t("broadcast.report.window", lang=lang, days=report.window.days),
    ]  # fmt: skip
    lines.extend(_arm_line(arm, split, lang) for arm in report.arms)
    return fit_to_telegram("\n".join(lines))


def list_html(items: Sequence[tuple[Broadcast, str, Progress]], zone: ZoneInfo, lang: str) -> str:
    if not items:
        return t("broadcast.list.empty", lang=lang)
    lines = [
        t(
            "broadcast.list.line",
            lang=lang,
            id=broadcast.id,
            state=t(STATES.get(state, "broadcast.state.draft"), lang=lang),
            at=when(broadcast.send_at, zone),
            segment=escape(_short(broadcast.segment or "", 60)),
        )
        + "\n"
        + _progress_line(progress, lang)
        for broadcast, state, progress in items
    ]
    kept = lines_that_fit(
        lines, TELEGRAM_LIMIT - 300, lambda n: t("broadcast.list.more", lang=lang, n=n)
    )
    return "\n\n".join(
        [t("broadcast.list.title", lang=lang), *kept, t("broadcast.list.hint", lang=lang)]
    )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def broadcast_keyboard(
    broadcast_id: int, buttons: Sequence[dict[str, Any]]
) -> InlineKeyboardMarkup | None:
    """The buttons a broadcast goes out with: links, and its quick reply button."""
    rows: list[list[InlineKeyboardButton]] = []
    for button in buttons:
        label = str(button.get("label", ""))[:64]
        if not label:
            continue
        if button.get("reply"):
            data = BroadcastReplyCb(b=broadcast_id).pack()
            rows.append([InlineKeyboardButton(text=label, callback_data=data)])
        elif button.get("url"):
            rows.append([InlineKeyboardButton(text=label, url=str(button["url"]))])
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
