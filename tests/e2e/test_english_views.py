"""An English school (`language: en` in its script) gets the bot's reports, cards, the CSV's
header and the digest in English: the real bot through the emulator with scripts/en.yaml.
The Russian side of the same views is held by the other e2e tests."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from funnel.core.clock import FakeClock
from funnel.reports.digest import daily_digest
from handlers.i18n import t
from handlers.views.digest import format_digest_html
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
    await english.admin.send("/export")
    document = await english.admin.next_message()
    assert document.document is not None and document.document.data is not None
    rows = list(csv.reader(io.StringIO(document.document.data.decode("utf-8-sig")), delimiter=";"))
    header, first = rows
    assert header[:6] == ["id", "Created (UTC)", "Stage", "Source", "Temperature", "Score"]
    assert header[-5:] == ["Revenue", "Stage changed (UTC)", "Opted out", "Blocked the bot",
                           "Data deleted"]  # fmt: skip
    row = dict(zip(header, first, strict=True))
    assert row["Temperature"] == "hot" and row["1. need"] == "To change careers"
    no_cyrillic(document.document.data.decode("utf-8-sig"))


async def test_the_managers_card_is_in_english(english: World) -> None:
    await qualify(english, HOT_EN, "Anna", username="anna_k")
    card = (await english.managers.next_message()).plain_text
    assert card.startswith("🔥 Lead #1: Anna")
    assert "Chat: message them @anna_k" in card and "Source: vk_ads" in card
    assert "Score: " in card and "To change careers" in card
    no_cyrillic(card)


async def test_the_digest_is_in_english(english: World, clock: FakeClock) -> None:
    await qualify(english, HOT_EN[:2], "Anna")
    clock.advance(timedelta(days=1))
    async with english.sessions() as session:
        digest = await daily_digest(
            session, english.app.scripts.current, clock.now(), english.app.settings.zone
        )
    text = format_digest_html(digest, lang="en")
    assert text.startswith("☀️ <b>Summary for ") and "New leads: <b>1</b>" in text
    assert "• Answered the first question: 1 (100%)" in text and "Payments: 0" in text
    no_cyrillic(text)
    russian = format_digest_html(digest, lang="ru")
    assert t("digest.leads", lang="ru", leads=1) in russian and "Новых лидов" in russian
    # And as the bot sends it, in the school's language.
    await english.app.send_digest()
    sent = (await english.admin.next_message()).plain_text
    assert "New leads: 1" in sent
    no_cyrillic(sent)
