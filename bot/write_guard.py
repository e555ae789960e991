"""No request on the wire inside a write transaction: the rule, and who holds one now.

A write transaction holds SQLite's one writer slot (the writer gate of bot/sqlite_driver.py)
or PostgreSQL's row locks until it ends. A Telegram or CRM request made before that end
waits for the other side: a slow managers' chat or a long 429 then stops every other write
of the bot (new prospects unanswered, updates that cannot be stored). So the order is
always: commit, then request.

This module knows which asyncio task holds a write transaction:

- on SQLite the driver's writer gate reports it (`hold` when a connection takes the gate,
  `Hold.release` when it gives it back);
- on any other engine (`install`) SQLAlchemy's engine events do: the first statement of a
  transaction that writes (an INSERT, UPDATE, DELETE or DDL, or a textual statement that is
  not a read) marks the connection, its commit, rollback or return to the pool clears it.

The Bot API session's request middleware (bot/delivery_middleware.py) and the CRM client
(bot/crm.py) call `refuse_inside` before a request: inside a write transaction they raise
`RequestInWriteTransaction` instead of sending, so a new violation fails its test rather than
slowing production down. A task is the unit: a request from a task of its own (the hand-off's
kick, the delivery engine's rows) waits for no transaction of the task that started it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("leadbot.write_guard")

# Textual statements (text(), exec_driver_sql) that begin no write, by their first word.
_READS = ("SELECT", "PRAGMA", "EXPLAIN", "SHOW", "VALUES")
# What makes a WITH statement a write (FOR UPDATE too: its row locks last until the end).
_CHANGES = ("INSERT ", "UPDATE ", "DELETE ", "MERGE ")
# Where a connection's open write is kept: its pool entry's `info` (the same dict for the
# Connection's events and the pool's).
_KEY = "leadbot.write_hold"

# Open write holds per task (a task may hold several connections' transactions at once).
_holds: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
# Requests refused so far, by request (tests assert it stays empty; bounded by the names).
refused: Counter[str] = Counter()


class RequestInWriteTransaction(RuntimeError):
    """A network request was asked for while the current task holds a write transaction:
    commit (or roll back) first, then send."""

    def __init__(self, request: str) -> None:
        super().__init__(
            f"{request} refused: the current task holds a write transaction (SQLite's writer "
            "gate or PostgreSQL's locks); commit first, then send"
        )
        self.request = request


class Hold:
    """One open write transaction of one task; released once, whoever releases it."""

    __slots__ = ("_task",)

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task: weakref.ref[asyncio.Task[Any]] | None = weakref.ref(task)

    def release(self) -> None:
        ref, self._task = self._task, None
        task = ref() if ref is not None else None
        if task is None:
            return
        left = _holds.get(task, 0) - 1
        if left > 0:
            _holds[task] = left
        else:
            _holds.pop(task, None)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a thread of its own holds nothing of a task
        return None


def hold() -> Hold | None:
    """The current task begins a write transaction; None outside a task."""
    task = _current_task()
    if task is None:
        return None
    _holds[task] = _holds.get(task, 0) + 1
    return Hold(task)


def in_write_transaction() -> bool:
    task = _current_task()
    return task is not None and task in _holds


def refuse_inside(request: str) -> None:
    """Raises RequestInWriteTransaction when the current task holds a write transaction.
    `request` names the request (a Bot API method, "crm.post"), never what it carries."""
    if not in_write_transaction():
        return
    refused[request] += 1
    if refused[request] == 1:
        # Once per request per process: the exception says it every time.
        log.error(
            "write_guard.refused: a request was asked for inside a write transaction; the "
            "code must commit first. Refused, not sent",
            extra={"event": "write_guard.refused", "request": request},
        )
    raise RequestInWriteTransaction(request)


# -- SQLAlchemy engine events (PostgreSQL, or any engine without the SQLite driver's gate) --


def _writes(statement: str, context: Any) -> bool:
    """Cheap, for every statement: the compiled statement's kind, or a textual one's first
    word. A compiled SELECT ... FOR UPDATE is not counted: the bot's are subqueries of an
    UPDATE or followed by one in the same transaction."""
    if context is not None:
        if context.is_crud or context.isddl:
            return True
        if context.compiled is not None and not context.is_text:
            return False
    head = statement.lstrip()[:7].upper()
    if head.startswith("WITH"):
        # Common table expressions: the reports' long reads, or a write at their end. Read
        # whole only here (a report's statement, a few per /stats, not per update).
        upper = statement.upper()
        return any(word in upper for word in _CHANGES)
    return not head.startswith(_READS)


def _before_cursor_execute(
    conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool
) -> None:
    if not _writes(statement, context):
        return
    info = conn.info
    if _KEY in info:
        return
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return  # each statement commits by itself: nothing stays held
    token = hold()
    if token is not None:
        info[_KEY] = token


def _ended(conn: Any) -> None:
    try:
        info = conn.info
    except Exception:  # closed or invalidated: the pool's checkin clears it
        return
    token = info.pop(_KEY, None)
    if token is not None:
        token.release()


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    # Back in the pool without a commit or rollback event (a dropped connection).
    if record is not None:
        token = record.info.pop(_KEY, None)
        if token is not None:
            token.release()


def install(engine: AsyncEngine) -> None:
    """Tracks `engine`'s write transactions through its events (not needed on the SQLite
    driver of bot/sqlite_driver.py, whose writer gate reports itself)."""
    sync = engine.sync_engine
    event.listen(sync, "before_cursor_execute", _before_cursor_execute)
    event.listen(sync, "commit", _ended)
    event.listen(sync, "rollback", _ended)
    event.listen(sync.pool, "checkin", _checked_in)
