"""The leads' CSV in the school's language: the header and the worded cells the domain's
export writes (funnel/reports/export.py holds no words of its own)."""

from __future__ import annotations

from funnel.reports.export import CsvLabels
from handlers.i18n import t

__all__ = ["csv_labels"]


def csv_labels(lang: str) -> CsvLabels:
    return CsvLabels(
        created=t("export.created", lang=lang),
        stage=t("export.stage", lang=lang),
        source=t("export.source", lang=lang),
        temperature=t("export.temperature", lang=lang),
        score=t("export.score", lang=lang),
        revenue=t("export.revenue", lang=lang),
        stage_changed=t("export.stage_changed", lang=lang),
        opted_out=t("export.opted_out", lang=lang),
        blocked=t("export.blocked", lang=lang),
        forgotten=t("export.forgotten", lang=lang),
        yes=t("export.yes", lang=lang),
        temperatures={
            "hot": t("export.temperature.hot", lang=lang),
            "warm": t("export.temperature.warm", lang=lang),
            "cold": t("export.temperature.cold", lang=lang),
        },
    )
