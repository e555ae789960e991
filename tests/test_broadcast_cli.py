"""`python -m bot broadcast`: a dry run counts and samples without saving; a real one
schedules the broadcast the running bot delivers; bad options are refused in words."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from bot import db
from funnel.core.models import Broadcast
from funnel.script.schema import Script
from tests.conftest import POSTGRES_URL
from tests.test_cli import bot_cli, database  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(bool(POSTGRES_URL), reason="runs the CLI on a SQLite file")


async def broadcasts_in(url: str) -> list[Broadcast]:
    engine = db.create_engine(url)
    try:
        async with db.sessionmaker(engine)() as session:
            return list((await session.scalars(select(Broadcast))).all())
    finally:
        await engine.dispose()


async def test_a_dry_run_counts_and_saves_nothing(
    database: str,  # noqa: F811
    tmp_path: Path,
    script: Script,
) -> None:
    text = tmp_path / "news.html"
    text.write_text("<b>Новый поток</b> в понедельник", encoding="utf-8")
    result = bot_cli(database, "broadcast", "--segment", "source=vk", "--text-file", str(text),
                     "--dry-run")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 leads would receive it" in result.stdout
    assert "Лид" not in result.stdout  # numbers, never names
    assert await broadcasts_in(database) == []


async def test_a_broadcast_is_scheduled(database: str, tmp_path: Path) -> None:  # noqa: F811
    text = tmp_path / "news.html"
    text.write_text("Привет, {first_name}!", encoding="utf-8")
    result = bot_cli(database, "broadcast", "--segment", "stage=new,engaged,qualified",
                     "--text-file", str(text), "--at", "2099-01-01 10:00")  # fmt: skip
    assert result.returncode == 2 and "--at" in result.stderr  # more than a year ahead
    result = bot_cli(database, "broadcast", "--segment", "all", "--text-file", str(text))
    assert result.returncode == 0, result.stderr
    [scheduled] = await broadcasts_in(database)
    assert scheduled.status == "scheduled" and scheduled.expected == 4
    assert f"broadcast #{scheduled.id}: 4 leads" in result.stdout


def test_bad_options_are_refused_in_words(database: str, tmp_path: Path) -> None:  # noqa: F811
    text = tmp_path / "bad.html"
    text.write_text("<b>не закрыт", encoding="utf-8")
    result = bot_cli(database, "broadcast", "--segment", "colour=red", "--text-file", str(text),
                     "--at", "завтра")  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("--segment:") and "colour=red" in lines[0]
    assert lines[1].startswith("--text-file:") and "never closed" in lines[1]
    assert lines[2].startswith("--at:")
    missing = bot_cli(database, "broadcast", "--segment", "all", "--text-file",
                      str(tmp_path / "missing.html"))  # fmt: skip
    assert missing.returncode == 2 and "cannot read" in missing.stderr
