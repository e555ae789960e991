"""The database engine: SQLite tuned for one instance (WAL, busy timeout), PostgreSQL
through the same URL setting, and schema migrations to the latest revision."""

from __future__ import annotations

import fcntl
import os
from typing import IO, Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bot import erasure, sqlite_driver, write_guard
from bot.paths import shipped, sqlite_file
from funnel.core.models import Base

# How long a writer waits for SQLite's lock (another process's) before the driver gives up;
# the update or job is then retried in a fresh transaction (bot/transactions.py).
SQLITE_BUSY_SECONDS = 30.0
# Connections to a SQLite file, none beyond: SQLite has one writer (the process's writers take
# turns at bot/sqlite_driver.py's gate), so more connections only wait. Overflow connections
# were opened and closed all the time under load, each with a thread and a cold page cache
# (about 1 ms of CPU per update). An update waits for a free one on the loop, up to the busy
# timeout; an exhausted pool is retried like a locked file (bot/transactions.py).
SQLITE_POOL_SIZE = 8
# The PostgreSQL advisory lock key migrations hold ("leadbot" in ASCII, as a number).
MIGRATION_LOCK = 0x6C656164626F74


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: an error's text never carries the statement's values (names, answers).
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        pool: dict[str, Any] = {}
        database = sqlite_file(parsed)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
            pool = {
                "pool_size": SQLITE_POOL_SIZE,
                "max_overflow": 0,
                "pool_timeout": SQLITE_BUSY_SECONDS,
            }
        creator = sqlite_driver.async_creator(parsed, timeout=SQLITE_BUSY_SECONDS)
        engine = create_async_engine(url, async_creator=creator, hide_parameters=True, **pool)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # After a /forget: the log checkpointed and truncated (bot/erasure.py).
        erasure.watch(engine, creator.checkpoints)
        return engine
    # No JIT: the bot's statements are short, and compiling one costs more than it saves
    # (tens of milliseconds once a table is large enough for the planner to try).
    engine = create_async_engine(
        url,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"server_settings": {"jit": "off"}},
    )
    # On SQLite the driver's writer gate tells the guard; here the engine's events do.
    write_guard.install(engine)
    # After a /forget: the tables it touched vacuumed (bot/erasure.py).
    erasure.watch(engine, None)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets the report read while the bot writes; NORMAL sync is durable with WAL at
    # commit. The busy timeout is the driver's (bot/sqlite_driver.py): SQLITE_BUSY_SECONDS
    # on its thread, none for a statement on the loop.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


# The newest migration in migrations/versions (tests/test_migrations.py checks it is Alembic's
# head). A database already there starts without loading Alembic, most of a start-up's time
# after aiogram.
SCHEMA_HEAD = "0014"


async def at_head(engine: AsyncEngine) -> bool:
    """Whether the schema is at SCHEMA_HEAD, read without Alembic; False on an empty one."""
    async with engine.connect() as connection:
        has_table = await connection.run_sync(
            lambda sync: sync.dialect.has_table(sync, "alembic_version")
        )
        if not has_table:
            return False
        versions = (
            await connection.execute(text("SELECT version_num FROM alembic_version"))
        ).all()
    return [row[0] for row in versions] == [SCHEMA_HEAD]


async def migrate(engine: AsyncEngine) -> None:
    """Brings the schema to the latest migration (creates it on an empty database)."""
    if await at_head(engine):
        return
    from alembic import command
    from alembic.config import Config

    def upgrade(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(shipped("migrations")))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Instances starting together migrate one after another; the later ones find
            # the schema at head and change nothing. Released at this transaction's end.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        await connection.run_sync(upgrade)


async def revision(engine: AsyncEngine) -> str | None:
    """The schema's current Alembic revision; None on an empty database."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


class InstanceLocked(RuntimeError):
    """Another bot process runs on the same SQLite file."""


def single_instance_lock(url: str) -> IO[str] | None:
    """On a SQLite file, an exclusive lock on `<file>.lock` for as long as the returned file
    stays open (the process's lifetime): a second instance on the same file is refused with
    the reason, since SQLite serves one writer and the instances' work (claims, per-user
    order) is only shared through PostgreSQL. The kernel releases the lock whenever the
    process ends, kill -9 included, so a crash never leaves a stale lock behind.

    The lock sits beside the file SQLite opens, whatever the URL's form (a relative path, a
    `file:` URI), and is named after its real path (symbolic links followed), so two URLs
    naming one file take one lock.

    None for PostgreSQL (several instances are welcome) and for an in-memory database."""
    parsed = make_url(url)
    file = sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if file is None:
        return None
    file.parent.mkdir(parents=True, exist_ok=True)
    database = file.resolve()
    lock_path = database.with_name(database.name + ".lock")
    handle = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise InstanceLocked(
            f"another instance of the bot (pid {holder}) is running on {database}. SQLite "
            "takes one instance only: stop that one first, or move DATABASE_URL to "
            "PostgreSQL to run several"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


__all__ = [
    "SCHEMA_HEAD",
    "Base",
    "InstanceLocked",
    "at_head",
    "create_engine",
    "migrate",
    "revision",
    "sessionmaker",
    "single_instance_lock",
]
