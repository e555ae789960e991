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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL


class _Cursor(aiosqlite.Cursor):
    def __init__(self, conn: aiosqlite.Connection, cursor: sqlite3.Cursor) -> None:
        super().__init__(conn, cursor)
        self._rows: list[Any] | None = None

    def _run(self, sql: str, parameters: Any) -> None:
        self._cursor.execute(sql, parameters)
        # The rows come back in the same trip: a statement's result is read whole anyway.
        self._rows = self._cursor.fetchall() if self._cursor.description else None

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _Cursor:
        await self._execute(self._run, sql, [] if parameters is None else parameters)
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
    def cursor(self) -> _Cursor:  # type: ignore[override]
        # SQLAlchemy enters the cursor with `async with`; aiosqlite.Cursor supports it.
        return _Cursor(self, self._conn.cursor())

    async def rollback(self) -> None:
        if self._connection is not None:
            self._conn.rollback()


def async_creator(url: URL, **connect_args: Any) -> Any:
    """The engine's `async_creator` for a SQLite URL: the dialect's own connect arguments
    (file, URI options) and `connect_args`, the connection usable from the loop's thread."""
    args, options = SQLiteDialect_aiosqlite().create_connect_args(url)
    options = {**options, **connect_args, "check_same_thread": False}
    connector = partial(sqlite3.connect, *args, **options)

    async def connect() -> aiosqlite.Connection:
        connection = _Connection(connector, iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy does: a forgotten one never hangs exit
        return await connection

    return connect
