"""The migrations build exactly the schema the models describe."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import db
from funnel.core.models import Base


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []


async def test_migrating_twice_is_harmless(engine: AsyncEngine) -> None:
    await db.migrate(engine)


def test_the_schema_head_is_alembics_newest_migration() -> None:
    # db.migrate skips Alembic when the database is at SCHEMA_HEAD: a new migration that
    # forgot to move it would never run on an existing database.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from bot.paths import shipped

    config = Config()
    config.set_main_option("script_location", str(shipped("migrations")))
    assert ScriptDirectory.from_config(config).get_heads() == [db.SCHEMA_HEAD]


async def test_a_database_behind_the_head_is_migrated(engine: AsyncEngine) -> None:
    from alembic import command
    from alembic.config import Config

    from bot.paths import shipped

    def downgrade(connection: Any) -> None:
        config = Config()
        config.set_main_option("script_location", str(shipped("migrations")))
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")

    assert await db.at_head(engine)
    async with engine.begin() as connection:
        await connection.run_sync(downgrade)
    assert not await db.at_head(engine)
    await db.migrate(engine)
    assert await db.at_head(engine)
    assert await db.revision(engine) == db.SCHEMA_HEAD
