"""Fixtures shared by the unit tests: a migrated database (SQLite, or PostgreSQL with
TEST_POSTGRES_URL: see tests/engines.py), the shipped script and a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import db, write_guard
from funnel.core.clock import FakeClock
from funnel.script.loading import load_script
from funnel.script.schema import Script
from tests import engines, wheel

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


# Kept for the modules that ask which engine they run on.
POSTGRES_URL = engines.POSTGRES_URL


@pytest.fixture(autouse=True)
def _fresh_database_per_test() -> None:
    engines.begin_test()


@pytest.fixture(autouse=True)
def _no_request_inside_a_write() -> Iterator[None]:
    """Fails any test during which the bot asked for a request inside a write transaction,
    even where the refusal itself was caught (the delivery engine records it as unknown). A
    test that provokes one on purpose clears `write_guard.refused` itself."""
    write_guard.refused.clear()
    yield
    refused = dict(write_guard.refused)
    write_guard.refused.clear()
    assert not refused, f"requests asked for inside a write transaction: {refused}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    engines.finish()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(engines.database_url(tmp_path, "test.sqlite3"))
    await db.migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.sessionmaker(engine)


# Every system text a test script needs, for tests that write a small script inline.
TEST_TEXTS_YAML = """texts:
  welcome: Hi
  welcome_back: Welcome back
  continue_button: Continue
  restart_button: Restart
  stale_button: Old button
  use_buttons: Use the buttons
  too_long: Too long
  unsupported: Text only
  help: Help
  stopped: Stopped
  resumed: Resumed
  forget_confirm: Forget?
  forget_yes: "Yes"
  forget_no: "No"
  forgotten: Forgotten
  forget_cancelled: Kept
  finished: Done
  stop_button: "Stop messages"
  manager_will_write: A manager will write
"""


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> wheel.Built:
    """The application's wheel, built once for the tests that install it."""
    return wheel.build_wheel(tmp_path_factory.mktemp("wheel"))
