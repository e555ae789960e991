"""What an operator graphs and alerts on, in Prometheus' text format: updates by type and
how long their handling took, sends by outcome, Telegram's 429s, the outboxes' depth and
the age of their oldest due row, tick durations, database retries, refused webhook calls.

One `Metrics` per App with a registry of its own (never the process-wide default one), so
several apps in one process (tests) keep their figures apart."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from aiogram import BaseMiddleware
from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramRetryAfter
from aiogram.types import TelegramObject, Update
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from bot.delivery import classify
from bot.delivery_middleware import limited_chat_id
from funnel.core.models import Notification, Touch

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import Response, TelegramMethod
    from aiogram.methods.base import TelegramType

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
T = TypeVar("T")

# Handling an update: a commit or two and a reply, milliseconds; long tails are retries.
HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0)
# Delivery's verdicts (bot/delivery.py Attempt) as the metric's outcome label.
OUTCOMES = {"sent": "sent", "retry": "retried", "refused": "refused", "blocked": "blocked",
            "unknown": "unknown"}  # fmt: skip


WEBHOOK_REJECTS = (
    "bad_secret", "bad_body", "too_deep", "bad_update_id", "too_large", "slow_body",
    "stopping", "store_failed", "slow_headers", "idle_closed", "too_many_connections",
)  # fmt: skip


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.updates = Counter(
            "leadbot_updates", "Updates received, by type", ["type"], registry=r
        )
        self.duplicates = Counter(
            "leadbot_updates_duplicate",
            "Updates delivered again (the same update_id) and skipped",
            registry=r,
        )
        self.handler_seconds = Histogram(
            "leadbot_handler_seconds",
            "Time to handle one update (database and replies), by type",
            ["type"],
            buckets=HANDLER_BUCKETS,
            registry=r,
        )
        self.sends = Counter(
            "leadbot_sends",
            "Messages sent to Telegram, by outcome (sent, retried, refused, blocked, unknown)",
            ["outcome"],
            registry=r,
        )
        self.too_many = Counter(
            "leadbot_telegram_429", "Telegram answered 429 Too Many Requests", registry=r
        )
        self.outbox_depth = Gauge(
            "leadbot_outbox_due",
            "Outbox rows due now and not sent yet (planned, due_at passed)",
            ["outbox"],
            registry=r,
        )
        self.outbox_age = Gauge(
            "leadbot_outbox_oldest_due_seconds",
            "How long the oldest due outbox row has waited past its due time (0: none)",
            ["outbox"],
            registry=r,
        )
        self.tick_seconds = Histogram(
            "leadbot_tick_seconds",
            "Duration of one scheduler round, by job",
            ["job"],
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "leadbot_transaction_retries",
            "Database work tried again in a fresh transaction (busy, conflict, deadlock)",
            ["work"],
            registry=r,
        )
        self.webhook_rejects = Counter(
            "leadbot_webhook_rejected",
            "Webhook requests and connections refused (bad_secret: 401; bad_body, too_deep, "
            "bad_update_id: 400; too_large: 413; slow_body: 408; stopping, store_failed: 503; "
            "slow_headers, idle_closed, too_many_connections: closed)",
            ["reason"],
            registry=r,
        )
        self.inflight = Gauge(
            "leadbot_updates_in_flight", "Updates received and being handled now", registry=r
        )
        self.quieted = Counter(
            "leadbot_updates_quieted",
            "Updates recorded and not answered: their sender passed the inbound limit",
            registry=r,
        )
        for outcome in OUTCOMES.values():
            self.sends.labels(outcome)
        for reason in WEBHOOK_REJECTS:
            self.webhook_rejects.labels(reason)
        for outbox in ("touches", "notifications"):
            self.outbox_depth.labels(outbox)
            self.outbox_age.labels(outbox)

    def count_retry(self, what: str) -> None:
        self.retries.labels(what).inc()

    def timed(self, work: Callable[[], Awaitable[T]], job: str) -> Callable[[], Awaitable[T]]:
        """`work` that records its duration in the tick histogram."""
        histogram = self.tick_seconds.labels(job)

        async def run() -> T:
            started = time.perf_counter()
            try:
                return await work()
            finally:
                histogram.observe(time.perf_counter() - started)

        return run

    async def refresh_outboxes(
        self, sessions: async_sessionmaker[AsyncSession], now: datetime
    ) -> None:
        """Depth and age at scrape time: one count and one min per outbox, both on the
        (status, due_at) index."""
        async with sessions() as session:
            for name, table in (("touches", Touch), ("notifications", Notification)):
                due = (table.status == "planned") & (table.due_at <= now)
                row = (
                    await session.execute(select(func.count(), func.min(table.due_at)).where(due))
                ).one()
                count, oldest = row
                self.outbox_depth.labels(name).set(count or 0)
                age = (now - _aware(oldest, now)).total_seconds() if oldest is not None else 0.0
                self.outbox_age.labels(name).set(max(0.0, age))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _aware(moment: datetime, like: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they are stored in UTC.
    if moment.tzinfo is None and like.tzinfo is not None:
        return moment.replace(tzinfo=like.tzinfo)
    return moment


def update_type(update: Update) -> str:
    try:
        return str(update.event_type)
    except Exception:
        return "unknown"


class UpdateMetrics(BaseMiddleware):
    """Counts each update by type and times its handling, waits for the same user's earlier
    update and database retries included (the first of the dispatcher's own middlewares)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        kind = update_type(event) if isinstance(event, Update) else "other"
        self.metrics.updates.labels(kind).inc()
        started = time.perf_counter()
        try:
            return await handler(event, data)
        finally:
            self.metrics.handler_seconds.labels(kind).observe(time.perf_counter() - started)


class RequestMetrics(BaseRequestMiddleware):
    """Counts every message request on the wire by outcome, and every 429 of any method.
    Installed after the rate limiter's middleware, so a send retried after a 429 counts
    once as `retried` and once for its final outcome."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        is_send = limited_chat_id(method) is not None
        try:
            response = await make_request(bot, method)
        except Exception as error:
            if isinstance(error, TelegramRetryAfter):
                self.metrics.too_many.inc()
            if is_send:
                verdict = classify(error).verdict
                self.metrics.sends.labels(OUTCOMES.get(verdict, "unknown")).inc()
            raise
        if is_send:
            self.metrics.sends.labels("sent").inc()
        return response


def install_retry_counter(metrics: Metrics) -> Callable[[], None]:
    """Counts database retries (bot/transactions.py) in `metrics`; returns the undo."""
    transactions.retry_listeners.add(metrics.count_retry)
    return lambda: transactions.retry_listeners.discard(metrics.count_retry)
