"""One lead's card for the admin (/lead <id>) as Telegram HTML: every value from the lead is
escaped, and what people typed themselves is shown without invisible characters."""

from __future__ import annotations

from datetime import datetime
from html import escape

from funnel.core.telegram_text import fit_to_telegram, plain_name
from funnel.reports.lead_card import LeadCard
from handlers.i18n import N_, t, tn
from handlers.views.numbers import format_money

__all__ = ["format_lead_card_html"]

# Long histories are cut to their most recent entries so the card stays one message.
MAX_ROWS = 15


def _when(moment: datetime | None) -> str:
    return moment.strftime("%d.%m.%Y %H:%M") if moment else "—"


def _cut(value: str, width: int) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def _recent(lines: list[str], lang: str) -> list[str]:
    if len(lines) <= MAX_ROWS:
        return lines
    return [tn("lead.earlier", len(lines) - MAX_ROWS, lang=lang), *lines[-MAX_ROWS:]]


TEMPERATURES = {
    "hot": N_("lead.temperature.hot"),
    "warm": N_("lead.temperature.warm"),
    "cold": N_("lead.temperature.cold"),
}


def _temperature(temperature: str | None, lang: str) -> str:
    key = TEMPERATURES.get(temperature or "")
    return t(key, lang=lang) if key is not None else "—"


def format_lead_card_html(card: LeadCard, *, lang: str) -> str:
    """The card as Telegram HTML in `lang` (times in UTC); every value from the lead is
    escaped, and what people typed themselves is shown without invisible characters."""
    name = plain_name(card.name, 128) or t("lead.no_name", lang=lang)
    who = t("lead.forgotten", lang=lang) if card.forgotten else escape(name)
    username = plain_name(card.username, 64)
    if username and not card.forgotten:
        who += f" (@{escape(username)})"
    lines = [
        t("lead.title", lang=lang, lead=card.id, who=who),
        t(
            "lead.stage",
            lang=lang,
            stage=escape(card.stage_title),
            temperature=_temperature(card.temperature, lang),
            score=card.score,
        ),
        t(
            "lead.source",
            lang=lang,
            source=escape(card.source),
            created=_when(card.created_at),
        ),
    ]
    if card.user_id is not None:
        write = t("lead.write", lang=lang)
        lines.append(f'<a href="tg://user?id={card.user_id}">{write}</a>')
    if card.opted_out_at:
        lines.append(t("lead.opted_out", lang=lang, when=_when(card.opted_out_at)))
    if card.blocked_at:
        lines.append(t("lead.blocked", lang=lang, when=_when(card.blocked_at)))
    sections = ["\n".join(lines)]
    if card.answers:
        rows = [t("lead.answers", lang=lang)]
        rows += [
            f"• {escape(a.question)}: {escape(plain_name(a.answer, 200))} — {a.score:+d}"
            for a in card.answers
        ]
        rows.append(t("lead.answers_total", lang=lang, total=sum(a.score for a in card.answers)))
        sections.append("\n".join(rows))
    if card.history:
        rows = [
            f"{_when(h.at)} {escape(h.from_title or '∅')} → {escape(h.to_title)}"
            f" <i>{escape(_cut(h.cause, 40))}</i>"
            for h in card.history
        ]
        sections.append("\n".join([t("lead.stages", lang=lang), *_recent(rows, lang)]))
    if card.touches:
        rows = [
            f"{escape(x.campaign)} #{x.step}: {escape(x.status)} {_when(x.sent_at)}"
            for x in card.touches
        ]
        sections.append("\n".join([t("lead.touches", lang=lang), *_recent(rows, lang)]))
    if card.purchases:
        rows = [
            f"{_when(p.at)}: {escape(format_money(p.amount, p.currency, lang=lang, cents=True))}"
            + (" " + t("lead.purchase_refunded", lang=lang) if p.refunded else "")
            for p in card.purchases
        ]
        sections.append("\n".join([t("lead.purchases", lang=lang), *_recent(rows, lang)]))
    return fit_to_telegram(*sections)
