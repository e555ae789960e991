"""SQLite for the async engine with one trip to the driver's thread per statement.

aiosqlite runs every call on the connection in its own thread and hands the result back to
the event loop: SQLAlchemy's adapter makes four such trips per statement (open a cursor,
execute, fetch the rows, close the cursor) and one for each commit and rollback. Each trip
wakes a thread and the loop again, and on this bot's short statements the trips cost five
times the SQL (about 0.35 ms of CPU against 0.07 ms for the statement itself).

Only a statement can wait (for the write lock, up to the busy timeout), so only a statement
and a commit go to the thread, the statement with its rows in the same trip; opening and
closing a cursor, reading rows already fetched and rolling back never wait and run where they
are called. Calls on one connection are never concurrent: SQLAlchemy awaits each before the
next, which is what lets the sqlite3 connection be used from both threads.

The process's connections to one file also take turns to write (`WriterGate`): SQLite has one
writer, and a second one otherwise waits in SQLite's busy handler, sleeping in steps of up to
100 ms with its pooled connection checked out. Under load those sleeps made replies late and
the pool open and close overflow connections all the time (a thread, a connection and a cold
page cache each), about 1 ms of CPU per update. Waiting on the loop for the gate costs neither.
Other processes on the file (a migration, a CLI report) still meet the busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

# Statements that never begin a write: anything else takes the gate first.
_READS = ("SELECT", "PRAGMA", "EXPLAIN")


class _Turn:
    """The gate on one event loop: the lock and the connection holding it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.holder: weakref.ref[_Connection] | None = None


class WriterGate:
    """One writing transaction at a time among one process's connections to one file.

    Taken before a statement that may write, when its connection is in no transaction, and
    given back when the connection leaves its transaction (commit, rollback, close, or a
    statement that opened none). Waiting longer than the busy timeout fails as SQLite would,
    "database is locked", which the update's or job's retry handles. A holder that went away
    without giving it back (closed, collected, or out of its transaction: a path that missed
    the hooks below) loses it at the next check; at worst two writers then meet SQLite's own
    lock and busy timeout, as without the gate."""

    CHECK_SECONDS = 1.0

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # asyncio.Lock belongs to one event loop; tests run several loops one after another.
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turn] = (
            weakref.WeakKeyDictionary()
        )

    def _turn(self) -> _Turn:
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = _Turn()
        return turn

    async def take(self, taker: _Connection) -> _Turn:
        turn = self._turn()
        deadline = time.monotonic() + self.timeout
        while True:
            wait = min(self.CHECK_SECONDS, deadline - time.monotonic())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await turn.lock.acquire()
            except TimeoutError:
                holder = turn.holder() if turn.holder is not None else None
                if turn.lock.locked() and (holder is None or not holder.writing):
                    turn.holder = None
                    turn.lock.release()
                    continue
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                continue
            turn.holder = weakref.ref(taker)
            return turn

    @staticmethod
    def give_back(turn: _Turn) -> None:
        turn.holder = None
        turn.lock.release()


def _may_write(sql: str) -> bool:
    return not sql.lstrip()[:7].upper().startswith(_READS)


class _Cursor(aiosqlite.Cursor):
    def __init__(self, conn: _Connection, cursor: sqlite3.Cursor) -> None:
        super().__init__(conn, cursor)
        self._owner = conn
        self._rows: list[Any] | None = None

    def _run(self, sql: str, parameters: Any) -> None:
        self._cursor.execute(sql, parameters)
        # The rows come back in the same trip: a statement's result is read whole anyway.
        self._rows = self._cursor.fetchall() if self._cursor.description else None

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _Cursor:
        await self._owner.gated(sql, self._run, sql, [] if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Cursor:
        self._rows = None
        await self._owner.gated(sql, self._cursor.executemany, sql, parameters)
        return self

    def _take(self, size: int | None) -> list[Any]:
        if self._rows is None:
            return self._cursor.fetchall() if size is None else self._cursor.fetchmany(size)
        if size is None:
            rows, self._rows = self._rows, []
            return rows
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchone(self) -> Any:
        rows = self._take(1)
        return rows[0] if rows else None

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._take(self.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._take(None)

    async def close(self) -> None:
        self._rows = None
        self._cursor.close()


class _Connection(aiosqlite.Connection):
    def __init__(self, connector: Any, gate: WriterGate, **options: Any) -> None:
        super().__init__(connector, **options)
        self._gate = gate
        self._turn: _Turn | None = None

    @property
    def closed(self) -> bool:
        return self._connection is None

    @property
    def writing(self) -> bool:
        """Whether the connection is in a transaction (a write's, since it holds the gate)."""
        return not self.closed and self._conn.in_transaction

    def cursor(self) -> _Cursor:  # type: ignore[override]
        # SQLAlchemy enters the cursor with `async with`; aiosqlite.Cursor supports it.
        return _Cursor(self, self._conn.cursor())

    async def gated(self, sql: str, run: Callable[..., Any], *args: Any) -> Any:
        """Runs a statement on the driver's thread, with the writer gate if it may begin a
        write."""
        if self._turn is None and _may_write(sql) and not self._conn.in_transaction:
            self._turn = await self._gate.take(self)
        try:
            return await self._execute(run, *args)
        finally:
            self._settle()

    def _settle(self) -> None:
        """Gives the gate back once the connection is out of its transaction."""
        if self._turn is not None and (self.closed or not self._conn.in_transaction):
            self._give_back()

    def _give_back(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            self._gate.give_back(turn)

    async def commit(self) -> None:
        try:
            await super().commit()
        finally:
            self._settle()

    async def rollback(self) -> None:
        if self._connection is not None:
            self._conn.rollback()
        self._settle()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            self._give_back()

    def stop(self) -> Any:
        # SQLAlchemy's forced termination of a connection (aiosqlite 0.22.1 and later).
        self._give_back()
        return super().stop()


def async_creator(url: URL, **connect_args: Any) -> Any:
    """The engine's `async_creator` for a SQLite URL: the dialect's own connect arguments
    (file, URI options) and `connect_args`, the connection usable from the loop's thread."""
    args, options = SQLiteDialect_aiosqlite().create_connect_args(url)
    options = {**options, **connect_args, "check_same_thread": False}
    connector = partial(sqlite3.connect, *args, **options)
    gate = WriterGate(float(options.get("timeout", 5.0)))

    async def connect() -> aiosqlite.Connection:
        connection = _Connection(connector, gate, iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy does: a forgotten one never hangs exit
        return await connection

    return connect
