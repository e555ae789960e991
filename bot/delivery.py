"""One delivery engine for every outbox (touches, managers' cards, CRM webhooks).

Each outbox row goes the same way: wait for a rate-limit slot (or a 429 pause) while the
row is still `planned`, claim it (`planned → sending`, committed), send the request, then
record what came of it. So a row is `sending` only while its request is on the wire: a
graceful stop drops the waiting rows (they stay planned) and lets the requests on the wire
finish; after `kill -9` only those can be in doubt, and recovery marks them `unknown`
rather than sending them twice.

Every outbox also reads a failure the same way (`classify`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import aiohttp
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
)

from bot import transactions
from bot.ratelimit import SendLimiter

log = logging.getLogger("leadbot.delivery")

MAX_ERROR = 250
_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")

# Set while a request whose rate-limit slot the engine already took is on the wire: the
# request middleware must neither wait for another slot nor resend it after a 429 (the row is
# put back to planned instead, and waits for the pause before it is claimed again).
PACED = contextvars.ContextVar("leadbot_paced", default=False)
# A claim that took longer than this holds a stale slot: the row takes a fresh one.
STALE_SLOT_SECONDS = 0.25

Verdict = Literal["sent", "retry", "refused", "blocked", "unknown", "skipped"]


@dataclass(frozen=True)
class Attempt:
    """What one send came to.

    - sent: the receiver accepted it (`result` holds its answer, e.g. the Message);
    - retry: refused before delivery (429, no connection made, the CRM said no): planned
      again, not before `retry_after` seconds when given;
    - refused: Telegram said no for good (400: bad text, chat not found, ...);
    - blocked: the user blocked the bot or was deactivated (403);
    - unknown: the request may have arrived (timeout after it left, 5xx, a crash): it is
      never sent again;
    - skipped: not sent at all (the row changed before the claim, or the engine stopped).
    """

    verdict: Verdict
    error: str | None = None
    retry_after: float | None = None
    result: Any = None


def safe_error(error: BaseException) -> str:
    """The error's kind and message for logs and tables, without the bot token (some client
    errors quote the request URL)."""
    text = f"{type(error).__name__}: {error}"
    return _TOKEN.sub("bot<token>", text)[:MAX_ERROR]


def classify(error: BaseException) -> Attempt:
    """One reading of every send failure, for every outbox."""
    if isinstance(error, TelegramRetryAfter):
        return Attempt("retry", safe_error(error), retry_after=float(error.retry_after))
    if isinstance(error, TelegramMigrateToChat):
        moved = error.migrate_to_chat_id
        return Attempt("refused", f"the group became a supergroup: its new id is {moved}")
    if isinstance(error, TelegramForbiddenError):
        return Attempt("blocked", error.message[:MAX_ERROR])
    if isinstance(error, TelegramBadRequest):
        return Attempt("refused", error.message[:MAX_ERROR])
    if isinstance(error, TelegramNetworkError | aiohttp.ClientError | OSError):
        cause = error if isinstance(error, aiohttp.ClientError) else error.__cause__
        if isinstance(cause, aiohttp.ClientConnectorError):
            # No connection was made, so nothing can have arrived.
            return Attempt("retry", safe_error(error))
        return Attempt("unknown", safe_error(error))
    if isinstance(error, TimeoutError):
        return Attempt("unknown", safe_error(error))
    if isinstance(error, TelegramAPIError):
        # 5xx (TelegramServerError) and anything unexpected from Telegram: it may have been
        # delivered before the server failed, and a doubled message is worse than a lost one.
        if error.__class__.__name__ == "TelegramServerError":
            return Attempt("unknown", safe_error(error))
        return Attempt("refused", safe_error(error))
    return Attempt("unknown", safe_error(error))


@dataclass
class DeliveryStats:
    """What one round of an outbox did, for logs, tests and benchmarks."""

    planned: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    unknown: int = 0
    cancelled: int = 0
    postponed: int = 0
    seconds: float = 0.0

    def count(self, status: str, n: int = 1) -> None:
        name = {"planned": "retried", "retry": "retried", "refused": "failed",
                "blocked": "failed"}.get(status, status)  # fmt: skip
        if name in {"sent", "retried", "failed", "unknown", "cancelled", "postponed"}:
            setattr(self, name, getattr(self, name) + n)

    def __iadd__(self, other: DeliveryStats) -> DeliveryStats:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))
        return self

    def as_fields(self) -> dict[str, Any]:
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["seconds"] = round(self.seconds, 3)
        return values

    @property
    def busy(self) -> bool:
        return any(
            (self.planned, self.sent, self.retried, self.failed, self.unknown, self.cancelled,
             self.postponed)
        )  # fmt: skip


ClaimMany = Callable[[list[int]], Awaitable[Collection[int]]]


@dataclass
class _Batch:
    waiting: dict[int, asyncio.Future[bool]] = field(default_factory=dict)


class Claims:
    """Claims rows one by one as their slots come, in as few commits as possible: the rows
    whose slots were granted in the same turn of the event loop share one UPDATE."""

    def __init__(self, claim_many: ClaimMany, what: str) -> None:
        self.claim_many = claim_many
        self.what = what
        self._batch = _Batch()
        self._flushing: asyncio.Task[None] | None = None

    async def claim(self, row_id: int) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._batch.waiting[row_id] = future
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the other slots granted in this turn join
        while self._batch.waiting:
            batch, self._batch = self._batch, _Batch()
            ids = sorted(batch.waiting)
            try:
                work = functools.partial(self.claim_many, ids)
                claimed = set(await transactions.retrying(work, self.what))
            except Exception as error:
                for future in batch.waiting.values():
                    if not future.done():
                        future.set_exception(error)
                continue
            for row_id, future in batch.waiting.items():
                if not future.done():
                    future.set_result(row_id in claimed)


class Courier:
    """Sends outbox rows: slot first, claim second, request third (see the module's doc).

    One per outbox, all sharing the bot's rate limiter. `drain()` is the graceful stop."""

    def __init__(
        self,
        limiter: SendLimiter | None,
        name: str,
        *,
        stale_slot_seconds: float = STALE_SLOT_SECONDS,
    ) -> None:
        self.limiter = limiter
        self.name = name
        self.stale_slot_seconds = stale_slot_seconds
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_wire: set[asyncio.Task[Any]] = set()
        self.stopping = False

    async def deliver(
        self,
        chat_id: int | str | None,
        claim: Callable[[], Awaitable[bool]],
        request: Callable[[], Awaitable[Any]],
    ) -> Attempt:
        """Waits for a slot to `chat_id` (None: not a Telegram message, no limit), claims
        the row, sends it; `skipped` when the claim failed or the engine is stopping."""
        if self.stopping:
            return Attempt("skipped")
        if chat_id is not None and self.limiter is not None:
            await self.limiter.acquire(chat_id)
        if self.stopping:
            return Attempt("skipped")
        task = asyncio.current_task()
        assert task is not None
        # From the claim on, a stop lets this row finish: cancelling it between its claim's
        # commit and the request would leave a `sending` row that never left.
        self._on_wire.add(task)
        token = PACED.set(chat_id is not None and self.limiter is not None)
        try:
            claiming = time.monotonic()
            if not await claim():
                return Attempt("skipped")
            if (
                chat_id is not None
                and self.limiter is not None
                and time.monotonic() - claiming > self.stale_slot_seconds
            ):
                # The claim's commit stalled (a busy database): the slot it took is long
                # past and the rows granted meanwhile would leave together, over the rate.
                # A fresh slot spaces them again; the row waits for it as `sending`, which
                # after kill -9 makes it `unknown` (never sent twice) instead of planned.
                await self.limiter.acquire(chat_id)
            result = await request()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            attempt = classify(error)
            if isinstance(error, TelegramRetryAfter) and self.limiter is not None:
                self.limiter.pause_all(error.retry_after)
            if attempt.verdict == "unknown" and not isinstance(error, TelegramAPIError):
                log.warning(
                    "delivery.crashed_or_timed_out: no answer; the message is not resent",
                    extra={"event": "delivery.no_answer", "outbox": self.name,
                           "error": type(error).__name__},
                )  # fmt: skip
            return attempt
        finally:
            PACED.reset(token)
            self._on_wire.discard(task)
        return Attempt("sent", result=result)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        """Runs one row's delivery as a task the engine can drain."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        """The deliveries running now (a copy)."""
        return set(self._tasks)

    @property
    def on_wire(self) -> int:
        return len(self._on_wire)

    async def drain(self, grace_seconds: float) -> None:
        """Stops claiming: rows still waiting for a slot stay planned; requests on the wire
        get `grace_seconds` to finish (what does not is settled as unknown next start)."""
        self.stopping = True
        waiting = [task for task in self._tasks if task not in self._on_wire]
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        on_wire = set(self._on_wire)
        if on_wire:
            _, late = await asyncio.wait(on_wire, timeout=grace_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def resume(self) -> None:
        self.stopping = False
