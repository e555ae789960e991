"""The owner's morning digest as Telegram HTML, in the school's language."""

from __future__ import annotations

from html import escape

from funnel.reports.digest import Digest
from handlers.i18n import t
from handlers.views.numbers import format_money, format_number, format_percent


def format_digest_html(digest: Digest, *, lang: str) -> str:
    lines = [
        t("digest.title", lang=lang, day=digest.day),
        t("digest.leads", lang=lang, leads=format_number(digest.leads, lang=lang)),
    ]
    if digest.leads:
        for title, reached, share in digest.stages[1:]:
            reached_n = format_number(reached, lang=lang)
            lines.append(f"• {escape(title)}: {reached_n} ({format_percent(share, lang=lang)})")
    money = ", ".join(format_money(v, c, lang=lang) for c, v in digest.revenue.items())
    purchases = format_number(digest.purchases, lang=lang)
    revenue = escape(money or format_number(0, lang=lang))
    lines.append(t("digest.money", lang=lang, purchases=purchases, revenue=revenue))
    if digest.leakiest is not None:
        title, dropped, kept = digest.leakiest
        lines.append(
            t(
                "digest.leakiest",
                lang=lang,
                title=escape(title),
                dropped=format_number(dropped, lang=lang),
                kept=format_percent(kept, lang=lang),
            )
        )
    return "\n".join(lines)
