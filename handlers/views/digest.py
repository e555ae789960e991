"""The owner's morning digest as Telegram HTML."""

from __future__ import annotations

from html import escape

from funnel.reports.digest import Digest
from handlers.views.numbers import format_money, format_percent


def format_digest_html(digest: Digest) -> str:
    lines = [f"☀️ <b>Итоги за {digest.day}</b>", f"Новых лидов: <b>{digest.leads}</b>"]
    if digest.leads:
        for title, reached, share in digest.stages[1:]:
            lines.append(f"• {escape(title)}: {reached} ({format_percent(share)})")
    money = ", ".join(format_money(v, c) for c, v in digest.revenue.items()) or "0"
    lines.append(f"Оплат: {digest.purchases}, выручка: {escape(money)}")
    if digest.leakiest is not None:
        title, dropped, kept = digest.leakiest
        lines.append(
            f"Больше всего теряем перед этапом «{escape(title)}»: −{dropped} за 30 дней "
            f"(доходят {format_percent(kept)})"
        )
    return "\n".join(lines)
