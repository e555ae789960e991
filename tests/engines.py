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


class _State:
    """The session's PostgreSQL databases: a template migrated once by the code under test
    (`db.migrate`, so any migration is covered), and the current test's copy of it, made
    lazily on the test's first call, so a test that restarts the bot keeps its data. A
    copy costs a fraction of a second where migrating costs seconds. Where the role may
    not create databases, each test gets an emptied, migrated schema of the scratch
    database instead."""

    fresh = False
    template: str | None = None
    current: str | None = None
    copies = 0
    schema_only = False


def begin_test() -> None:
    _State.fresh = False


def database_url(tmp_path: Path, name: str = "bot.sqlite3") -> str:
    """The current test's database: a SQLite file in `tmp_path`, or a PostgreSQL database
    of its own (a copy of the migrated template, made on the first call in each test)."""
    if POSTGRES_URL is None:
        return f"sqlite+aiosqlite:///{tmp_path / name}"
    if not _State.fresh:
        _run_alone(_fresh_database(POSTGRES_URL))
        _State.fresh = True
    if _State.schema_only or _State.current is None:
        return POSTGRES_URL
    return _with_database(POSTGRES_URL, _State.current)


def finish() -> None:
    """At the end of the session: the copies and the template go."""
    if POSTGRES_URL is not None and not _State.schema_only:
        _run_alone(_drop_databases(POSTGRES_URL))


def _with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + f"/{database}"


def _scratch_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


async def _fresh_database(url: str) -> None:
    import asyncpg

    if _State.schema_only:
        await _reset_schema(url)
        return
    scratch = _scratch_name(url)
    admin = await asyncpg.connect(_dsn(url))
    try:
        if _State.template is None:
            template = f"{scratch}_template"
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
                await admin.execute(f'CREATE DATABASE "{template}"')
            except asyncpg.InsufficientPrivilegeError:
                _State.schema_only = True
                await _reset_schema(url)
                return
            from bot import db

            engine = db.create_engine(_with_database(url, template))
            try:
                await db.migrate(engine)
            finally:
                await engine.dispose()
            _State.template = template
        if _State.current is not None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{_State.current}" WITH (FORCE)')
        _State.copies += 1
        _State.current = f"{scratch}_t{_State.copies}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{_State.current}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{_State.current}" TEMPLATE "{_State.template}"')
    finally:
        await admin.close()


async def _drop_databases(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(_dsn(url))
    try:
        for name in (_State.current, _State.template):
            if name is not None:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    _State.current = _State.template = None


def redis_prefix() -> str:
    """A key prefix of its own for one test, so tests never see each other's buckets."""
    return f"lb_test:{uuid.uuid4().hex[:12]}:"


async def _reset_schema(url: str) -> None:
    import asyncpg

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


# -- the runner: `python -m tests.engines` (make test, .ci/run) -------------------------------

SERVER_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
SERVER_REDIS = "redis://127.0.0.1:6379/0"


async def _postgres_answers(url: str) -> str | None:
    """None when the server takes a connection, else why not."""
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed (make setup installs it)"
    try:
        connection = await asyncio.wait_for(asyncpg.connect(_dsn(url)), 5)
    except Exception as error:
        return f"no server on 127.0.0.1:5432 ({type(error).__name__})"
    await connection.close()
    return None


async def _redis_answers(url: str) -> str | None:
    try:
        from redis.asyncio import Redis
    except ImportError:
        return "redis is not installed (make setup installs it)"
    client = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await client.ping()
    except Exception as error:
        return f"no server on 127.0.0.1:6379 ({type(error).__name__})"
    finally:
        await client.aclose()
    return None


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_dsn(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _drop_scratch(url: str, name: str) -> None:
    """The scratch database and every copy the tests made of it (a killed run leaves some)."""
    import asyncpg

    connection = await asyncpg.connect(_dsn(url))
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE $2",
            name,
            name + "\\_%",
        )
        for row in rows:
            await connection.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
    finally:
        await connection.close()


def _pytest(args: list[str], env: dict[str, str], label: str) -> dict[str, int]:
    """Runs pytest in a child process; returns its counts from the JUnit report."""
    import subprocess
    import sys
    import tempfile
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        print(f"\n== {label} ==", flush=True)
        code = subprocess.call(
            [sys.executable, "-m", "pytest", f"--junitxml={report}", *args], env=env
        )
        counts = {"passed": 0, "failed": 0, "skipped": 0, "code": code}
        if report.exists():
            for suite in ET.parse(report).getroot().iter("testsuite"):
                tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
                bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                counts["passed"] += tests - skipped - bad
                counts["failed"] += bad
                counts["skipped"] += skipped
        if code not in (0, 5) and not counts["failed"]:
            counts["failed"] = 1  # pytest itself failed (collection, internal error)
        return counts


def _counted(counts: dict[str, int]) -> str:
    return f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"


def main(argv: list[str]) -> int:
    """The whole suite on SQLite, then again on PostgreSQL in a scratch database created and
    dropped here, when a server answers on 127.0.0.1:5432; the Redis tests run when Redis
    answers on 127.0.0.1:6379. Says which ran; a machine without the servers passes on
    SQLite alone."""
    base = {k: v for k, v in os.environ.items() if k not in ("TEST_POSTGRES_URL",)}
    redis_url = os.environ.get("TEST_REDIS_URL") or SERVER_REDIS
    redis_missing = asyncio.run(_redis_answers(redis_url))
    if redis_missing is None:
        base["TEST_REDIS_URL"] = redis_url
    else:
        base.pop("TEST_REDIS_URL", None)
    sqlite = _pytest(argv, base, "SQLite")
    results = [("SQLite", sqlite)]
    summary = [f"SQLite: {_counted(sqlite)}"]

    server = os.environ.get("TEST_POSTGRES_SERVER") or SERVER_POSTGRES
    postgres_missing = asyncio.run(_postgres_answers(server))
    if postgres_missing is None:
        name = f"leadbot_ci_{os.getpid()}"
        scratch = server.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(_admin(server, f"CREATE DATABASE {name}"))
        try:
            postgres = _pytest(argv, {**base, "TEST_POSTGRES_URL": scratch}, "PostgreSQL")
        finally:
            asyncio.run(_drop_scratch(server, name))
        results.append(("PostgreSQL", postgres))
        summary.append(f"PostgreSQL: ran, {_counted(postgres)}")
    else:
        summary.append(f"PostgreSQL: skipped ({postgres_missing})")
    if redis_missing is None:
        summary.append("Redis: ran (the shared-limits tests, in each pass)")
    else:
        summary.append(f"Redis: skipped ({redis_missing})")

    print("\n" + "; ".join(summary))
    total = {key: sum(counts[key] for _, counts in results) for key in sqlite}
    print(f"all: {_counted(total)}")
    return 1 if total["failed"] else 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
