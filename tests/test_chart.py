"""The funnel chart: a PNG of a phone-friendly size, rendered without a display."""

from __future__ import annotations

import struct
import warnings

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.i18n import LANGUAGES
from handlers.views.chart import render_funnel_png
from tests.test_analytics import build_report, classic, make_script

PNG = b"\x89PNG\r\n\x1a\n"


def size(png: bytes) -> tuple[int, int]:
    width, height = struct.unpack(">II", png[16:24])
    return width, height


async def test_chart_is_a_png(sessions: async_sessionmaker[AsyncSession]) -> None:
    report = await build_report(sessions, make_script(), classic())
    with warnings.catch_warnings():
        # A missing glyph (Cyrillic in a font without it) is a warning: make it fail.
        warnings.simplefilter("error")
        png = render_funnel_png(report, title="Воронка: январь", lang="ru")
    assert png.startswith(PNG)
    width, height = size(png)
    assert width == 1080 and 400 <= height <= 2000
    assert 10_000 < len(png) < 1_000_000


async def test_chart_of_an_empty_report(sessions: async_sessionmaker[AsyncSession]) -> None:
    from tests.test_analytics import Builder

    report = await build_report(sessions, make_script(), Builder())
    for lang in LANGUAGES:
        assert render_funnel_png(report, lang=lang).startswith(PNG)
