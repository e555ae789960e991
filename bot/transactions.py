"""Which database failures are worth a fresh transaction, and the backoff between tries.

A write conflict (another transaction changed the lead first), a locked SQLite file, a
PostgreSQL serialization failure or deadlock, an exhausted pool or a dropped connection all
pass: the same work in a new transaction usually succeeds. Anything else is a bug and is
not retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import aiohttp
from sqlalchemy import exc
from sqlalchemy.orm.exc import StaleDataError

log = logging.getLogger("leadbot.transactions")

T = TypeVar("T")

# An update, or a job's bookkeeping, is tried for about this long before it gives up.
DEFAULT_BUDGET_SECONDS = 120.0
FIRST_DELAY = 0.05
MAX_DELAY = 5.0
# Serialization failure, deadlock (PostgreSQL SQLSTATE).
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})
# A duplicate key is retried a few times only: two instances creating the same lead at once
# pass on the second try, a bug never does.
MAX_INTEGRITY_RETRIES = 3

# Called with the work's name on every retry (the metrics count them, bot/metrics.py).
retry_listeners: set[Callable[[str], None]] = set()


def note_retry(what: str) -> None:
    for listener in tuple(retry_listeners):
        listener(what)


def is_retryable(error: BaseException, attempt: int = 1) -> bool:
    """True when the same work in a fresh transaction may succeed (`attempt` counts tries)."""
    if isinstance(error, StaleDataError | exc.TimeoutError):
        return True
    if isinstance(error, exc.IntegrityError):
        return attempt < MAX_INTEGRITY_RETRIES
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, exc.OperationalError):
            return True
        sqlstate = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return sqlstate in _RETRY_SQLSTATES
    # A database server that is not there yet (asyncpg raises these on connect); the Bot
    # API client's own errors are not the database's.
    return isinstance(error, ConnectionError | OSError) and not isinstance(
        error, aiohttp.ClientError
    )


def delays(budget: float = DEFAULT_BUDGET_SECONDS) -> Iterator[float]:
    """Doubling pauses from FIRST_DELAY up to MAX_DELAY, until `budget` seconds have passed
    since the first call; then the iterator ends."""
    deadline = time.monotonic() + budget
    delay = FIRST_DELAY
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        yield min(delay, left)
        delay = min(delay * 2, MAX_DELAY)


async def retrying(
    work: Callable[[], Awaitable[T]],
    what: str,
    *,
    budget: float = DEFAULT_BUDGET_SECONDS,
) -> T:
    """Runs `work` (which opens and commits its own transaction) until it succeeds, retrying
    retryable failures with backoff within `budget`; the last failure is raised."""
    pauses = delays(budget)
    attempt = 0
    while True:
        attempt += 1
        try:
            return await work()
        except Exception as error:
            if not is_retryable(error, attempt):
                raise
            pause = next(pauses, None)
            if pause is None:
                raise
            note_retry(what)
            log.warning(
                "db.retry: the database is busy or the row changed; trying again",
                extra={
                    "event": "db.retry",
                    "work": what,
                    "attempt": attempt,
                    "error": type(error).__name__,
                },
            )
            await asyncio.sleep(pause)
