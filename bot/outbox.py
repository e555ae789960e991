"""Delivery of the touch outbox: each tick plans due touches, then sends them through the
rate-limited Bot at most once each, recording what Telegram answered."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from funnel import campaigns
from funnel.campaigns import Cancel, Outcome, Postpone, Send
from funnel.clock import Clock
from funnel.replies import Reply
from funnel.script import Script
from funnel.sending_rules import in_window
from handlers.keyboards import keyboard

log = logging.getLogger("leadbot.outbox")

# Enough parallel requests that the rate limiter, not round trips, sets the pace.
DEFAULT_CONCURRENCY = 50
# How long one delivery round may keep claiming new batches before the tick yields to
# planning; in-flight sends always finish.
DEFAULT_ROUND_SECONDS = 300.0
# Leads whose cycle began this long (in wall seconds) before a planning watermark are read
# again: covers dialogue transactions that stamped the time, then committed a bit later.
PLAN_MARGIN_WALL_SECONDS = 120.0
MAX_ERROR = 250
ALERT_LIMIT = 3900
_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


@dataclass
class TickStats:
    """What one tick did, for logs and tests."""

    planned: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    cancelled: int = 0
    postponed: int = 0
    retried: int = 0
    seconds: float = 0.0

    def __iadd__(self, other: TickStats) -> TickStats:
        for name in ("planned", "sent", "failed", "unknown", "cancelled", "postponed", "retried"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def busy(self) -> bool:
        return any(
            (self.planned, self.sent, self.failed, self.unknown, self.cancelled, self.postponed)
        )


@dataclass(frozen=True)
class _Outgoing:
    touch_id: int
    lead_id: int
    chat_id: int
    campaign: str
    step: int
    reply: Reply
    notify_managers: bool
    lead_label: str


@dataclass
class _Round:
    stats: TickStats = field(default_factory=TickStats)
    # Touches whose step alerts the managers once sent: touch id -> ((campaign, step), lead).
    notify: dict[int, tuple[tuple[str, int], str]] = field(default_factory=dict)
    alerts: dict[tuple[str, int], list[str]] = field(default_factory=dict)


def safe_error(error: BaseException) -> str:
    """The error's kind and message for logs and the touches table, without the bot token
    (some client errors quote the request URL)."""
    text = f"{type(error).__name__}: {error}"
    return _TOKEN.sub("bot<token>", text)[:MAX_ERROR]


class Outbox:
    """Plans and delivers campaign touches; `tick` is the scheduler's interval job."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bot: Bot,
        script: Callable[[], Script],
        clock: Clock,
        zone: ZoneInfo,
        manager_chat_id: int | None,
        batch_size: int = 500,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        send_timeout: int | None = None,
        plan_margin: timedelta | None = None,
        round_seconds: float = DEFAULT_ROUND_SECONDS,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.sessions = sessions
        self.bot = bot
        self.script = script
        self.clock = clock
        self.zone = zone
        self.manager_chat_id = manager_chat_id
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.send_timeout = send_timeout
        self.round_seconds = round_seconds
        if plan_margin is None:
            # In scaled (demo) time a wall second is many funnel seconds.
            scale = float(getattr(clock, "scale", 1.0))
            plan_margin = timedelta(seconds=PLAN_MARGIN_WALL_SECONDS * max(scale, 1.0))
        self.plan_margin = plan_margin

    # -- jobs -----------------------------------------------------------------------------

    async def recover(self) -> int:
        """At start-up: touches a crash left "sending" become "unknown" (they may have left)."""
        async with self.sessions() as session:
            count = await campaigns.recover_interrupted(session)
            await session.commit()
        if count:
            log.warning(
                "outbox.recovered_unknown: these touches may or may not have reached the "
                "leads; they are not resent",
                extra={"event": "outbox.recovered_unknown", "touches": count},
            )
        return count

    async def tick(self) -> TickStats:
        """One round: plan what campaign rules make due, then deliver what is due."""
        started = time.monotonic()
        now = self.clock.now()
        planned = await self.plan(now)
        stats = await self.deliver(now)
        stats.planned = planned
        stats.seconds = time.monotonic() - started
        if stats.busy:
            log.info(
                "outbox.tick",
                extra={
                    "event": "outbox.tick",
                    "planned": stats.planned,
                    "sent": stats.sent,
                    "failed": stats.failed,
                    "unknown": stats.unknown,
                    "cancelled": stats.cancelled,
                    "postponed": stats.postponed,
                    "retried": stats.retried,
                    "seconds": round(stats.seconds, 3),
                },
            )
        return stats

    async def plan(self, now: datetime) -> int:
        """Inserts the touches that became due by `now`; returns how many are new."""
        async with self.sessions() as session:
            count = await campaigns.plan_touches(
                session, self.script(), now, margin=self.plan_margin
            )
            await session.commit()
        return count

    async def deliver(self, now: datetime) -> TickStats:
        """Sends the due touches: batches are claimed and checked, then sent concurrently
        (bounded), so the rate limiter is the only throttle; results are written as they
        come in."""
        round_ = _Round()
        started = time.monotonic()
        queue: deque[_Outgoing] = deque()
        inflight: set[asyncio.Task[Outcome]] = set()
        exhausted = False
        try:
            while True:
                if not queue and not exhausted:
                    if time.monotonic() - started > self.round_seconds:
                        exhausted = True
                    else:
                        moment = max(now, self.clock.now())
                        batch, examined = await self._prepare(moment, round_)
                        queue.extend(batch)
                        exhausted = examined < self.batch_size
                if queue and len(inflight) <= self.concurrency // 2:
                    free = min(len(queue), self.concurrency - len(inflight))
                    take = [queue.popleft() for _ in range(free)]
                    for item in await self._claim(take, now):
                        if item.notify_managers:
                            round_.notify[item.touch_id] = (
                                (item.campaign, item.step),
                                item.lead_label,
                            )
                        inflight.add(asyncio.create_task(self._send(item)))
                    continue
                if not inflight:
                    if queue or not exhausted:
                        continue
                    break
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                inflight -= done
                await self._record([task.result() for task in done], round_)
        finally:
            if inflight:
                # Cancelled mid-round (shutdown): what is in flight stays "sending" and is
                # settled as "unknown" at the next start, never resent.
                for task in inflight:
                    task.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)
        await self._alert_managers(round_)
        return round_.stats

    # -- steps ----------------------------------------------------------------------------

    async def _prepare(self, now: datetime, round_: _Round) -> tuple[list[_Outgoing], int]:
        """Claims a batch of due touches, cancels the obsolete, postpones those outside the
        window or over the cap, and renders the rest."""
        script = self.script()
        outgoing: list[_Outgoing] = []
        async with self.sessions() as session:
            await campaigns.take_write_lock(session)
            pairs = await campaigns.due_touches(session, now, self.batch_size)
            if not pairs:
                return [], 0
            lead_ids = sorted({touch.lead_id for touch, _ in pairs})
            since = now - script.frequency_cap.per
            history = await campaigns.recent_sends(session, lead_ids, since)
            for touch, lead in pairs:
                decision = campaigns.decide(
                    touch, lead, script, now, history.get(touch.lead_id, []), self.zone
                )
                if isinstance(decision, Cancel):
                    await campaigns.cancel_touch(session, touch.id, decision.reason)
                    round_.stats.cancelled += 1
                elif isinstance(decision, Postpone):
                    await campaigns.postpone_touch(session, touch.id, decision.until,
                                                   decision.why)  # fmt: skip
                    round_.stats.postponed += 1
                elif isinstance(decision, Send) and lead is not None and lead.chat_id:
                    campaign = script.campaign(touch.campaign)
                    assert campaign is not None  # decide() cancels touches of removed ones
                    history.setdefault(lead.id, []).append(now)
                    outgoing.append(
                        _Outgoing(
                            touch_id=touch.id,
                            lead_id=lead.id,
                            chat_id=lead.chat_id,
                            campaign=campaign.id,
                            step=touch.step,
                            reply=campaigns.render_touch(script, campaign, touch.step, lead),
                            notify_managers=campaign.steps[touch.step - 1].notify_managers,
                            lead_label=_lead_label(lead.id, lead.first_name, lead.username),
                        )
                    )
            await session.commit()
        return outgoing, len(pairs)

    async def _claim(self, items: list[_Outgoing], floor: datetime) -> list[_Outgoing]:
        """Marks a slice "sending" and commits, right before the requests leave; anything
        that went stale meanwhile (a reply, /stop, a block, the window closing) stays
        planned and is decided again by the next batch."""
        now = max(floor, self.clock.now())
        if not items or not in_window(now, self.script().send_window, self.zone):
            return []
        async with self.sessions() as session:
            claimed = await campaigns.claim_for_sending(session, [i.touch_id for i in items], now)
            await session.commit()
        return [item for item in items if item.touch_id in claimed]

    async def _send(self, item: _Outgoing) -> Outcome:
        def outcome(status: Any, **fields: Any) -> Outcome:
            return Outcome(item.touch_id, item.lead_id, status, self.clock.now(), **fields)

        try:
            await self.bot.send_message(
                chat_id=item.chat_id,
                text=item.reply.text,
                parse_mode="HTML",
                reply_markup=keyboard(item.reply),
                request_timeout=self.send_timeout,
            )
        except TelegramRetryAfter as error:
            # Flood control refused it before delivery (and the middleware gave up retrying).
            retry_at = self.clock.now() + timedelta(seconds=error.retry_after)
            return outcome("planned", error=safe_error(error), retry_at=retry_at)
        except TelegramForbiddenError as error:
            return outcome("failed", reason="blocked", error=error.message[:MAX_ERROR])
        except TelegramBadRequest as error:
            self._log_failed(item, "bad_request", error)
            return outcome("failed", reason="bad_request", error=error.message[:MAX_ERROR])
        except (TelegramNetworkError, TelegramServerError, TimeoutError, OSError) as error:
            # The request may have reached Telegram: never resent (a doubled marketing
            # message is worse than a lost one).
            return self._unknown(item, outcome, error)
        except TelegramAPIError as error:
            self._log_failed(item, "telegram_error", error)
            return outcome("failed", reason="telegram_error", error=safe_error(error))
        except Exception as error:
            log.exception(
                "outbox.send_crashed",
                extra={"event": "outbox.send_crashed", "touch_id": item.touch_id},
            )
            return self._unknown(item, outcome, error)
        return outcome("sent")

    def _unknown(
        self, item: _Outgoing, outcome: Callable[..., Outcome], error: BaseException
    ) -> Outcome:
        text = safe_error(error)
        log.warning(
            "outbox.send_unknown: no answer from Telegram; the touch may have reached the "
            "lead and is not resent. Many of these mean the network or TELEGRAM_API_URL is "
            "unhealthy",
            extra={
                "event": "outbox.send_unknown",
                "touch_id": item.touch_id,
                "lead_id": item.lead_id,
                "campaign": item.campaign,
                "step": item.step,
                "error": text,
            },
        )
        return outcome("unknown", reason="no_answer", error=text)

    def _log_failed(self, item: _Outgoing, reason: str, error: TelegramAPIError) -> None:
        log.warning(
            "outbox.send_failed: Telegram refused the touch; check the campaign's text and "
            "buttons in the script",
            extra={
                "event": "outbox.send_failed",
                "touch_id": item.touch_id,
                "lead_id": item.lead_id,
                "campaign": item.campaign,
                "step": item.step,
                "reason": reason,
                "error": error.message[:MAX_ERROR],
            },
        )

    async def _record(self, outcomes: list[Outcome], round_: _Round) -> None:
        if not outcomes:
            return
        async with self.sessions() as session:
            counts = await campaigns.record_outcomes(session, outcomes, self.clock.now())
            await session.commit()
        stats = round_.stats
        stats.sent += counts.get("sent", 0)
        stats.failed += counts.get("failed", 0)
        stats.unknown += counts.get("unknown", 0)
        stats.retried += counts.get("planned", 0)
        for outcome in outcomes:
            if outcome.status == "sent" and outcome.touch_id in round_.notify:
                key, label = round_.notify.pop(outcome.touch_id)
                round_.alerts.setdefault(key, []).append(label)

    # -- managers' alerts -----------------------------------------------------------------

    async def _alert_managers(self, round_: _Round) -> None:
        """One message per campaign step per round (the managers' chat allows 20 a minute)."""
        if self.manager_chat_id is None or not round_.alerts:
            return
        script = self.script()
        for (campaign_id, step), labels in round_.alerts.items():
            campaign = script.campaign(campaign_id)
            title = escape(campaign.title if campaign else campaign_id)
            for text in _alert_texts(title, step, labels):
                try:
                    await self.bot.send_message(self.manager_chat_id, text, parse_mode="HTML")
                except TelegramAPIError as error:
                    log.error(
                        "outbox.alert_failed: check MANAGER_CHAT_ID and that the bot is in "
                        "that chat",
                        extra={"event": "outbox.alert_failed", "error": safe_error(error)},
                    )
                    return


def _lead_label(lead_id: int, first_name: str | None, username: str | None) -> str:
    name = escape((first_name or "")[:64])
    handle = f" @{escape(username)}" if username else ""
    return f"#{lead_id} {name}{handle}".strip()


def _alert_texts(title: str, step: int, labels: list[str]) -> list[str]:
    head = f"🔔 <b>{title}</b>, шаг {step}: отправлено {len(labels)}"
    texts: list[str] = []
    current = head
    for label in labels:
        if len(current) + len(label) + 1 > ALERT_LIMIT:
            texts.append(current)
            current = head + " (продолжение)"
        current += "\n" + label
    texts.append(current)
    return texts
