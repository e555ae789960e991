"""The funnel as a PNG for Telegram: one horizontal bar per stage with counts and percents,
sized for a phone. matplotlib is imported on first use so the bot starts fast; rendering
takes a while, so the admin's handler runs it in a worker thread."""

from __future__ import annotations

import io
import textwrap
import threading
from typing import Any

from funnel.reports.figures import FunnelReport
from handlers.i18n import t
from handlers.views.numbers import format_number, format_percent, plain

__all__ = ["render_funnel_png"]

WIDTH_PX = 1080
DPI = 100
BAR_COLOR = "#2f80ed"
EXIT_COLOR = "#eb5757"
# matplotlib is not thread-safe (its font objects are shared): charts are drawn one by one.
_DRAWING = threading.Lock()


def render_funnel_png(report: FunnelReport, title: str | None = None, *, lang: str) -> bytes:
    """Bars of leads reached per stage (and exits in red), labelled "count · % of first",
    titled in `lang`. Safe to call from several threads: one chart is drawn at a time."""
    with _DRAWING:
        return _render(report, title, lang)


def _render(report: FunnelReport, title: str | None, lang: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)  # never a display, even where one exists
    from matplotlib.figure import Figure

    stages = list(report.stages)
    exits = [e for e in report.exited if e.leads]
    labels = [textwrap.fill(s.title, 22) for s in stages] + [
        textwrap.fill(e.title, 22) for e in exits
    ]
    values = [s.reached for s in stages] + [e.leads for e in exits]
    notes = [
        plain(f"{format_number(s.reached, lang=lang)} · ")
        + format_percent(s.conversion_from_first, lang=lang)
        for s in stages
    ] + [
        plain(f"{format_number(e.leads, lang=lang)} · ") + format_percent(e.share, lang=lang)
        for e in exits
    ]
    colors = [BAR_COLOR] * len(stages) + [EXIT_COLOR] * len(exits)

    rows = max(len(values), 1)
    height_px = 260 + 120 * rows
    # A Figure without pyplot: no global state, nothing left open between renders.
    figure = Figure(figsize=(WIDTH_PX / DPI, height_px / DPI), dpi=DPI)
    axes: Any = figure.add_subplot()
    positions = list(range(rows))
    top = max(values, default=0) or 1
    axes.barh(positions, values or [0], color=colors or [BAR_COLOR], height=0.7)
    axes.set_yticks(positions, labels or [""], fontsize=20, fontfamily="DejaVu Sans")
    axes.invert_yaxis()
    axes.set_xlim(0, top * 1.45)
    axes.set_xticks([])
    for side in ("top", "right", "bottom"):
        axes.spines[side].set_visible(False)
    for y, value, note in zip(positions, values, notes, strict=False):
        axes.text(value + top * 0.02, y, note, va="center", fontsize=20, fontfamily="DejaVu Sans")
    heading = title or t("chart.title", lang=lang, period=report.period.label)
    if report.source is not None:
        heading += f" · {report.source}"
    conversion = report.totals.overall_conversion
    leads = plain(format_number(report.totals.leads, lang=lang))
    subtitle = t("chart.leads", lang=lang, leads=leads)
    subtitle += " · " + t(
        "chart.paid", lang=lang, conversion=format_percent(conversion, lang=lang)
    )
    figure.suptitle(heading, fontsize=26, fontweight="bold", fontfamily="DejaVu Sans")
    axes.set_title(subtitle, fontsize=20, fontfamily="DejaVu Sans", loc="left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
