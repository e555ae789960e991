"""An erasure that reaches the disk. `/forget` empties the person's rows in a transaction
(funnel/core/store.py); after its commit the database may still keep them elsewhere:

- **SQLite**: every connection overwrites what it deletes with zeros (`secure_delete`,
  bot/sqlite_driver.py), but the write-ahead log still holds the pages the rows were on, as
  they were, until a checkpoint copies it back and truncates it. So once an erasure has
  committed, the log is checkpointed and truncated, on a thread, trying again while a reader
  or a writer keeps it from truncating (bot/sqlite_driver.py's `Checkpoints.truncate`).
- **PostgreSQL**: an UPDATE leaves the old row version (a dead tuple) in the table's pages
  until VACUUM reclaims it. So the tables the erasure touched are vacuumed after the commit,
  on a connection in autocommit (VACUUM cannot run in a transaction). What VACUUM does not
  reach (the server's WAL segments, archives and backups) is said in the README.

`watch(engine, ...)` is called by `db.create_engine`; the work runs in the background of the
event loop, one erasure's cleaning after another, and `settle(engine)` waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Iterable
from functools import partial

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from bot import transactions
from bot.sqlite_driver import Checkpoints
from funnel.core.models import Base
from funnel.core.store import ERASURE

log = logging.getLogger("leadbot.erasure")


class Scrubber:
    """The cleaning after the erasures committed on one engine."""

    def __init__(self, engine: AsyncEngine, checkpoints: Checkpoints | None) -> None:
        self._engine = weakref.ref(engine)
        self._checkpoints = checkpoints  # None: PostgreSQL
        self._tables: set[str] = set()
        self._wanted = 0
        self._done = 0
        self._running: asyncio.Task[None] | None = None
        self.cleaned = 0  # erasures cleaned (tests and metrics read it)

    def erased(self, tables: Iterable[str]) -> None:
        """An erasure committed: clean after it (after the one under way, if any)."""
        self._tables.update(tables)
        self._wanted += 1
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._clean())

    async def _clean(self) -> None:
        while self._done < self._wanted:
            wanted, tables = self._wanted, sorted(self._tables)
            self._tables = set()
            try:
                if self._checkpoints is not None:
                    if not await self._checkpoints.truncate():
                        log.warning(
                            "db.erasure_deferred: readers or writers kept the SQLite log from "
                            "being truncated; the periodic checkpoints will truncate it",
                            extra={"event": "db.erasure_deferred"},
                        )
                else:
                    await transactions.retrying(partial(self._vacuum, tables), "erasure.vacuum")
            except Exception as error:
                log.warning(
                    "db.erasure_clean_failed: erased rows may stay on disk until the next "
                    "erasure's cleaning",
                    extra={"event": "db.erasure_clean_failed", "error": type(error).__name__},
                )
                self._tables.update(tables)  # the next erasure cleans these too
            self._done = wanted
            self.cleaned += 1

    async def _vacuum(self, tables: list[str]) -> None:
        engine = self._engine()
        if engine is None:
            return
        # Names from the models only, never from a caller's text.
        known = [name for name in tables if name in Base.metadata.tables]
        if not known:
            return
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM " + ", ".join(known)))

    async def settle(self) -> None:
        """Waits for the cleaning under way, if any."""
        while self._running is not None and not self._running.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._running)


_SCRUBBERS: weakref.WeakKeyDictionary[Engine, Scrubber] = weakref.WeakKeyDictionary()


def watch(engine: AsyncEngine, checkpoints: Checkpoints | None) -> Scrubber:
    """Cleans after every erasure committed through `engine`'s sessions."""
    scrubber = _SCRUBBERS[engine.sync_engine] = Scrubber(engine, checkpoints)
    return scrubber


def scrubber(engine: AsyncEngine) -> Scrubber | None:
    return _SCRUBBERS.get(engine.sync_engine)


async def settle(engine: AsyncEngine) -> None:
    """Waits until the cleaning after the erasures committed so far is done."""
    found = scrubber(engine)
    if found is not None:
        await found.settle()


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    tables = session.info.pop(ERASURE, None)
    if tables is None:
        return
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    found = _SCRUBBERS.get(engine) if isinstance(engine, Engine) else None
    if found is None:
        return
    try:
        found.erased(tables)
    except RuntimeError:
        # No event loop (a synchronous tool): SQLite truncates the log when the last
        # connection closes; nothing runs VACUUM here.
        log.warning("db.erasure_not_cleaned: no event loop to clean after the erasure",
                    extra={"event": "db.erasure_not_cleaned"})  # fmt: skip


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    # The erasure was undone with its transaction: there is nothing to clean after.
    session.info.pop(ERASURE, None)
