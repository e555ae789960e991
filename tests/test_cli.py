"""The owner's command line on a database the dialogue filled: `stats` (text and the stable
JSON), `export`, `rebuild-rollups`, and a readable refusal of a bad period."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import db
from funnel.clock import FakeClock
from funnel.dialogue import Dialogue
from funnel.script import Script
from funnel.store import Profile
from tests.conftest import POSTGRES_URL, ROOT

pytestmark = pytest.mark.skipif(bool(POSTGRES_URL), reason="runs the CLI on a SQLite file")

HOT = [("need", "career"), ("timing", "now"), ("budget", "full"), ("authority", "self")]


@pytest.fixture
async def database(tmp_path: Path, script: Script) -> str:
    """Four prospects an hour ago: two from vk (one answered everything), two direct."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'cli.sqlite3'}"
    engine = db.create_engine(url)
    await db.migrate(engine)
    sessions = db.sessionmaker(engine)
    clock = FakeClock(datetime.now(UTC) - timedelta(hours=1))
    try:
        for n, source in enumerate(["vk", "vk", None, None]):
            user = Profile(user_id=700 + n, chat_id=700 + n, first_name=f"Лид {n}")
            answers = HOT if n == 0 else HOT[:1] if n == 2 else []
            async with sessions() as session:
                await Dialogue(session, script, clock).start(user, source)
                await session.commit()
            for question, option in answers:
                clock.advance(30)
                async with sessions() as session:
                    await Dialogue(session, script, clock).answer(user, question, option_id=option)
                    await session.commit()
    finally:
        await engine.dispose()
    return url


def bot_cli(url: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("BOT_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_stats_json_has_the_stable_shape(database: str) -> None:
    run = bot_cli(database, "stats", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [s["id"] for s in report["stages"]][:3] == ["new", "engaged", "qualified"]
    for stage in report["stages"]:
        assert {"id", "title", "reached", "conversion_from_previous", "conversion_from_first",
                "dropped", "median_seconds_from_previous"} <= set(stage)  # fmt: skip
    new, engaged, qualified = report["stages"][:3]
    assert (new["reached"], engaged["reached"], qualified["reached"]) == (4, 2, 1)
    assert engaged["conversion_from_previous"] == 50.0
    assert qualified["conversion_from_first"] == 25.0
    assert engaged["median_seconds_from_previous"] == 30.0
    assert {s["source"]: s["leads"] for s in report["by_source"]} == {"vk": 2, "direct": 2}
    assert report["totals"]["leads"] == 4
    # The all-time figures come from the rollups; the log says the same.
    logged = json.loads(bot_cli(database, "stats", "--json", "--from-log").stdout)
    assert {**logged, "generated_at": None} == {**report, "generated_at": None}


def test_stats_filters_and_text(database: str) -> None:
    run = bot_cli(database, "stats", "--period", "7d", "--source", "vk", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["totals"]["leads"] == 2 and report["source"] == "vk"
    assert bot_cli(database, "stats", "--period", "30d").returncode == 0
    text = bot_cli(database, "stats").stdout
    assert "vk" in text and "direct" in text


def test_a_bad_period_is_named(database: str) -> None:
    run = bot_cli(database, "stats", "--period", "yesterday-ish")
    assert run.returncode == 2
    assert "--period" in run.stderr and "7d" in run.stderr
    assert "Traceback" not in run.stderr


def test_export_writes_a_csv_excel_opens(database: str, script: Script, tmp_path: Path) -> None:
    target = tmp_path / "leads.csv"
    run = bot_cli(database, "export", "--output", str(target))
    assert run.returncode == 0, run.stderr
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), "a BOM, so Excel reads UTF-8 Cyrillic"
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    assert len(rows) == 5 and rows[0][0] == "id"
    assert {row[3] for row in rows[1:]} == {"vk", "direct"}
    assert script.titles["qualified"] in {row[2] for row in rows[1:]}  # Cyrillic, intact


def test_rebuild_rollups_keeps_the_report(database: str) -> None:
    before = json.loads(bot_cli(database, "stats", "--json").stdout)
    run = bot_cli(database, "rebuild-rollups")
    assert run.returncode == 0 and "rebuilt" in run.stdout
    after = json.loads(bot_cli(database, "stats", "--json").stdout)
    assert {**after, "generated_at": None} == {**before, "generated_at": None}
