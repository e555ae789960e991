"""An English school (`language: en` in its script) gets the bot's reports, cards, the CSV's
header and the digest in English: the real bot through the emulator with scripts/en.yaml.
The Russian side of the same views is held by the other e2e tests."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from funnel.core.clock import FakeClock
from tests.e2e.conftest import World, qualify, running_world

EN_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "en.yaml"
# The English script's buttons for a hot prospect.
HOT_EN = ["To change careers", "Within the next 2 weeks", "I'm ready to pay in full", "I do"]
CYRILLIC = re.compile("[\u0400-\u04ff]")


def no_cyrillic(text: str) -> None:
    assert CYRILLIC.search(text) is None, text


@pytest.fixture
async def english(emu: object, tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    async with running_world(emu, tmp_path, clock, script_path=EN_SCRIPT) as running:  # type: ignore[arg-type]
        assert running.app.scripts.current.language == "en"
        yield running


async def ask(world: World, command: str) -> str:
    await world.admin.send(command)
    return (await world.admin.next_message()).plain_text


async def test_reports_and_the_lead_card_are_in_english(english: World) -> None:
    await qualify(english, HOT_EN, "Anna", username="anna")
    stats = await ask(english, "/stats")
    assert "📊 Funnel report:" in stats and "Leads: 1 · paid: 0" in stats
    assert "Completed qualification" in stats and "Stage" in stats and "Revenue" in stats
    no_cyrillic(stats)
    sources = await ask(english, "/sources")
    assert "📣 Sources:" in sources and "vk_ads\n1 lead · qualified 1 · paid 0 (0%)" in sources
    no_cyrillic(sources)
    card = await ask(english, "/lead 1")
    assert "Lead #1 · Anna (@anna)" in card and "Stage: " in card and "Source: vk_ads" in card
    assert "To change careers" in card and "Answers (score per answer):" in card
    assert "Total: " in card and "Message on Telegram" in card
    no_cyrillic(card)
    campaigns = await ask(english, "/campaigns")
    assert campaigns.startswith("Campaigns as of ")
    no_cyrillic(campaigns)


async def test_the_export_header_is_in_english(english: World) -> None:
    await qualify(english, HOT_EN, "Anna", username="anna")
    await english.admin.send("/export csv")
    document = await english.admin.next_message()
    assert document.document is not None and document.document.data is not None
    # English spreadsheets separate cells with commas.
    rows = list(csv.reader(io.StringIO(document.document.data.decode("utf-8-sig"))))
    header, first = rows
    assert header[:4] == ["Lead #", "Name", "Username", "Telegram link"]
    assert "Revenue" in header and "Data deleted" in header
    row = dict(zip(header, first, strict=True))
    assert row["Temperature"] == "hot" and row["Username"] == "anna"
    assert row["Telegram link"] == "https://t.me/anna"
    # The answer sits under the question's title, not under "1. need".
    assert first[8] == "To change careers" and not header[8].startswith("1.")
    no_cyrillic(document.document.data.decode("utf-8-sig"))


async def test_a_huge_segment_number_is_refused_in_english(english: World) -> None:
    refusal = await ask(english, "/segment silent>99999999d")
    assert "“silent>99999999d”: at most 3650d" in refusal
    no_cyrillic(refusal)
