"""Webhook delivery as Telegram does it: each queued update is POSTed as JSON to the URL the
bot set with setWebhook, with the `X-Telegram-Bot-Api-Secret-Token` header; an update the
webhook did not answer 2xx is sent again later (with a growing pause) until it is.

For tests of several instances it can stand in for a load balancer too: `targets` lists
the instances' URLs, which get the updates in turn (the URL from setWebhook is then only
the public name), and `duplicate_rate` delivers that share of the updates twice, at the
same time, to two targets, like Telegram resending an update it thinks was lost.

One sender's updates are delivered one after another (the next waits while an earlier one
is on the wire or waiting to be resent); different senders' go in parallel, up to the
webhook's max_connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from .state import WebhookDeliveryRecord, World, update_kind

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
FIRST_RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0


def sender_key(update: dict[str, Any]) -> Any:
    """Whose update it is (its `from` user, else its chat), for keeping one sender's order."""
    payload = update.get(update_kind(update))
    if isinstance(payload, dict):
        sender = payload.get("from")
        if isinstance(sender, dict) and "id" in sender:
            return ("user", sender["id"])
        chat = payload.get("chat") or (payload.get("message") or {}).get("chat")
        if isinstance(chat, dict) and "id" in chat:
            return ("chat", chat["id"])
    return ("update", update["update_id"])


class WebhookDelivery:
    def __init__(
        self,
        world: World,
        clock: Callable[[], float],
        *,
        targets: list[str] | None = None,
        duplicate_rate: float = 0.0,
        seed: int | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.world = world
        self.clock = clock
        self.timeout = timeout
        self.targets: list[str] | None = None
        self.duplicate_rate = 0.0
        self.configure(targets=targets, duplicate_rate=duplicate_rate, seed=seed)
        self._turn = itertools.count()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._not_before: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def configure(
        self,
        *,
        targets: list[str] | None = None,
        duplicate_rate: float | None = None,
        seed: int | None = None,
    ) -> None:
        """`targets`: None delivers to the setWebhook URL; a list, to these in turn."""
        if targets is not None and (
            not targets or not all(isinstance(t, str) and t.startswith("http") for t in targets)
        ):
            raise ValueError("targets must be a non-empty list of http(s) URLs, or None")
        if duplicate_rate is not None and not 0.0 <= duplicate_rate <= 1.0:
            raise ValueError("duplicate_rate must be between 0 and 1")
        self.targets = list(targets) if targets is not None else None
        if duplicate_rate is not None:
            self.duplicate_rate = float(duplicate_rate)
        self._rng = random.Random(seed)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        flying = list(self._in_flight.values())
        for item in flying:
            item.cancel()
        await asyncio.gather(*flying, return_exceptions=True)
        self._in_flight.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # --- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            wait = self._dispatch()
            await self.world.updates_changed.wait(wait)

    def _dispatch(self) -> float:
        """Starts what may go now; returns how long to wait at most before looking again."""
        hook = self.world.webhook
        if hook is None:
            return 1.0
        now = self.clock()
        next_at = now + 1.0
        # One sender's updates in order: a later one waits while an earlier one is on the
        # wire or waiting to be sent again.
        waiting = {sender_key(u) for u in self.world.updates if u["update_id"] in self._in_flight}
        for update in list(self.world.updates):
            if len(self._in_flight) >= hook.max_connections:
                break
            update_id = update["update_id"]
            if update_id in self._in_flight:
                continue
            if not self.world.is_allowed(update_kind(update)):
                self.world.acknowledge(update_id)
                self.world.stats.updates_dropped += 1
                continue
            sender = sender_key(update)
            if sender in waiting:
                continue
            waiting.add(sender)
            due = self._not_before.get(update_id, now)
            if due > now:
                next_at = min(next_at, due)
                continue
            self._in_flight[update_id] = asyncio.create_task(self._deliver(update))
        return max(0.01, next_at - now)

    def _target(self) -> str:
        hook = self.world.webhook
        if self.targets:
            return self.targets[next(self._turn) % len(self.targets)]
        assert hook is not None
        return hook.url

    async def _deliver(self, update: dict[str, Any]) -> None:
        update_id = update["update_id"]
        try:
            posts = [self._post(update, self._target(), duplicate=False)]
            if self.duplicate_rate and self._rng.random() < self.duplicate_rate:
                self.world.stats.webhook_duplicates += 1
                posts.append(self._post(update, self._target(), duplicate=True))
            results = await asyncio.gather(*posts)
            if any(results):
                self.world.acknowledge(update_id)
                self._not_before.pop(update_id, None)
                self._failures.pop(update_id, None)
            else:
                failures = self._failures.get(update_id, 0) + 1
                self._failures[update_id] = failures
                pause = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (failures - 1))
                self._not_before[update_id] = self.clock() + pause
        finally:
            self._in_flight.pop(update_id, None)
            self.world.updates_changed.notify()
            self.world.changed.notify()  # tests wait for deliveries with wait_until

    async def _post(self, update: dict[str, Any], target: str, *, duplicate: bool) -> bool:
        hook = self.world.webhook
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        headers = {"Content-Type": "application/json"}
        if hook is not None and hook.secret_token:
            headers[SECRET_HEADER] = hook.secret_token
        record = WebhookDeliveryRecord(
            update_id=update["update_id"],
            target=target,
            status=None,
            at=self.world.wall_clock(),
            duplicate=duplicate,
        )
        self.world.webhook_log.append(record)
        self.world.stats.webhook_posts += 1
        body = json.dumps(update, ensure_ascii=False)
        try:
            async with self._session.post(target, data=body, headers=headers) as response:
                record.status = response.status
                with contextlib.suppress(Exception):
                    await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            record.error = type(error).__name__
        ok = record.status is not None and 200 <= record.status < 300
        if not ok:
            self.world.stats.webhook_failed += 1
            if hook is not None:
                hook.last_error_date = self.world.now()
                hook.last_error_message = (
                    f"Wrong response from the webhook: {record.status}"
                    if record.status is not None
                    else f"Connection failed: {record.error}"
                )
        return ok
