"""Alembic environment: runs on the connection the bot hands over (bot.db.migrate), or on
DATABASE_URL when called from the alembic command line."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from funnel.core.models import Base

target_metadata = Base.metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_from_settings() -> None:
    from bot.db import create_engine
    from bot.settings import load_settings

    engine = create_engine(load_settings().database_url)

    async def go() -> None:
        async with engine.begin() as connection:
            await connection.run_sync(run_on)
        await engine.dispose()

    asyncio.run(go())


given: Any = context.config.attributes.get("connection")
if given is not None:
    run_on(given)
else:
    run_from_settings()
