"""Which database engine and Redis the tests run on.

The suite runs on SQLite by default. With `TEST_POSTGRES_URL` (a scratch database the tests
may wipe: `make test` creates one and drops it after) every test that asks for a database
gets an empty PostgreSQL schema instead, migrated by the code under test (`db.migrate`), so
any migration is covered. With `TEST_REDIS_URL` the tests of the shared limits run against
that Redis, each under its own key prefix; without it they skip.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL") or None
REDIS_URL = os.environ.get("TEST_REDIS_URL") or None

ENGINE = "postgresql" if POSTGRES_URL else "sqlite"

needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None, reason="needs PostgreSQL: set TEST_POSTGRES_URL (make test does)"
)
needs_redis = pytest.mark.skipif(
    REDIS_URL is None, reason="needs Redis: set TEST_REDIS_URL (make test does)"
)
sqlite_only = pytest.mark.skipif(
    POSTGRES_URL is not None, reason="about SQLite itself (its file, its locks)"
)


class _Fresh:
    """Whether the current test already has its empty schema (reset once per test, lazily,
    so a test that restarts the bot on the same database keeps its data)."""

    done = False


def begin_test() -> None:
    _Fresh.done = False


def database_url(tmp_path: Path, name: str = "bot.sqlite3") -> str:
    """The current test's database: a SQLite file in `tmp_path`, or the PostgreSQL scratch
    database with an empty schema (emptied on the first call in each test)."""
    if POSTGRES_URL is None:
        return f"sqlite+aiosqlite:///{tmp_path / name}"
    if not _Fresh.done:
        _run_alone(_reset_schema(POSTGRES_URL))
        _Fresh.done = True
    return POSTGRES_URL


def redis_prefix() -> str:
    """A key prefix of its own for one test, so tests never see each other's buckets."""
    return f"lb_test:{uuid.uuid4().hex[:12]}:"


async def _reset_schema(url: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    connection = await asyncpg.connect(_dsn(url))
    try:
        # A connection the last test left open (a process it killed, an engine not disposed)
        # must not hold a lock the reset waits for.
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
        await connection.execute("CREATE SCHEMA public")
    finally:
        await connection.close()


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _run_alone(work: object) -> None:
    """Runs a coroutine to completion on its own loop in a thread: callable from sync code
    and from inside a running loop alike."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(work)  # type: ignore[arg-type]
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
