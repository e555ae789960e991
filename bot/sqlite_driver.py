"""SQLite for the async engine: quick statements run on the event loop, the rest on the
driver's thread, and the process's writers take turns.

aiosqlite runs every call on the connection in a thread of its own and hands the result back
to the event loop. On this bot's statements (a lead by its id, an answer inserted, a few tens
of microseconds of SQL each) the hand-off is what costs: waking the thread, the thread
waiting for the interpreter lock the loop holds, waking the loop again. It was a third of the
bot's CPU per update. What the thread is for is a statement that may take long: one that waits
for another process's write lock, or that reads or writes much (a report on a million leads,
a purge). So:

- **A statement known to be quick runs where it is called**, on the loop's thread, with
  SQLite's busy timeout at zero: if another process holds the lock, SQLite says so at once
  and the statement goes to the thread after all, to wait there as long as the busy timeout
  allows. Known means: the same SQL text ran before, never took more than QUICK_SECONDS
  of CPU and never held the loop longer than LOOP_STALL_SECONDS. A statement seen for the
  first time, or slow once (on the loop or the thread), runs on the thread from then on.
- **Commits run where they are called**: with `synchronous=NORMAL` a WAL commit appends to
  the log without a sync. The pooled connections do not checkpoint at a commit
  (`wal_autocheckpoint=0`, which would sync on the loop); `Checkpoints` copies the log back
  into the file every CHECKPOINT_EVERY commits on a thread and a connection of its own.
- **Writers take turns** (`WriterGate`): SQLite has one writer, and a second one otherwise
  waits in SQLite's busy handler, sleeping in steps of up to 100 ms with its pooled
  connection checked out (under load the pool then opened and closed overflow connections all
  the time). A writer waits for its turn on the loop instead, which is also what lets a quick
  write run there: within the process, nothing else holds the lock.

Calls on one connection are never concurrent: SQLAlchemy awaits each before the next, which
is what lets the sqlite3 connection be used from both threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.engine import URL

from bot import write_guard
from bot.paths import sqlite_file

log = logging.getLogger("leadbot.db")

# Statements that never begin a write: anything else takes the gate first.
_READS = ("SELECT", "PRAGMA", "EXPLAIN")
# CPU a statement may have taken, every time it ran, to run on the loop.
QUICK_SECONDS = 0.002
# Wall time a statement on the loop may take before it is sent to the thread for good. Above
# QUICK_SECONDS: on the loop the wall time also counts the waits for the interpreter lock a
# driver thread holds (up to its 5 ms switch interval), which say nothing of the statement.
LOOP_STALL_SECONDS = 0.01
# Distinct statements remembered (SQLAlchemy builds the same texts again and again; a text
# with values inlined would grow this without end). Past it, everything is learnt anew.
KNOWN_STATEMENTS = 4096
# Commits between two checkpoints (a commit here writes a few pages to the log).
CHECKPOINT_EVERY = 200
# After an erasure: how long one try to empty the log waits for readers and writers (other
# writers wait meanwhile), and how long the tries go on before the periodic checkpoints
# take over.
TRUNCATE_WAIT_SECONDS = 0.2
TRUNCATE_BUDGET_SECONDS = 60.0


class _Costs:
    """What each statement (by its SQL text) cost, for the quick-or-not choice.

    A statement is quick once it ran and never took more than QUICK_SECONDS of CPU, and never
    held the loop longer than LOOP_STALL_SECONDS: on the loop the wall time is what blocks
    everything else (a purge reading pages from disk takes little CPU and long). A slow run
    is remembered for good: the forgetting of texts beyond KNOWN_STATEMENTS keeps the slow
    ones, so a statement that turned slow on the loop never runs there again."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}
        # Set once the slow statements alone fill KNOWN_STATEMENTS: from then on none runs on
        # the loop (forgetting one would let it block the loop again).
        self._closed = False

    def quick(self, sql: str) -> bool:
        seconds = self._seconds.get(sql)
        return seconds is not None and seconds <= QUICK_SECONDS and not self._closed

    def learn(self, sql: str, seconds: float) -> None:
        # Called on the loop's thread and on the driver's: one dict operation at a time.
        known = self._seconds.get(sql)
        if known is None and len(self._seconds) >= KNOWN_STATEMENTS:
            slow = {text: cost for text, cost in self._seconds.items() if cost > QUICK_SECONDS}
            if len(slow) >= KNOWN_STATEMENTS:
                self._closed = True
                return
            self._seconds = slow
        if known is None or seconds > known:
            self._seconds[sql] = seconds

    def stalled(self, sql: str) -> None:
        """The statement held the loop too long: slow from now on, whatever its CPU."""
        self.learn(sql, float("inf"))


class _Turn:
    """The gate on one event loop: the lock and the hold that has it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.hold: _Hold | None = None


class _Hold:
    """One writer's turn at the gate. Given back once, by its own connection: a hold the gate
    took back from a lost holder is spent, and giving it back later releases nothing (it
    once released the next writer's turn, letting a third one in beside it).

    It also names the holder's task, for the rule that no request goes out inside a write
    (bot/write_guard.py)."""

    __slots__ = ("guard", "holder", "turn")

    def __init__(self, turn: _Turn, holder: _Connection) -> None:
        self.turn = turn
        self.holder = weakref.ref(holder)
        self.guard = write_guard.hold()


class WriterGate:
    """One writing transaction at a time among one process's connections to one file.

    Taken before a statement that may write, when its connection is in no transaction, and
    given back when the connection leaves its transaction (commit, rollback, close, or a
    statement that opened none). Waiting longer than the busy timeout fails as SQLite would,
    "database is locked", which the update's or job's retry handles.

    A holder that went away without giving it back (collected, closed, or idle outside any
    transaction: a path that missed the hooks below) loses it at the next check. A holder
    still running a statement never does, even one that opens no transaction (DDL runs in
    autocommit: "not in a transaction" said nothing about a statement on the thread), so
    the gate never admits a second writer beside a first."""

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

    async def take(self, taker: _Connection) -> _Hold:
        turn = self._turn()
        deadline = time.monotonic() + self.timeout
        while True:
            wait = min(self.CHECK_SECONDS, deadline - time.monotonic())
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await turn.lock.acquire()
            except TimeoutError:
                hold = turn.hold
                if hold is not None and not _using(hold):
                    # Taken back: the lock goes to the first writer in line (maybe not this
                    # one), and the lost holder's own give_back is a no-op from now on.
                    self._release(hold)
                    continue
                if time.monotonic() >= deadline:
                    raise sqlite3.OperationalError("database is locked") from None
                continue
            # Acquired: no other hold exists (a hold is dropped with the lock's release, in
            # one step of the loop).
            assert turn.hold is None
            hold = turn.hold = _Hold(turn, taker)
            return hold

    @staticmethod
    def _release(hold: _Hold) -> None:
        turn = hold.turn
        if turn.hold is hold:
            turn.hold = None
            if hold.guard is not None:
                hold.guard.release()
            turn.lock.release()

    @classmethod
    def give_back(cls, hold: _Hold) -> None:
        """Ends `hold`'s turn; nothing when the gate took it back already."""
        cls._release(hold)


def _using(hold: _Hold) -> bool:
    """Whether the hold's connection still uses its turn: it is open and runs a statement or
    is in its transaction."""
    holder = hold.holder()
    return holder is not None and holder.holding is hold and holder.busy


class Checkpoints:
    """Copies the write-ahead log back into the database file, off the loop: a passive
    checkpoint (it waits for no reader or writer) every CHECKPOINT_EVERY commits, on a
    thread with a connection of its own. Without it the log would grow for as long as the
    bot runs; SQLite still checkpoints when the last connection closes.

    After an erasure (`truncate`) the log is also emptied: it holds every page the erased
    rows were on, as they were, until a checkpoint truncates it."""

    def __init__(self, connector: Callable[[], sqlite3.Connection] | None) -> None:
        self._connector = connector  # None: an in-memory database, no log
        self._commits = 0
        self._running: asyncio.Future[None] | None = None
        self.done = 0
        # An erasure whose truncation could not happen yet: the periodic checkpoints
        # truncate until one does.
        self.truncate_pending = False

    def committed(self) -> None:
        self._commits += 1
        idle = self._running is None or self._running.done()
        if self._commits >= CHECKPOINT_EVERY and self._connector is not None and idle:
            self._commits = 0
            self._running = asyncio.ensure_future(asyncio.to_thread(self._checkpoint))

    def _checkpoint(self) -> None:
        truncate = self.truncate_pending
        try:
            truncated = self._run("TRUNCATE" if truncate else "PASSIVE")
            if truncate and truncated:
                self.truncate_pending = False
                log.info("db.erasure_truncated: the deferred truncation of the log happened",
                         extra={"event": "db.erasure_truncated"})  # fmt: skip
            self.done += 1
        except sqlite3.Error as error:
            # Tried again after the next CHECKPOINT_EVERY commits.
            log.warning(
                "db.checkpoint_failed: the SQLite log was not copied back this time",
                extra={"event": "db.checkpoint_failed", "error": type(error).__name__},
            )

    def _run(self, mode: str, busy_seconds: float | None = None) -> bool:
        """One checkpoint on a connection of its own (on the calling thread); True when it
        was complete (for TRUNCATE: the log is empty)."""
        assert self._connector is not None
        connection = self._connector()
        try:
            if busy_seconds is not None:
                connection.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
            [(busy, _log, _copied)] = connection.execute(
                f"PRAGMA wal_checkpoint({mode})"
            ).fetchall()
        finally:
            connection.close()
        return busy == 0

    async def truncate(self, budget: float = TRUNCATE_BUDGET_SECONDS) -> bool:
        """Copies the whole log back and empties it, on a thread: True when done. A reader on
        an old snapshot or a writer in its transaction keeps a truncation from happening;
        each try waits for them TRUNCATE_WAIT_SECONDS at most (other writers wait while a
        try is pending), then the next comes after a pause, for `budget` seconds. Past it,
        False, and the periodic checkpoints truncate until one succeeds."""
        if self._connector is None:
            return True
        deadline = time.monotonic() + budget
        pause = 0.05
        while True:
            try:
                truncated = await asyncio.to_thread(self._run, "TRUNCATE", TRUNCATE_WAIT_SECONDS)
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise
                truncated = False
            if truncated:
                self.truncate_pending = False
                return True
            if time.monotonic() + pause > deadline:
                self.truncate_pending = True
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def wait(self) -> None:
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running


class _File:
    """What the process's connections to one database file share."""

    def __init__(self, timeout: float, checkpointer: Callable[[], sqlite3.Connection] | None):
        self.busy_ms = int(timeout * 1000)
        self.gate = WriterGate(timeout)
        self.costs = _Costs()
        self.checkpoints = Checkpoints(checkpointer)


def _may_write(sql: str) -> bool:
    return not sql.lstrip()[:7].upper().startswith(_READS)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY and its extended codes: another connection holds the lock."""
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


class _Cursor(aiosqlite.Cursor):
    def __init__(self, conn: _Connection, cursor: sqlite3.Cursor) -> None:
        super().__init__(conn, cursor)
        self._owner = conn
        self._rows: list[Any] | None = None

    def run(self, many: bool, sql: str, parameters: Any, on_loop: bool = False) -> None:
        """The statement and its rows, timed for `_Costs`: the CPU of the calling thread, and
        on the loop the time the loop was held."""
        started = time.thread_time()
        began = time.perf_counter() if on_loop else 0.0
        try:
            if many:
                self._rows = None
                self._cursor.executemany(sql, parameters)
            else:
                self._cursor.execute(sql, parameters)
                # The rows come with the statement: a statement's result is read whole anyway.
                self._rows = self._cursor.fetchall() if self._cursor.description else None
        finally:
            costs = self._owner.file.costs
            costs.learn(sql, time.thread_time() - started)
            if on_loop and time.perf_counter() - began > LOOP_STALL_SECONDS:
                costs.stalled(sql)

    async def execute(self, sql: str, parameters: Iterable[Any] | None = None) -> _Cursor:
        await self._owner.statement(self, False, sql, [] if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Iterable[Any]]) -> _Cursor:
        await self._owner.statement(self, True, sql, parameters)
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
    def __init__(self, connector: Any, file: _File, **options: Any) -> None:
        super().__init__(connector, **options)
        self.file = file
        self._hold: _Hold | None = None
        # Statements and commits under way (on the loop or the thread): a holder that runs
        # one keeps its turn, in a transaction or not.
        self._calls = 0

    @property
    def closed(self) -> bool:
        return self._connection is None

    @property
    def holding(self) -> _Hold | None:
        """Its turn at the writer gate, if it has one."""
        return self._hold

    @property
    def busy(self) -> bool:
        """Whether the connection runs a statement or is in a transaction."""
        return not self.closed and (self._calls > 0 or self._conn.in_transaction)

    def cursor(self) -> _Cursor:  # type: ignore[override]
        # SQLAlchemy enters the cursor with `async with`; aiosqlite.Cursor supports it.
        return _Cursor(self, self._conn.cursor())

    def _waiting(self, call: Callable[[], None]) -> None:
        """On the driver's thread: `call` with the busy timeout, which otherwise stays at zero
        so that a statement on the loop never waits for a lock."""
        self._conn.execute(f"PRAGMA busy_timeout={self.file.busy_ms}")
        try:
            call()
        finally:
            self._conn.execute("PRAGMA busy_timeout=0")

    async def statement(self, cursor: _Cursor, many: bool, sql: str, parameters: Any) -> None:
        """Runs a statement, after taking the writer gate if it may begin a write."""
        self._calls += 1
        try:
            if self._hold is None and _may_write(sql) and not self._conn.in_transaction:
                self._hold = await self.file.gate.take(self)
            if self.file.costs.quick(sql):
                try:
                    cursor.run(many, sql, parameters, on_loop=True)
                    return
                except sqlite3.OperationalError as error:
                    if not _is_busy(error):
                        raise
                    # Another process holds the lock: wait for it on the thread.
            await self._execute(self._waiting, partial(cursor.run, many, sql, parameters))
        finally:
            self._calls -= 1
            self._settle()

    def _settle(self) -> None:
        """Gives the gate back once the connection is out of its transaction."""
        if self._hold is not None and (self.closed or not self._conn.in_transaction):
            self._give_back()

    def _give_back(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None:
            self.file.gate.give_back(hold)

    async def commit(self) -> None:
        self._calls += 1
        try:
            if self._connection is None:
                raise ValueError("Connection closed")  # as aiosqlite says it
            wrote = self._conn.in_transaction
            try:
                self._conn.commit()
            except sqlite3.OperationalError as error:
                if not _is_busy(error):
                    raise
                await self._execute(self._waiting, self._conn.commit)
            if wrote:
                self.file.checkpoints.committed()
        finally:
            self._calls -= 1
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


class Creator:
    """The engine's `async_creator` for a SQLite file: opens the driver's connections, all
    sharing one `_File` (the gate, the statements' costs, the checkpoints)."""

    def __init__(self, url: URL, **connect_args: Any) -> None:
        args, options = SQLiteDialect_aiosqlite().create_connect_args(url)
        timeout = float(connect_args.pop("timeout", options.pop("timeout", 5.0)))
        options = {**options, **connect_args, "check_same_thread": False}
        self._connect_file = partial(sqlite3.connect, *args, **options)
        in_memory = sqlite_file(url) is None
        self.file = _File(timeout, None if in_memory else partial(self._open, timeout))

    @property
    def checkpoints(self) -> Checkpoints:
        return self.file.checkpoints

    def _open(self, timeout: float) -> sqlite3.Connection:
        connection = self._connect_file(timeout=timeout)
        # Whatever is deleted is overwritten with zeros, in the file and in the log, on every
        # connection: an erased name must not stay in a page's free space (SQLite's default
        # depends on how it was built).
        connection.execute("PRAGMA secure_delete=ON")
        return connection

    def _opened(self) -> sqlite3.Connection:
        connection = self._open(0.0)  # see `_Connection._waiting`
        # Checkpoints come from `Checkpoints`, off the loop, not from a commit on it.
        connection.execute("PRAGMA wal_autocheckpoint=0")
        return connection

    async def __call__(self) -> aiosqlite.Connection:
        connection = _Connection(self._opened, self.file, iter_chunk_size=64)
        connection._thread.daemon = True  # as SQLAlchemy does: a forgotten one never hangs exit
        return await connection


def async_creator(url: URL, **connect_args: Any) -> Creator:
    """The engine's `async_creator` for a SQLite URL: the dialect's own connect arguments
    (file, URI options) and `connect_args` (`timeout`: the busy timeout, for statements on
    the driver's thread), the connection usable from the loop's thread."""
    return Creator(url, **connect_args)
