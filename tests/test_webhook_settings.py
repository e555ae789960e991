"""Webhook mode's settings are checked at start-up with a line naming each wrong one (and
never repeating a secret); `python -m bot migrate` brings a database to the latest
revision once and changes nothing the second time; on PostgreSQL two at once wait for each
other."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import db
from bot.settings import SettingsError, load_settings, split_address
from tests.conftest import POSTGRES_URL, ROOT


def settings(**values: object) -> object:
    return load_settings(_env_file=None, **values)


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("webhook_url", "ftp://bot.example/tg", "https://"),
        ("webhook_url", "http://bot.example/tg", "plain http:// only"),
        ("webhook_url", "https://", "https://"),
        ("webhook_secret", "has spaces in it", "A-Z"),
        ("webhook_secret", "x" * 257, "1 to 256"),
        ("webhook_secret", "токен", "A-Z"),
        ("webhook_listen", "8080", "host:port"),
        ("webhook_listen", "0.0.0.0:99999", "host:port"),
        ("webhook_listen", "0.0.0.0:http", "host:port"),
        ("metrics_listen", ":9100", "host:port"),
        ("webhook_max_connections", "0", "1"),
        ("webhook_max_connections", "many", "integer"),
        ("webhook_path", "telegram", "start with /"),
        ("webhook_path", "/metrics", "not be /healthz"),
        ("redis_url", "127.0.0.1:6379", "redis://"),
    ],
)
def test_a_wrong_webhook_setting_is_named(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError) as caught:
        settings(**{name: value})
    (line,) = caught.value.lines
    assert line.startswith(f"{name.upper()}: ") and says in line, line
    if name == "webhook_secret":
        assert value not in line, "a secret is never repeated in a message"


def test_good_webhook_settings() -> None:
    good = settings(
        webhook_url="https://bot.school.ru/telegram",
        webhook_secret="A-z_09-" * 10,
        webhook_listen="[::]:8443",
        metrics_listen="",
        redis_url="redis://:pw@127.0.0.1:6379/5",
    )
    assert good.webhook_problems() == []  # type: ignore[attr-defined]
    assert good.metrics_listen is None  # type: ignore[attr-defined]
    assert good.redis == "redis://:pw@127.0.0.1:6379/5"  # type: ignore[attr-defined]
    assert "pw" not in repr(good)
    assert settings(webhook_url="http://127.0.0.1:8080/tg").webhook_url  # type: ignore[attr-defined]
    assert split_address("[::1]:0") == ("::1", 0)
    missing = settings().webhook_problems()  # type: ignore[attr-defined]
    assert [line.split(":")[0] for line in missing] == ["WEBHOOK_URL", "WEBHOOK_SECRET"]


def bot_cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name in ("WEBHOOK_URL", "WEBHOOK_SECRET", "BOT_TOKEN"):
        if name not in env:
            full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, env=full, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_run_webhook_without_its_settings_says_what_is_missing(tmp_path: Path) -> None:
    env = {"BOT_TOKEN": "123456:ABCDEF-token", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/x"}
    done = bot_cli(env, "run", "--webhook", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "WEBHOOK_URL: required with --webhook" in done.stderr
    assert "WEBHOOK_SECRET: required with --webhook" in done.stderr
    assert not (tmp_path / "x").exists(), "nothing was started"


@pytest.mark.skipif(bool(POSTGRES_URL), reason="runs the CLI on a SQLite file")
def test_migrate_once_then_nothing_to_do(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"}
    first = bot_cli(env, "migrate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("schema migrated from empty to "), first.stdout
    again = bot_cli(env, "migrate", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("schema up to date (revision "), again.stdout


@pytest.mark.skipif(not POSTGRES_URL, reason="needs TEST_POSTGRES_URL")
async def test_two_migrations_at_once_on_postgresql_wait_for_each_other() -> None:
    engines = [db.create_engine(POSTGRES_URL) for _ in range(2)]
    try:
        await asyncio.gather(*(db.migrate(engine) for engine in engines))
        revisions = {await db.revision(engine) for engine in engines}
        assert len(revisions) == 1 and None not in revisions
    finally:
        for engine in engines:
            await engine.dispose()
