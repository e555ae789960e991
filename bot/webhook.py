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
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import inbox
from bot.intake import Intake, resume
from bot.metrics import CONTENT_TYPE, Metrics
from bot.replies import Replies
from bot.settings import Settings, split_address
from funnel.core.clock import Clock

log = logging.getLogger("leadbot.webhook")

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# Every kind of update a handler may need, whatever the routers registered today:
# a payment's pre-checkout query must reach the bot within 10 s or the payment fails.
ALWAYS_ALLOWED = ("message", "callback_query", "my_chat_member", "pre_checkout_query")
# Storing one update may wait this long for a busy database before Telegram is told to
# send it again (503).
STORE_BUDGET_SECONDS = 10.0
# An update left unhandled this long belongs to a stopped instance: another one takes it.
STALE_AFTER = timedelta(minutes=2)
SWEEP_SECONDS = 30.0
PURGE_EVERY_SECONDS = 3600.0
HEALTH_TIMEOUT_SECONDS = 3.0
# One line per this many seconds and reason about refused calls: a scan of the URL must
# not flood logs.
REJECT_LOG_SECONDS = 60.0
REJECT_HINTS = {
    "bad_secret": "if it is Telegram, WEBHOOK_SECRET differs from the one set with setWebhook",
    "bad_body": "the body is not a Telegram update",
    "too_deep": "the body is JSON nested deeper than any Telegram update",
    "too_large": "the body is larger than any Telegram update",
    "bad_update_id": "the update_id is outside the range Telegram numbers updates in",
    "store_failed": "the update could not be stored; Telegram sends it again",
    "slow_headers": "a connection sent no whole request head in time and was closed",
    "slow_body": "a request's body did not arrive in time; the connection was closed",
    "idle_closed": "the port was full: a connection that had sent nothing whole was closed "
    "to make room",
    "too_many_connections": "the port is at its cap of connections, all busy; a new one was "
    "closed (the webhook's cap is WEBHOOK_MAX_CONNECTIONS: raise it if this is real traffic)",
}

# What one connection may hold, in seconds: its first request's head (request line and
# headers) from the moment it connects; an update's body once its head is in; an idle
# kept-alive connection, and the next head on it (aiohttp closes one still waiting for a
# whole head then). The keep-alive outlasts nginx's 60 s to its upstreams: the proxy,
# which reuses the connection, is the one that closes it.
HEADER_SECONDS = 10.0
BODY_SECONDS = 10.0
KEEPALIVE_SECONDS = 75.0
# The rest of a refused body is read this long (so the client sees the answer), no more.
LINGER_SECONDS = 2.0
# An update is a few kilobytes; the largest Telegram sends stays far below this.
MAX_BODY_BYTES = 1024 * 1024
# The inbox's column is a 64-bit integer; Telegram's ids are positive and far smaller.
MAX_UPDATE_ID = 2**63 - 1
DEFAULT_MAX_CONNECTIONS = 1000
# Only the monitoring talks to a listener of /healthz and /metrics alone.
OPS_MAX_CONNECTIONS = 100
# Descriptors the rest of the process needs besides the connections (database, Redis,
# Telegram, the script, logs).
RESERVED_FDS = 256
BACKLOG = 128


class ListenError(RuntimeError):
    """The server cannot listen where it was told (address in use, no permission)."""


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
    def inbox(self) -> inbox.Inbox: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def replies(self) -> Replies: ...
    @property
    def created_at(self) -> datetime: ...


class _Gate:
    """The connections of one listener, at most `limit` at once. At the limit the oldest
    connection that has not sent a whole request head yet makes room (an idle or slow
    client, never one whose request is being answered); without one, the newcomer is closed
    at once. The limit stays below the open-files limit, so `accept` never fails for want
    of a descriptor (asyncio logs a traceback for each such failure)."""

    def __init__(
        self, limit: int, header_seconds: float, count: Callable[[str, str | None], None]
    ) -> None:
        self.limit = limit
        self.header_seconds = header_seconds
        self.count = count
        self.open = 0
        # Admitted connections still waiting for their first whole head, oldest first.
        self.waiting: dict[_Guarded, None] = {}

    def admit(self, guard: _Guarded) -> bool:
        if self.open >= self.limit:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                self.count("too_many_connections", guard.peer)
                return False
            oldest.close("idle_closed")
        self.open += 1
        self.waiting[guard] = None
        return True

    def leave(self, guard: _Guarded) -> None:
        self.waiting.pop(guard, None)
        self.open -= 1


class _Guarded(asyncio.Protocol):
    """One connection, between asyncio's transport and aiohttp's protocol (made only once
    the gate admits it): the limit and the deadline for the first request's head, through
    the public asyncio Protocol interface alone, since aiohttp has no head timeout of its own.
    Later heads on a kept-alive connection are bounded by aiohttp's keep-alive timeout."""

    def __init__(self, gate: _Gate, make: Callable[[], asyncio.Protocol]) -> None:
        self._gate = gate
        self._make = make
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""
        self.peer: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if not self._gate.admit(self):
            transport.abort()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self._gate.header_seconds, self.close, "slow_headers")
        self._inner = self._make()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._deadline is not None:
            seen = self._tail + data
            # The blank line that ends a head (CRLF, or a bare LF as lenient parsers take it).
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._head_done()
            else:
                self._tail = seen[-3:]
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_done()
        self._leave()
        if self._inner is not None:
            inner, self._inner = self._inner, None
            inner.connection_lost(exc)

    def close(self, reason: str) -> None:
        """Cuts the connection (no head in time, or room for a newcomer), counted."""
        self._head_done()
        self._leave()
        self._gate.count(reason, self.peer)
        if self._transport is not None:
            self._transport.abort()

    def _head_done(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._gate.waiting.pop(self, None)

    def _leave(self) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.leave(self)


def fit_descriptors(connections: int) -> int:
    """How many of `connections` the open-files limit holds besides the rest of the process,
    after raising the soft limit towards the hard one if it is short."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return connections
    need = connections + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return connections
    target = need if hard == resource.RLIM_INFINITY else min(hard, need)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    return connections if soft >= need else max(1, soft - RESERVED_FDS)


class _Listener:
    """One host:port: an aiohttp application behind a connection gate."""

    def __init__(
        self, web_app: web.Application, listen: str, limit: int,
        count: Callable[[str, str | None], None],
    ) -> None:  # fmt: skip
        self.web = web_app
        self.host, self.port = split_address(listen)
        self.limit = limit
        self._count = count
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        runner = web.AppRunner(
            self.web, access_log=None, shutdown_timeout=5.0,
            keepalive_timeout=KEEPALIVE_SECONDS, lingering_time=LINGER_SECONDS,
        )  # fmt: skip
        await runner.setup()
        # aiohttp's low-level Server is a protocol factory for `create_server` (its documented
        # use); each connection reaches it through the gate.
        handlers = runner.server
        assert handlers is not None
        gate = _Gate(self.limit, HEADER_SECONDS, self._count)
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Guarded(gate, handlers), self.host, self.port, backlog=BACKLOG
            )
        except OSError as error:
            await runner.cleanup()
            raise ListenError(
                f"cannot listen on {self.host}:{self.port} ({error.strerror or error}); "
                "free the port or change WEBHOOK_LISTEN / METRICS_LISTEN"
            ) from error
        self._runner = runner
        if self._server.sockets:
            self.port = int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()  # no new connections; aiohttp closes the open ones
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._server is not None:
            server, self._server = self._server, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)


class WebServer:
    """The aiohttp server(s) of one App: `/healthz`, `/metrics` and, in webhook mode, the
    webhook path; with `ops_listen` in webhook mode the first two have a listener of their
    own and the webhook's port serves the webhook alone. `start()` listens;
    `stop_accepting()`, then `close()` are the stop."""

    def __init__(
        self,
        app: Served,
        listen: str,
        *,
        webhook_path: str | None = None,
        secret: str | None = None,
        ops_listen: str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        if webhook_path is not None and not secret:
            raise ValueError("webhook mode needs a secret token")
        if webhook_path is None and ops_listen is not None:
            raise ValueError("without a webhook, `listen` serves /healthz and /metrics")
        self.app = app
        self.metrics = app.metrics
        self.webhook_path = webhook_path
        self._secret = (secret or "").encode()
        # Shared with the poller's mode: the fair intake of the App (bot/intake.py).
        self.handling = app.intake
        self.stopping = False
        self._created_at = app.created_at
        self._sweeping: asyncio.Task[None] | None = None
        self._logged: dict[str, float] = {}
        public = web.Application(client_max_size=MAX_BODY_BYTES)
        ops = public if ops_listen is None else web.Application()
        ops.router.add_get("/healthz", self._healthz)
        ops.router.add_get("/metrics", self._metrics)
        if webhook_path is not None:
            public.router.add_post(webhook_path, self._receive)
        # Only the monitoring talks to a listener of /healthz and /metrics alone.
        limit = max_connections if webhook_path is not None else OPS_MAX_CONNECTIONS
        self._listeners = [_Listener(public, listen, limit, self._count)]
        if ops_listen is not None:
            self._listeners.append(_Listener(ops, ops_listen, OPS_MAX_CONNECTIONS, self._count))

    @property
    def host(self) -> str:
        return self._listeners[0].host

    @property
    def port(self) -> int:
        return self._listeners[0].port

    @property
    def address(self) -> str:
        """The first listener's: the webhook's in webhook mode."""
        return self._listeners[0].address

    @property
    def ops_address(self) -> str:
        """Where /healthz and /metrics are served."""
        return self._listeners[-1].address

    async def start(self) -> None:
        self._fit_limits()
        started: list[_Listener] = []
        try:
            for listener in self._listeners:
                await listener.start()
                started.append(listener)
        except BaseException:
            for listener in started:
                await listener.close()
            raise
        for listener in self._listeners:
            log.info("web.listening", extra={"event": "web.listening", "host": listener.host,
                                             "port": listener.port,
                                             "max_connections": listener.limit})  # fmt: skip

    def _fit_limits(self) -> None:
        wanted = sum(listener.limit for listener in self._listeners)
        fits = fit_descriptors(wanted)
        if fits >= wanted:
            return
        # The webhook's port gives up what is short; the monitoring keeps its few.
        first = self._listeners[0]
        first.limit = max(1, first.limit - (wanted - fits))
        log.warning(
            "web.fd_limit: the open-files limit holds fewer connections than asked; raise "
            "it (LimitNOFILE in the systemd unit, ulimit -n) or lower WEBHOOK_MAX_CONNECTIONS",
            extra={"event": "web.fd_limit", "max_connections": first.limit},
        )

    async def resume(self) -> None:
        """Handles what earlier runs left, then keeps taking what a stopped instance left."""
        await self.app.inbox.open()
        # Only what arrived before this process began: what another instance received
        # meanwhile is that instance's to handle (the sweep takes it if that one dies).
        await resume(self.app.inbox, self.handling, self._created_at, self.app.bot)
        self._sweeping = asyncio.create_task(self._sweep())

    async def wait(self) -> None:
        if self._sweeping is not None:
            await asyncio.gather(self._sweeping, return_exceptions=True)

    def stop_accepting(self) -> None:
        self.stopping = True

    async def close(self, grace_seconds: float = 10.0) -> None:
        self.stopping = True
        late = await self.handling.drain(grace_seconds)
        if late:
            log.warning(
                "webhook.drain_timeout: updates left for the next start",
                extra={"event": "webhook.drain_timeout", "updates": late},
            )
        if self._sweeping is not None:
            self._sweeping.cancel()
            await asyncio.gather(self._sweeping, return_exceptions=True)
            self._sweeping = None
        for listener in self._listeners:
            await listener.close()

    async def _sweep(self) -> None:
        last_purge = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                stale = self.app.clock.now() - STALE_AFTER
                await resume(self.app.inbox, self.handling, stale, self.app.bot)
                # Replies an instance that died had committed and not sent.
                await self.app.replies.recover(orphans_only=True)
                if time.monotonic() - last_purge > PURGE_EVERY_SECONDS:
                    await self.app.inbox.purge()
                    last_purge = time.monotonic()
            except Exception as error:
                log.warning("inbox.sweep_failed: trying again later",
                            extra={"event": "inbox.sweep_failed",
                                   "error": type(error).__name__})  # fmt: skip

    # --- the webhook --------------------------------------------------------------------

    def _count(self, reason: str, remote: str | None, status: int | None = None) -> None:
        """Counts a refused request or connection; one log line per reason a minute at most,
        so a scan or a flood of the port never floods the logs."""
        self.metrics.webhook_rejects.labels(reason).inc()
        if reason == "stopping":
            return
        now = time.monotonic()
        if now - self._logged.get(reason, -REJECT_LOG_SECONDS) < REJECT_LOG_SECONDS:
            return
        self._logged[reason] = now
        # The token sent is never logged, right or wrong.
        log.warning(
            f"webhook.rejected: {REJECT_HINTS.get(reason, 'refused')}",
            extra={"event": "webhook.rejected", "reason": reason, "status": status,
                   "remote": remote},
        )  # fmt: skip

    def _reject(
        self, request: web.Request, reason: str, status: int, *, close: bool = False
    ) -> web.Response:
        self._count(reason, request.remote, status)
        response = web.Response(status=status)
        if close:
            # What is left of the body is not worth waiting for.
            response.force_close()
        return response

    async def _receive(self, request: web.Request) -> web.Response:
        # A header's bytes that are not UTF-8 arrive as surrogates: they become "?", which
        # no secret holds (Telegram's are A-Z a-z 0-9 _ -), so such a token is only wrong.
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._secret):
            return self._reject(request, "bad_secret", 401)
        if self.stopping:
            # Not acknowledged: Telegram delivers it again, to whichever instance answers.
            return self._reject(request, "stopping", 503)
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            return self._reject(request, "too_large", 413, close=True)
        try:
            async with asyncio.timeout(BODY_SECONDS):
                raw = await request.read()
        except TimeoutError:
            return self._reject(request, "slow_body", 408, close=True)
        except web.HTTPRequestEntityTooLarge:
            return self._reject(request, "too_large", 413, close=True)
        except (ConnectionError, web.RequestPayloadError):
            return self._reject(request, "bad_body", 400, close=True)
        try:
            # pydantic's own JSON parser: no Python recursion, and a nesting limit of its own.
            update = Update.model_validate_json(raw, context={"bot": self.app.bot})
        except ValidationError as error:
            deep = any("recursion limit" in str(e.get("msg", "")) for e in error.errors())
            return self._reject(request, "too_deep" if deep else "bad_body", 400)
        except ValueError:
            return self._reject(request, "bad_body", 400)
        if not 0 <= update.update_id <= MAX_UPDATE_ID:
            # Stored, it would fail every time and be answered 503, and resent forever.
            return self._reject(request, "bad_update_id", 400)
        try:
            new = await self.app.inbox.store_within([update], STORE_BUDGET_SECONDS)
        except Exception as error:
            log.error(
                "webhook.store_failed: the update is not acknowledged and Telegram sends it "
                "again; check the database",
                extra={"event": "webhook.store_failed", "update_id": update.update_id,
                       "error": type(error).__name__},
            )  # fmt: skip
            return self._reject(request, "store_failed", 503)
        if new:
            self.handling.submit(new[0])
        else:
            self.metrics.duplicates.inc()
        return web.Response(status=200)

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
