"""The export's words in the school's language: column titles, sheet names, temperatures,
and the CSV dialect that language's spreadsheets read (funnel/reports/export.py holds no
words of its own)."""

from __future__ import annotations

from babel.numbers import get_decimal_symbol

from funnel.reports.export import ExportLabels
from handlers.i18n import N_, t

__all__ = ["export_labels"]

COLUMNS = {
    "lead": N_("export.column.lead"),
    "name": N_("export.column.name"),
    "username": N_("export.column.username"),
    "link": N_("export.column.link"),
    "source": N_("export.source"),
    "stage": N_("export.stage"),
    "temperature": N_("export.temperature"),
    "score": N_("export.score"),
    "purchases": N_("export.column.purchases"),
    "revenue": N_("export.revenue"),
    "other_revenue": N_("export.column.other_revenue"),
    "created": N_("export.column.created"),
    "stage_changed": N_("export.column.stage_changed"),
    "last_inbound": N_("export.column.last_inbound"),
    "opted_out": N_("export.opted_out"),
    "blocked": N_("export.blocked"),
    "forgotten": N_("export.forgotten"),
    "reached": N_("export.column.reached"),
    "from_previous": N_("export.column.from_previous"),
    "from_first": N_("export.column.from_first"),
    "dropped": N_("export.column.dropped"),
    "median_hours": N_("export.column.median_hours"),
    "mean_hours": N_("export.column.mean_hours"),
    "leads": N_("export.column.leads"),
    "qualified": N_("export.column.qualified"),
    "customers": N_("export.column.customers"),
    "conversion": N_("export.column.conversion"),
    "spend": N_("export.column.spend"),
    "cost_per_lead": N_("export.column.cost_per_lead"),
    "cac": N_("export.column.cac"),
    "romi": N_("export.column.romi"),
    "campaign": N_("export.column.campaign"),
    "kind": N_("export.column.kind"),
    "step": N_("export.column.step"),
    "after_hours": N_("export.column.after_hours"),
    "total": N_("export.column.total"),
    "waiting": N_("export.column.waiting"),
    "sent": N_("export.column.sent"),
    "postponed": N_("export.column.postponed"),
    "cancelled": N_("export.column.cancelled"),
    "failed": N_("export.column.failed"),
    "unknown": N_("export.column.unknown"),
    "replied": N_("export.column.replied"),
    "replied_share": N_("export.column.replied_share"),
    "advanced": N_("export.column.advanced"),
    "advanced_share": N_("export.column.advanced_share"),
    "purchase": N_("export.column.purchase"),
    "paid_at": N_("export.column.paid_at"),
    "amount": N_("export.column.amount"),
    "currency": N_("export.column.currency"),
    "refunded_at": N_("export.column.refunded_at"),
}
# Times are the school's wall-clock time: their titles name the zone.
TIMES = (
    "created", "stage_changed", "last_inbound", "opted_out", "blocked", "paid_at", "refunded_at",
)  # fmt: skip

SHEETS = {
    "leads": N_("export.sheet.leads"),
    "stages": N_("export.sheet.stages"),
    "sources": N_("export.sheet.sources"),
    "campaigns": N_("export.sheet.campaigns"),
    "purchases": N_("export.sheet.purchases"),
}


def export_labels(lang: str, zone: str) -> ExportLabels:
    """The labels in `lang`; time columns say they are in `zone` (the school's TIMEZONE)."""
    columns = {key: t(text, lang=lang) for key, text in COLUMNS.items()}
    for key in TIMES:
        columns[key] = f"{columns[key]} ({zone})"
    mark = get_decimal_symbol(lang) if lang in ("ru", "en") else "."
    return ExportLabels(
        columns=columns,
        sheets={key: t(text, lang=lang) for key, text in SHEETS.items()},
        temperatures={
            "hot": t("export.temperature.hot", lang=lang),
            "warm": t("export.temperature.warm", lang=lang),
            "cold": t("export.temperature.cold", lang=lang),
        },
        yes=t("export.yes", lang=lang),
        forgotten=t("export.column.forgotten_name", lang=lang),
        # A language writing decimals with a comma separates cells with a semicolon.
        delimiter=";" if mark == "," else ",",
        decimal_mark=mark,
    )
