"""The owner's morning digest as Telegram HTML, in the school's language."""

from __future__ import annotations

from html import escape

from funnel.reports.digest import Digest
from handlers.i18n import t
from handlers.views.numbers import format_money, format_percent


def format_digest_html(digest: Digest, *, lang: str) -> str:
    lines = [
        t("digest.title", lang=lang, day=digest.day),
        t("digest.leads", lang=lang, leads=digest.leads),
    ]
    if digest.leads:
        for title, reached, share in digest.stages[1:]:
            lines.append(f"• {escape(title)}: {reached} ({format_percent(share)})")
    money = ", ".join(format_money(v, c) for c, v in digest.revenue.items()) or "0"
    lines.append(t("digest.money", lang=lang, purchases=digest.purchases, revenue=escape(money)))
    if digest.leakiest is not None:
        title, dropped, kept = digest.leakiest
        lines.append(
            t(
                "digest.leakiest",
                lang=lang,
                title=escape(title),
                dropped=dropped,
                kept=format_percent(kept),
            )
        )
    return "\n".join(lines)
