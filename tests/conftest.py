"""Fixtures shared by the unit tests: a migrated SQLite database, the shipped script and a
fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import db
from funnel.clock import FakeClock
from funnel.script import Script, load_script

ROOT = Path(__file__).resolve().parent.parent
RU_SCRIPT = ROOT / "scripts" / "ru.yaml"
EN_SCRIPT = ROOT / "scripts" / "en.yaml"


@pytest.fixture
def clock() -> FakeClock:
    # A Tuesday at noon Moscow time: inside the default send window.
    return FakeClock(datetime(2026, 3, 3, 9, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def script() -> Script:
    return load_script(RU_SCRIPT)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'test.sqlite3'}")
    await db.migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.sessionmaker(engine)
