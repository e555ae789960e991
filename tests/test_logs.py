"""Logs carry no message texts: not even at DEBUG, where database drivers would print every
statement with its parameters."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.logs import configure
from funnel.core.clock import FakeClock
from funnel.core.store import Profile
from funnel.dialogue.flow import Dialogue
from funnel.script.schema import Script

SECRET_ANSWER = "мой телефон +7 900 123-45-67"


@pytest.fixture
def debug_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """DEBUG logging to the captured stderr, as an operator would switch it on."""
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    configure("DEBUG")
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


async def test_debug_logs_hold_no_answers(
    debug_logs: None, capsys: pytest.CaptureFixture[str],
    sessions: async_sessionmaker[AsyncSession], script: Script, clock: FakeClock,
) -> None:  # fmt: skip
    user = Profile(user_id=901, chat_id=901, first_name="Вера")
    async with sessions() as session:
        await Dialogue(session, script, clock).start(user, None)
        await session.commit()
    async with sessions() as session:
        await Dialogue(session, script, clock).answer(user, None, text=SECRET_ANSWER)
        await session.commit()
    logging.getLogger("leadbot.test").debug("debug logging is on")
    captured = capsys.readouterr()
    assert "debug logging is on" in captured.err
    assert SECRET_ANSWER not in captured.err + captured.out
    assert "+7 900" not in captured.err + captured.out
