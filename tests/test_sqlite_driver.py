"""The SQLite driver's writer gate and pool (bot/sqlite_driver.py, bot/db.py), and the
dispatcher's filters on the event loop (bot/dispatcher.py)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from aiogram import F, Router
from aiogram.types import Chat, Message, User
from sqlalchemy import exc, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import db, sqlite_driver, transactions
from bot.dispatcher import run_filters_on_loop


@pytest.fixture
async def file_engine(tmp_path: Path) -> AsyncEngine:
    engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gate.sqlite3'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    await engine.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT count(*) FROM t"))).scalar_one())


async def test_a_second_writer_waits_for_the_first_to_commit(file_engine: AsyncEngine) -> None:
    events: list[str] = []
    first_wrote = asyncio.Event()
    go_on = asyncio.Event()

    async def first() -> None:
        async with file_engine.connect() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1)"))
            events.append("first wrote")
            first_wrote.set()
            await go_on.wait()
            events.append("first commits")
            await connection.commit()

    async def second() -> None:
        await first_wrote.wait()
        async with file_engine.connect() as connection:
            # SQLite itself would refuse this write at once while the first holds the lock:
            # only the gate makes it wait.
            await connection.execute(text("PRAGMA busy_timeout=0"))
            await connection.execute(text("INSERT INTO t VALUES (2)"))
            events.append("second wrote")
            await connection.commit()

    async def reader() -> None:
        await first_wrote.wait()
        # A read needs no gate: WAL serves it while the first writer holds the lock.
        assert await _count(file_engine) == 0
        events.append("read")
        await asyncio.sleep(0.1)  # the second writer is at the gate by now
        go_on.set()

    await asyncio.wait_for(asyncio.gather(first(), second(), reader()), 10)
    assert events == ["first wrote", "read", "first commits", "second wrote"]
    assert await _count(file_engine) == 2


async def test_rollback_and_statements_outside_a_transaction_give_the_gate_back(
    file_engine: AsyncEngine,
) -> None:
    async with file_engine.connect() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1)"))
        await connection.rollback()
    # DDL opens no transaction in the driver: the gate goes back after the statement.
    async with file_engine.connect() as connection:
        await connection.execute(text("CREATE TABLE u (y INTEGER)"))
    async with file_engine.begin() as connection:
        await connection.execute(text("INSERT INTO t VALUES (3)"))
    assert await _count(file_engine) == 1


async def test_a_connection_closed_in_its_transaction_gives_the_gate_back(
    file_engine: AsyncEngine,
) -> None:
    connection = await file_engine.connect()
    await connection.execute(text("INSERT INTO t VALUES (1)"))
    await connection.invalidate()  # the driver's connection is closed, its write undone
    async with file_engine.begin() as other:
        await asyncio.wait_for(other.execute(text("INSERT INTO t VALUES (2)")), 5)
    assert await _count(file_engine) == 1


async def test_a_gate_its_holder_lost_is_taken_back(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver.WriterGate, "CHECK_SECONDS", 0.05)
    async with file_engine.connect() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1)"))
        driver = (await connection.get_raw_connection()).driver_connection
        driver._hold = None  # as if a path around the driver's hooks ended the transaction
        await connection.rollback()
    async with file_engine.begin() as other:
        await asyncio.wait_for(other.execute(text("INSERT INTO t VALUES (2)")), 5)
    assert await _count(file_engine) == 1


async def test_a_gate_held_too_long_fails_as_a_locked_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'slow.sqlite3'}"
    engine = db.create_engine(url)
    holder = await engine.connect()
    try:
        await holder.execute(text("CREATE TABLE t (x INTEGER)"))
        await holder.execute(text("INSERT INTO t VALUES (1)"))
        # The gate gives up after the driver's busy timeout; shortened for the test.
        pool_connection = await holder.get_raw_connection()
        gate = pool_connection.driver_connection.file.gate
        gate.timeout = 0.2
        async with engine.connect() as waiting:
            with pytest.raises(exc.OperationalError, match="database is locked") as raised:
                await waiting.execute(text("INSERT INTO t VALUES (2)"))
        assert transactions.is_retryable(raised.value)
    finally:
        await holder.close()
        await engine.dispose()


async def test_a_sqlite_file_has_a_fixed_pool(file_engine: AsyncEngine) -> None:
    pool = file_engine.pool
    assert pool.size() == db.SQLITE_POOL_SIZE
    assert pool._max_overflow == 0  # type: ignore[attr-defined]


def _message(text_: str, chat_type: str = "private") -> Message:
    return Message(
        message_id=1,
        date=0,
        chat=Chat(id=5, type=chat_type),
        from_user=User(id=5, is_bot=False, first_name="P"),
        text=text_,
    )


async def test_plain_filters_run_on_the_loop_and_still_decide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = Router()
    child = Router()
    root.include_router(child)
    child.message.filter(F.chat.type == "private")

    @child.message(F.text.startswith("/go"), lambda message: len(message.text) < 10)
    async def go(message: Message) -> str:
        return "went"

    run_filters_on_loop(root)

    async def no_thread(*args: object, **kwargs: object) -> None:
        raise AssertionError("a filter went to a worker thread")

    monkeypatch.setattr(asyncio, "to_thread", no_thread)
    observer = child.message
    for handler in (observer._handler, *observer.handlers):
        assert all(check.awaitable for check in handler.filters or ())
    assert await root.propagate_event("message", _message("/go")) == "went"
    unhandled = await root.propagate_event("message", _message("/stop"))
    assert unhandled is not None and unhandled != "went"
    in_a_group = await root.propagate_event("message", _message("/go", "group"))
    assert in_a_group != "went"


def _hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the calls that went to the driver's thread."""
    calls: list[str] = []
    original = sqlite_driver._Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(sqlite_driver._Connection, "_execute", counted)
    return calls


async def test_a_quick_statement_runs_on_the_loop_once_known(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _hand_offs(monkeypatch)
    async with file_engine.begin() as connection:
        await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": 1})  # seen first
    first = len(calls)
    assert first == 1  # the statement; the commit ran on the loop
    for x in range(2, 6):
        async with file_engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
    assert len(calls) == first  # known quick: none went to the thread
    assert await _count(file_engine) == 5


async def test_a_slow_statement_stays_on_the_thread(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "QUICK_SECONDS", 0.0)  # every statement counts as slow
    calls = _hand_offs(monkeypatch)
    slow = text("SELECT count(*) FROM t")
    async with file_engine.connect() as connection:
        for _ in range(3):
            await connection.execute(slow)
    assert len(calls) == 3


async def test_a_quick_write_meeting_another_process_s_lock_waits_off_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.sqlite3"
    engine = db.create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
        for x in range(2):  # the insert is known quick by now
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another process's write lock
        ticks = 0

        async def ticking() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        ticker = asyncio.create_task(ticking())
        release = asyncio.get_running_loop().call_later(0.5, other.rollback)
        try:
            async with engine.begin() as connection:
                await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": 9})
        finally:
            release.cancel()
            ticker.cancel()
            other.close()
        # The write waited for the lock (about 0.5 s) while the loop went on ticking.
        assert ticks >= 10
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar_one() == 3
    finally:
        await engine.dispose()


async def test_the_log_is_checkpointed_off_the_loop(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_EVERY", 20)
    async with file_engine.connect() as connection:
        # A pooled connection never checkpoints at a commit, on the loop.
        automatic = await connection.execute(text("PRAGMA wal_autocheckpoint"))
        assert automatic.scalar_one() == 0
        driver = (await connection.get_raw_connection()).driver_connection
    for x in range(45):
        async with file_engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
    await driver.file.checkpoints.wait()
    assert driver.file.checkpoints.done >= 1
    assert await _count(file_engine) == 45


def test_a_statement_slow_once_is_never_quick_again(monkeypatch: pytest.MonkeyPatch) -> None:
    costs = sqlite_driver._Costs()
    assert not costs.quick("SELECT 1")  # never seen: the thread
    costs.learn("SELECT 1", 0.00001)
    assert costs.quick("SELECT 1")
    costs.learn("SELECT 1", 1.0)  # one slow run
    costs.learn("SELECT 1", 0.00001)
    assert not costs.quick("SELECT 1")
    monkeypatch.setattr(sqlite_driver, "KNOWN_STATEMENTS", 3)
    for n in range(5):  # texts without end (values inlined) are forgotten, not hoarded
        costs.learn(f"SELECT {n}", 0.00001)
    assert len(costs._seconds) <= 3


def _timeline(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, float]]:
    """When each connection's statements began and ended and its commits ended, as
    (connection, what, when); PRAGMAs left out."""
    moments: list[tuple[int, str, float]] = []
    run = sqlite_driver._Cursor.run
    commit = sqlite_driver._Connection.commit

    def timed_run(self: Any, many: bool, sql: str, parameters: Any, on_loop: bool = False) -> None:
        word = sql.split()[0].upper()
        if word == "PRAGMA":
            return run(self, many, sql, parameters, on_loop)
        moments.append((id(self._owner), f"{word} start", time.monotonic()))
        try:
            run(self, many, sql, parameters, on_loop)
        finally:
            moments.append((id(self._owner), f"{word} end", time.monotonic()))

    async def timed_commit(self: Any) -> None:
        await commit(self)
        moments.append((id(self), "COMMIT end", time.monotonic()))

    monkeypatch.setattr(sqlite_driver._Cursor, "run", timed_run)
    monkeypatch.setattr(sqlite_driver._Connection, "commit", timed_commit)
    return moments


def _writers(moments: list[tuple[int, str, float]]) -> list[tuple[float, float, str]]:
    """Each connection's span from its first statement to its last statement or commit."""
    spans: dict[int, list[float]] = {}
    names: dict[int, str] = {}
    for connection, what, at in moments:
        spans.setdefault(connection, []).append(at)
        names.setdefault(connection, what.split()[0])
    return sorted((min(ats), max(ats), names[c]) for c, ats in spans.items())


async def test_the_gate_never_admits_a_second_writer_beside_a_long_statement(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer running a long statement that opens no transaction (DDL runs in autocommit)
    keeps its turn past the gate's checks; and the turn it gives back afterwards is its own
    only. The gate once took the turn from it after a check (one second), then its give-back
    released the next writer's turn too: three writers at once."""
    monkeypatch.setattr(sqlite_driver.WriterGate, "CHECK_SECONDS", 0.05)
    moments = _timeline(monkeypatch)
    started = asyncio.Event()
    second_wrote = asyncio.Event()
    go_on = asyncio.Event()

    async def long_ddl() -> None:
        async with file_engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            raw._conn.create_function("nap", 1, lambda s: time.sleep(s) or 0)
            started.set()
            await connection.execute(text("CREATE TABLE big AS SELECT nap(0.5) AS y"))

    async def second() -> None:
        await started.wait()
        await asyncio.sleep(0.1)  # at the gate while the DDL runs, checks come and go
        async with file_engine.connect() as connection:
            await connection.execute(text("INSERT INTO t VALUES (2)"))
            second_wrote.set()
            await go_on.wait()  # holds its transaction open
            await connection.commit()

    async def third() -> None:
        await started.wait()
        await asyncio.sleep(0.2)
        async with file_engine.connect() as connection:
            await connection.execute(text("UPDATE t SET x = x + 1"))
            await connection.commit()

    async def release_second() -> None:
        await second_wrote.wait()
        await asyncio.sleep(0.3)  # several of the gate's checks
        go_on.set()

    await asyncio.wait_for(asyncio.gather(long_ddl(), second(), third(), release_second()), 20)
    # One writer at a time: each began after the one before ended (its DDL, its commit).
    spans = _writers(moments)
    assert spans[0][2] == "CREATE" and len(spans) == 3
    for (_, ended, before), (began, _, after) in itertools.pairwise(spans):
        assert began >= ended, (before, after)
    assert await _count(file_engine) == 1


async def test_a_spent_hold_gives_back_nothing() -> None:
    """The gate took a lost holder's turn back and gave it to the next writer: the lost
    holder's late give-back leaves the next writer's turn alone."""

    class Holder:
        holding: object = None
        busy = False

    gate = sqlite_driver.WriterGate(timeout=2.0)
    gate.CHECK_SECONDS = 0.02
    lost, next_writer, third = Holder(), Holder(), Holder()
    lost_hold = await gate.take(lost)  # type: ignore[arg-type]
    lost.holding = lost_hold  # idle, out of any transaction: lost
    next_hold = await asyncio.wait_for(gate.take(next_writer), 1)  # type: ignore[arg-type]
    next_writer.holding, next_writer.busy = next_hold, True
    gate.give_back(lost_hold)  # late, and spent
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        gate.timeout = 0.2
        await gate.take(third)  # type: ignore[arg-type]
    gate.give_back(next_hold)
    assert await asyncio.wait_for(gate.take(third), 1)  # type: ignore[arg-type]


def test_a_slow_statement_is_remembered_past_the_forgetting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_driver, "KNOWN_STATEMENTS", 4)
    costs = sqlite_driver._Costs()
    costs.learn("DELETE big", 0.00001)
    assert costs.quick("DELETE big")
    costs.stalled("DELETE big")  # held the loop (wall time), whatever its CPU
    assert not costs.quick("DELETE big")
    for n in range(20):  # texts without end: the quick ones are forgotten, the slow one not
        costs.learn(f"SELECT {n}", 0.00001)
    assert not costs.quick("DELETE big") and "DELETE big" in costs._seconds
    assert len(costs._seconds) <= 4
    # Slow texts alone filling the table: nothing runs on the loop any more.
    for n in range(4):
        costs.learn(f"UPDATE {n}", 1.0)
    costs.learn("SELECT fresh", 0.00001)
    costs.learn("SELECT fresh", 0.00001)
    assert not costs.quick("SELECT fresh") and not costs.quick("SELECT 19")


async def test_a_quick_statement_that_turns_slow_runs_on_the_loop_once(
    file_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Learnt quick on a small table, then slow (a purge after the data grew): the loop is
    held by it once, then the statement goes to the thread for good. The slowness here is
    time spent waiting (as for pages read from disk), not CPU, which the driver measured
    alone and so ran it on the loop every time."""
    calls = _hand_offs(monkeypatch)
    held: list[float] = []
    statement = text("SELECT count(*) FROM t WHERE nap(:s) >= 0")
    async with file_engine.connect() as connection:
        raw = (await connection.get_raw_connection()).driver_connection
        raw._conn.create_function("nap", 1, lambda s: time.sleep(s) or 0)
        await connection.execute(text("INSERT INTO t VALUES (1)"))
        await connection.commit()
        for _ in range(2):  # first seen on the thread, then known quick on the loop
            await connection.execute(statement, {"s": 0})
        quick_calls = len(calls)
        for _ in range(4):
            began = time.perf_counter()
            await connection.execute(statement, {"s": 0.05})
            held.append(time.perf_counter() - began)
    on_loop = 4 - (len(calls) - quick_calls)
    assert on_loop == 1
    assert all(seconds >= 0.05 for seconds in held)


async def test_a_purge_deletes_in_bounded_batches(
    sessions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handled rows past retention go a batch per transaction; the others stay."""
    from datetime import UTC, datetime, timedelta

    from bot import inbox

    now = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    old = now - inbox.KEEP_HANDLED - timedelta(minutes=1)
    recent = now - timedelta(hours=1)
    rows = [{"update_id": n, "payload": "", "received_at": old, "handled_at": old}
            for n in range(1, 1_201)]  # fmt: skip
    rows += [{"update_id": n, "payload": "", "received_at": recent, "handled_at": recent}
             for n in range(2_000, 2_010)]  # fmt: skip
    rows.append({"update_id": 3_000, "payload": "{}", "received_at": old, "handled_at": None})
    # Handled long ago, its reply still waiting for its chat: kept until it is sent.
    waiting = {"update_id": 3_001, "payload": "", "received_at": old, "handled_at": old,
               "reply_status": "planned", "chat_id": 5, "replies": "[]"}  # fmt: skip
    async with sessions() as session:
        await session.execute(inbox.INBOX.insert(), rows)
        await session.execute(inbox.INBOX.insert(), [waiting])
        await session.commit()
    batches: list[int] = []
    purge = inbox.purge

    async def counted(session: Any, at: datetime, limit: int = inbox.PURGE_BATCH) -> int:
        count = await purge(session, at, limit)
        batches.append(count)
        assert session.in_transaction()  # each batch commits on its own, below
        return count

    monkeypatch.setattr(inbox, "purge", counted)
    assert await inbox.purge_all(sessions, now, limit=500) == 1_200
    assert batches == [500, 500, 200]
    async with sessions() as session:
        left = (await session.execute(select(inbox.INBOX.c.update_id))).scalars().all()
    assert sorted(left) == [*range(2_000, 2_010), 3_000, 3_001]


async def test_every_connection_overwrites_what_it_deletes(file_engine: AsyncEngine) -> None:
    async with file_engine.connect() as connection:
        assert (await connection.execute(text("PRAGMA secure_delete"))).scalar_one() == 1
        driver = (await connection.get_raw_connection()).driver_connection
    # The checkpoints' own connection too.
    checkpointer = driver.file.checkpoints._connector()
    try:
        assert checkpointer.execute("PRAGMA secure_delete").fetchone() == (1,)
    finally:
        checkpointer.close()


def _log_size(tmp_path: Path) -> int:
    log = tmp_path / "gate.sqlite3-wal"
    return log.stat().st_size if log.exists() else 0


async def test_the_log_is_truncated_with_pooled_connections_open(
    file_engine: AsyncEngine, tmp_path: Path
) -> None:
    """Pooled connections hold no read transaction between uses: reads and writes done, all
    of them still open, the log empties at the first try."""

    async def use(x: int) -> None:
        async with file_engine.connect() as connection:
            await connection.execute(text("SELECT count(*) FROM t"))
            await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
            await connection.commit()
            await connection.execute(text("SELECT * FROM t"))

    await asyncio.gather(*(use(x) for x in range(db.SQLITE_POOL_SIZE * 2)))
    assert file_engine.pool.checkedin() >= 2  # type: ignore[attr-defined]
    assert _log_size(tmp_path) > 0
    async with file_engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
    assert await driver.file.checkpoints.truncate(budget=0.0)
    assert _log_size(tmp_path) == 0


async def test_a_truncation_a_reader_holds_up_is_tried_again_then_deferred(
    file_engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with file_engine.begin() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1)"))
        driver = (await connection.get_raw_connection()).driver_connection
    checkpoints = driver.file.checkpoints
    # Another reader on an old snapshot (another process, a report) keeps the log.
    reader = sqlite3.connect(tmp_path / "gate.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchall()
    async with file_engine.begin() as connection:
        await connection.execute(text("INSERT INTO t VALUES (2)"))
    tries = 0
    run = checkpoints._run

    def counted(mode: str, busy_seconds: float | None = None) -> bool:
        nonlocal tries
        tries += mode == "TRUNCATE"
        return run(mode, busy_seconds)

    monkeypatch.setattr(checkpoints, "_run", counted)
    monkeypatch.setattr(sqlite_driver, "TRUNCATE_WAIT_SECONDS", 0.01)
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(ticking())
    try:
        # The reader lets go while the tries go on: the log is emptied then.
        asyncio.get_running_loop().call_later(0.3, reader.rollback)
        assert await checkpoints.truncate(budget=5.0)
        assert tries >= 2 and _log_size(tmp_path) == 0 and ticks >= 10  # off the loop
        # A reader that does not let go: deferred to the periodic checkpoints.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchall()
        async with file_engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (3)"))
        assert not await checkpoints.truncate(budget=0.3)
        assert checkpoints.truncate_pending and _log_size(tmp_path) > 0
    finally:
        ticker.cancel()
        reader.rollback()
        reader.close()
    monkeypatch.setattr(sqlite_driver, "CHECKPOINT_EVERY", 3)
    for x in range(3):
        async with file_engine.begin() as connection:
            await connection.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
    await checkpoints.wait()
    # The periodic checkpoint truncated (it clears the flag only then). The log's size is
    # not checked here: the commit that started the checkpoint may append its frames after
    # the truncation began, which on a loaded machine it sometimes does.
    assert not checkpoints.truncate_pending


async def test_only_a_committed_erasure_is_cleaned_after(
    engine: AsyncEngine, sessions: Any, clock: Any
) -> None:
    from bot import erasure
    from funnel.core import store

    scrubber = erasure.scrubber(engine)
    assert scrubber is not None
    async with sessions() as session:
        lead = store.new_lead(
            store.Profile(user_id=5, chat_id=5, first_name="Ann"),
            source="direct", stage="new", position=None, version="v@1", at=clock.now(),
        )  # fmt: skip
        session.add(lead)
        await session.commit()
        await store.forget_lead(session, lead, clock.now())
        await session.rollback()  # undone: nothing to clean after
        await session.commit()
    await erasure.settle(engine)
    assert scrubber.cleaned == 0
    async with sessions() as session:
        lead = await session.merge(lead)
        await store.forget_lead(session, lead, clock.now())
        await session.commit()
        await session.commit()  # a later commit of the same session cleans nothing more
    await erasure.settle(engine)
    assert scrubber.cleaned == 1
