"""Webhook mode and the operator's endpoints: the aiohttp server that takes Telegram's POSTs,
`/healthz` and `/metrics`.

An update Telegram posts is checked (the secret token, in constant time), written to the
`inbox` table (bot/inbox.py) and only then acknowledged with 200; it is handled in the
background by the same dispatcher and middlewares as in polling mode. So:

- an update that was never acknowledged is resent by Telegram; one delivered twice, to
  this instance or to another on the same database, meets the inbox's unique key and is
  skipped;
- an update acknowledged and not handled (a kill, a crash) is handled at the next start,
  and a surviving instance handles what a dead one left after `STALE_AFTER`; the commit
  that marks it handled is the only one that counts (bot/middlewares.py), so two
  instances racing for one leftover record it once;
- a graceful stop answers 503 to new POSTs (Telegram delivers them later, to whichever
  instance answers), lets the updates being handled finish, and stops.

aiogram's own `SimpleRequestHandler` feeds the update before it answers and stores
nothing, so this module has its own handler; the parsing (`Update.model_validate`) and the
dispatcher are aiogram's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import sqlite3
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import inbox, transactions
from bot.metrics import CONTENT_TYPE, Metrics
from bot.settings import Settings, split_address
from funnel.core.clock import Clock
from funnel.core.models import InboxUpdate

log = logging.getLogger("leadbot.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Every kind of update a handler may need, whatever the routers registered today:
# a payment's pre-checkout query must reach the bot within 10 s or the payment fails.
ALWAYS_ALLOWED = ("message", "callback_query", "my_chat_member", "pre_checkout_query")
DEFAULT_CONCURRENCY = 64
# Storing one update may wait this long for a busy database before Telegram is told to
# send it again (503).
STORE_BUDGET_SECONDS = 10.0
# An update left unhandled this long belongs to a stopped instance: another one takes it.
STALE_AFTER = timedelta(minutes=2)
SWEEP_SECONDS = 30.0
PURGE_EVERY_SECONDS = 3600.0
HEALTH_TIMEOUT_SECONDS = 3.0
# One line per this many seconds about refused calls: a scan of the URL must not flood logs.
REJECT_LOG_SECONDS = 60.0


class ListenError(RuntimeError):
    """The server cannot listen where it was told (address in use, no permission)."""


class Handling:
    """Stored updates handled in the background, a bounded number at a time; `drain()`
    is the graceful stop (what does not finish stays in the inbox)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        metrics: Metrics,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[int, asyncio.Task[None]] = {}

    @property
    def count(self) -> int:
        return len(self._tasks)

    def spawn(self, update: Update) -> None:
        if update.update_id in self._tasks:
            return
        task = asyncio.create_task(self._handle(update))
        self._tasks[update.update_id] = task
        self.metrics.inflight.inc()

        def done(_task: asyncio.Task[None]) -> None:
            self._tasks.pop(update.update_id, None)
            self.metrics.inflight.dec()

        task.add_done_callback(done)

    async def _handle(self, update: Update) -> None:
        async with self._slots:
            # The dispatcher's error handler logs a failure; it is not retried forever.
            with contextlib.suppress(Exception):
                await self.dispatcher.feed_update(self.bot, update, inbox_id=update.update_id)
        with contextlib.suppress(Exception):
            # Handlers that only read never committed; a failed update is settled too.
            work = functools.partial(self._mark, update.update_id)
            await transactions.retrying(work, "inbox.mark")

    async def _mark(self, update_id: int) -> None:
        async with self.sessions() as session:
            await session.execute(inbox.MARK_HANDLED, inbox.handled(update_id, self.clock.now()))
            await session.commit()

    async def resume(self, received_by: datetime) -> int:
        """Spawns the stored updates nobody handled that were received by `received_by`;
        returns how many."""

        async def read() -> list[tuple[int, str]]:
            async with self.sessions() as session:
                query = (
                    select(InboxUpdate.update_id, InboxUpdate.payload)
                    .where(InboxUpdate.handled_at.is_(None))
                    .where(InboxUpdate.received_at <= received_by)
                    .order_by(InboxUpdate.update_id)
                )
                return [(i, p) for i, p in (await session.execute(query)).all()]

        left = await transactions.retrying(read, "inbox.pending")
        spawned = 0
        for update_id, payload in left:
            if update_id in self._tasks:
                continue
            try:
                update = Update.model_validate_json(payload, context={"bot": self.bot})
            except ValueError:
                log.error("inbox.unreadable", extra={"event": "inbox.unreadable",
                                                     "update_id": update_id})  # fmt: skip
                await transactions.retrying(functools.partial(self._mark, update_id),
                                            "inbox.mark")  # fmt: skip
                continue
            self.spawn(update)
            spawned += 1
        if spawned:
            log.warning(
                "inbox.resumed: handling updates a stopped process had received",
                extra={"event": "inbox.resumed", "updates": spawned},
            )
        return spawned

    async def drain(self, grace_seconds: float) -> None:
        tasks = set(self._tasks.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.warning(
                "webhook.drain_timeout: updates left for the next start",
                extra={"event": "webhook.drain_timeout", "updates": len(late)},
            )


def allowed_updates(dispatcher: Dispatcher) -> list[str]:
    return sorted(set(dispatcher.resolve_used_update_types()) | set(ALWAYS_ALLOWED))


class Served(Protocol):
    """What the server needs of the application it serves (bot/app.py's App)."""

    @property
    def bot(self) -> Bot: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def engine(self) -> AsyncEngine: ...
    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def settings(self) -> Settings: ...
    @property
    def created_at(self) -> datetime: ...


class WebServer:
    """The aiohttp server of one App: `/healthz`, `/metrics` and, in webhook mode, the
    webhook path. `start()` listens; `stop_accepting()`, then `close()` are the stop."""

    def __init__(
        self,
        app: Served,
        listen: str,
        *,
        webhook_path: str | None = None,
        secret: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if webhook_path is not None and not secret:
            raise ValueError("webhook mode needs a secret token")
        self.app = app
        self.metrics = app.metrics
        self.host, self.port = split_address(listen)
        self.webhook_path = webhook_path
        self._secret = (secret or "").encode()
        self.handling = Handling(
            app.dispatcher, app.bot, app.sessions, app.clock, app.metrics,
            concurrency=concurrency,
        )  # fmt: skip
        self.stopping = False
        self._created_at = app.created_at
        self._runner: web.AppRunner | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._logged_reject = -REJECT_LOG_SECONDS
        self.web = web.Application()
        self.web.router.add_get("/healthz", self._healthz)
        self.web.router.add_get("/metrics", self._metrics)
        if webhook_path is not None:
            self.web.router.add_post(webhook_path, self._receive)

    async def start(self) -> None:
        runner = web.AppRunner(self.web, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise ListenError(
                f"cannot listen on {self.host}:{self.port} ({error.strerror or error}); "
                "free the port or change WEBHOOK_LISTEN / METRICS_LISTEN"
            ) from error
        self._runner = runner
        if runner.addresses:
            self.port = int(runner.addresses[0][1])
        log.info("web.listening", extra={"event": "web.listening", "host": self.host,
                                         "port": self.port})  # fmt: skip

    async def resume(self) -> None:
        """Handles what earlier runs left, then keeps taking what a stopped instance left."""
        await inbox.purge_all(self.app.sessions, self.app.clock.now())
        # Only what arrived before this process began: what another instance received
        # meanwhile is that instance's to handle (the sweep takes it if that one dies).
        await self.handling.resume(self._created_at)
        self._sweeping = asyncio.create_task(self._sweep())

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def wait(self) -> None:
        if self._sweeping is not None:
            await asyncio.gather(self._sweeping, return_exceptions=True)

    def stop_accepting(self) -> None:
        self.stopping = True

    async def close(self, grace_seconds: float = 10.0) -> None:
        self.stopping = True
        await self.handling.drain(grace_seconds)
        if self._sweeping is not None:
            self._sweeping.cancel()
            await asyncio.gather(self._sweeping, return_exceptions=True)
            self._sweeping = None
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _sweep(self) -> None:
        last_purge = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.handling.resume(self.app.clock.now() - STALE_AFTER)
                if time.monotonic() - last_purge > PURGE_EVERY_SECONDS:
                    await inbox.purge_all(self.app.sessions, self.app.clock.now())
                    last_purge = time.monotonic()
            except Exception as error:
                log.warning("inbox.sweep_failed: trying again later",
                            extra={"event": "inbox.sweep_failed",
                                   "error": type(error).__name__})  # fmt: skip

    # --- the webhook --------------------------------------------------------------------

    def _reject(self, request: web.Request, reason: str, status: int) -> web.Response:
        self.metrics.webhook_rejects.labels(reason).inc()
        now = time.monotonic()
        if reason != "stopping" and now - self._logged_reject >= REJECT_LOG_SECONDS:
            self._logged_reject = now
            # The token sent is never logged, right or wrong.
            log.warning(
                "webhook.rejected: a request to the webhook was refused; if it is Telegram, "
                "WEBHOOK_SECRET differs from the one set with setWebhook",
                extra={"event": "webhook.rejected", "reason": reason, "status": status,
                       "remote": request.remote},
            )  # fmt: skip
        return web.Response(status=status)

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            return self._reject(request, "bad_secret", 401)
        if self.stopping:
            # Not acknowledged: Telegram delivers it again, to whichever instance answers.
            return self._reject(request, "stopping", 503)
        try:
            update = Update.model_validate(await request.json(), context={"bot": self.app.bot})
        except (ValueError, ValidationError, TypeError):
            return self._reject(request, "bad_body", 400)
        try:
            new = await transactions.retrying(
                functools.partial(self._store, update), "inbox.store", budget=STORE_BUDGET_SECONDS
            )
        except Exception as error:
            log.error(
                "webhook.store_failed: the update is not acknowledged and Telegram sends it "
                "again; check the database",
                extra={"event": "webhook.store_failed", "update_id": update.update_id,
                       "error": type(error).__name__},
            )  # fmt: skip
            return self._reject(request, "store_failed", 503)
        if update.update_id in new:
            self.handling.spawn(update)
        else:
            self.metrics.duplicates.inc()
        return web.Response(status=200)

    async def _store(self, update: Update) -> set[int]:
        async with self.app.sessions() as session:
            new = await inbox.store(session, [update], self.app.clock.now())
            await session.commit()
        return new

    # --- health and metrics -------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        checks = {"database": await check_database(self.app.engine)}
        redis_url = self.app.settings.redis
        checks["redis"] = await check_redis(redis_url) if redis_url else "not configured"
        failed = [name for name, state in checks.items() if state not in ("ok", "not configured")]
        body: dict[str, Any] = {"status": "ok" if not failed else "failing", **checks}
        if self.stopping:
            # A load balancer takes this instance out while it drains.
            failed.append("stopping")
            body["status"] = "stopping"
        if failed:
            body["failed"] = failed
        return web.json_response(body, status=503 if failed else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                await self.metrics.refresh_outboxes(self.app.sessions, self.app.clock.now())
        except Exception as error:
            # The rest is still worth scraping; the outbox gauges keep their last values.
            log.warning(
                "metrics.outbox_unreadable",
                extra={"event": "metrics.outbox_unreadable", "error": type(error).__name__},
            )
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def check_database(engine: AsyncEngine) -> str:
    """ "ok", or what failed, in a few words (never a password or a path's contents)."""
    url = engine.url
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                # A pooled connection keeps reading a deleted file; a fresh one, opened
                # without creating the file, sees it gone or locked by another writer.
                await asyncio.to_thread(_probe_sqlite, str(url.database))
            else:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return "failed: no answer in time"
    except Exception as error:
        return f"failed: {_reason(error)}"
    return "ok"


def _probe_sqlite(path: str) -> None:
    connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=1.0)
    try:
        connection.execute("SELECT 1 FROM inbox LIMIT 1").fetchall()
        connection.execute("BEGIN IMMEDIATE")  # takes and gives back the write lock
        connection.rollback()
    finally:
        connection.close()


def _reason(error: BaseException) -> str:
    if isinstance(error, sqlite3.OperationalError):
        message = str(error)
        return (
            message
            if message in ("database is locked", "unable to open database file")
            else ("sqlite: " + type(error).__name__)
        )
    return type(error).__name__


async def check_redis(url: str) -> str:
    try:
        import redis.asyncio as redis_client
    except ModuleNotFoundError:
        return "failed: the redis client is not installed (pip install redis)"
    client = redis_client.Redis.from_url(
        url, socket_connect_timeout=HEALTH_TIMEOUT_SECONDS, socket_timeout=HEALTH_TIMEOUT_SECONDS
    )
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await client.ping()
    except TimeoutError:
        return "failed: no answer in time"
    except Exception as error:
        return f"failed: {type(error).__name__}"
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return "ok"
