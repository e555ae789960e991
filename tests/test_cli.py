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
from funnel.core.clock import FakeClock
from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue
from funnel.script.schema import Script
from tests import engines
from tests.conftest import ROOT

HOT = [("need", "career"), ("timing", "now"), ("budget", "full"), ("authority", "self")]


@pytest.fixture
async def database(tmp_path: Path, script: Script) -> str:
    """Four prospects an hour ago: two from vk (one answered everything), two direct."""
    url = engines.database_url(tmp_path, "cli.sqlite3")
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
    run = bot_cli(database, "export", "--out", str(target))
    assert run.returncode == 0, run.stderr
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf"), "a BOM, so Excel reads UTF-8 Cyrillic"
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))
    assert len(rows) == 5 and rows[0][0] == "Лид №"
    column = {name: index for index, name in enumerate(rows[0])}
    assert {row[column["Источник"]] for row in rows[1:]} == {"vk", "direct"}
    assert script.titles["qualified"] in {row[column["Этап"]] for row in rows[1:]}  # Cyrillic


def test_export_writes_a_workbook_by_default(database: str, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    run = bot_cli(database, "export", "--out", str(tmp_path / "numbers.xlsx"))
    assert run.returncode == 0, run.stderr
    book = load_workbook(tmp_path / "numbers.xlsx")
    assert len(book.sheetnames) == 5 and book.worksheets[0].max_row == 5
    assert isinstance(book.worksheets[0].cell(row=2, column=1).value, int)
    run = bot_cli(database, "export", "--format", "csv", "--out", str(tmp_path / "x.data"))
    assert run.returncode == 0 and (tmp_path / "x.data").read_bytes().startswith(b"\xef\xbb\xbf")
    refused = bot_cli(database, "export", "--format", "pdf")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_rebuild_rollups_keeps_the_report(database: str) -> None:
    before = json.loads(bot_cli(database, "stats", "--json").stdout)
    run = bot_cli(database, "rebuild-rollups")
    assert run.returncode == 0 and "rebuilt" in run.stdout
    after = json.loads(bot_cli(database, "stats", "--json").stdout)
    assert {**after, "generated_at": None} == {**before, "generated_at": None}


def check_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot check` with the roles set, unless `env` unsets some."""
    roles = {"BOT_TOKEN": "123456:ABCDEF", "ADMIN_IDS": "5", "MANAGER_CHAT_ID": "-100123",
             "PAYMENT_PROVIDER_TOKEN": "381764678:TEST:100500"}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "bot", "check", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=120, env={**os.environ, **roles, **env},
    )  # fmt: skip


def test_check_refuses_hostile_scripts_with_file_and_line(tmp_path: Path) -> None:
    ru = (ROOT / "scripts" / "ru.yaml").read_bytes()
    hostile = {
        "huge.yaml": (b"#\n" * (3 * 1024 * 1024), "huge.yaml: the script is 6,291,456 bytes"),
        "deep.yaml": (b"format: 1\nid: " + b"{a: " * 50_000, "deep.yaml:2: nested deeper"),
        "bomb.yaml": (b"a: &a [x, x]\nb: [*a, *a]\n", "bomb.yaml:2: aliases (*name)"),
        "cp1251.yaml": (ru.replace("Вопрос".encode(), "Вопрос".encode("cp1251"), 1), "cp1251"),
        "digits.yaml": (b"format: " + b"9" * 9000 + b"\n", "digits.yaml:1: cannot read"),
    }
    for name, (content, expected) in hostile.items():
        (tmp_path / name).write_bytes(content)
        run = check_cli(str(tmp_path / name))
        assert run.returncode == 1, (name, run.stderr)
        assert "Traceback" not in run.stderr and run.stdout == "", name
        assert expected in run.stderr, (name, run.stderr)
    line = ru[: ru.index("Вопрос".encode())].count(b"\n") + 1
    assert f"cp1251.yaml:{line}: not UTF-8 text" in check_cli(str(tmp_path / "cp1251.yaml")).stderr


def test_check_warns_about_each_unset_role_and_still_passes() -> None:
    quiet = check_cli()
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert quiet.stdout.startswith("ok: settings and ")

    bare = check_cli(BOT_TOKEN="", ADMIN_IDS="", MANAGER_CHAT_ID="")
    assert bare.returncode == 0 and bare.stdout.startswith("ok: ")
    warnings = bare.stderr.splitlines()
    assert [w.split(" ")[:3] for w in warnings] == [
        ["settings:", "WARNING", "ADMIN_IDS"],
        ["settings:", "WARNING", "MANAGER_CHAT_ID"],
        ["settings:", "WARNING", "BOT_TOKEN"],
    ]
    assert "reports" in warnings[0] and "card" in warnings[1] and "run" in warnings[2]

    one = check_cli(MANAGER_CHAT_ID="")
    assert one.returncode == 0 and one.stderr.splitlines() == [warnings[1]]


def test_check_warns_and_still_fails_on_a_bad_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: 1\n", encoding="utf-8")
    run = check_cli(str(bad), ADMIN_IDS="")
    assert run.returncode == 1
    first, *problems = run.stderr.splitlines()
    assert first.startswith("settings: WARNING ADMIN_IDS")
    assert problems and all(p.startswith(f"{bad}:") for p in problems)


def test_stats_with_a_broken_script_names_it(database: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(b"a: " + b"[" * 10_000)
    env = {**os.environ, "DATABASE_URL": database, "SCRIPT_PATH": str(broken)}
    run = subprocess.run(
        [sys.executable, "-m", "bot", "stats"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == f"{broken}:1: nested deeper than 20 levels"
