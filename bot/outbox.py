"""Delivery of the touch outbox: each tick plans due touches, then sends them through the
rate-limited Bot at most once each, recording what Telegram answered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import InlineKeyboardMarkup
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from bot.delivery import Attempt, Claims, Courier, DeliveryStats, safe_error
from bot.ratelimit import SendLimiter
from funnel.broadcasts import broadcasts
from funnel.core.clock import Clock
from funnel.core.models import Broadcast, Lead
from funnel.dialogue.replies import Reply
from funnel.experiments import holdout
from funnel.followups import planning, rendering, touch_queue
from funnel.followups.decision import Cancel, HoldOut, Postpone, Send, decide
from funnel.followups.sending_rules import in_window
from funnel.followups.touch_queue import Outcome
from funnel.handoff.payments import Invoice
from funnel.script.schema import Script
from handlers.keyboards import keyboard
from handlers.payments import deliver_invoice, offer_invoice
from handlers.views.alerts import alert_texts, lead_label
from handlers.views.broadcasts import broadcast_keyboard

log = logging.getLogger("leadbot.outbox")

# Enough parallel requests that the rate limiter, not round trips, sets the pace.
DEFAULT_CONCURRENCY = 50
# How long one delivery round may keep claiming new batches before the tick yields to
# planning; in-flight sends always finish.
DEFAULT_ROUND_SECONDS = 300.0
# How long a graceful stop waits for the requests on the wire.
DEFAULT_STOP_GRACE_SECONDS = 10.0
# Leads whose cycle began this long (in wall seconds) before a planning watermark are read
# again: covers dialogue transactions that stamped the time, then committed a bit later.
PLAN_MARGIN_WALL_SECONDS = 120.0
# A touch refused before delivery without a hint when to come back (no connection).
RETRY_SECONDS = 30.0

TickStats = DeliveryStats


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
    # A broadcast's own buttons (links, its reply button) instead of the reply's.
    markup: InlineKeyboardMarkup | None = None
    # The step's offer as an invoice, sent right after the text.
    invoice: Invoice | None = None


@dataclass
class _Round:
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    alerts: dict[tuple[str, int], list[str]] = field(default_factory=dict)


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
        limiter: SendLimiter | None = None,
        provider_token: str | None = None,
    ) -> None:
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.sessions = sessions
        self.bot = bot
        self.script = script
        self.clock = clock
        self.zone = zone
        self.manager_chat_id = manager_chat_id
        self.provider_token = provider_token
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.send_timeout = send_timeout
        self.round_seconds = round_seconds
        # Without a limiter (tests of the decision alone) the request middleware paces.
        self.courier = Courier(limiter, "touches")
        # This instance's name on the touches it queues (touch_queue.due_touches).
        self.instance = uuid.uuid4().hex
        bind = sessions.kw.get("bind")
        self._leases_shared = getattr(getattr(bind, "dialect", None), "name", "") == "postgresql"
        self._round = asyncio.Lock()
        if plan_margin is None:
            # In scaled (demo) time a wall second is many funnel seconds.
            scale = float(getattr(clock, "scale", 1.0))
            plan_margin = timedelta(seconds=PLAN_MARGIN_WALL_SECONDS * max(scale, 1.0))
        self.plan_margin = plan_margin

    # -- jobs -----------------------------------------------------------------------------

    async def recover(self) -> int:
        """At start-up: touches a crash left "sending" become "unknown" (they may have left),
        and every lease is given back: an instance killed with touches in its queue (kill -9,
        no graceful stop) would otherwise hold them for the rest of their lease. A live
        instance's queue may then be read twice for a batch; the claims still decide."""
        async with self.sessions() as session:
            count = await touch_queue.recover_interrupted(session)
            if self._leases_shared:
                await touch_queue.release_leases(session)
            await session.commit()
        if count:
            log.warning(
                "outbox.recovered_unknown: these touches may or may not have reached the "
                "leads; they are not resent",
                extra={"event": "outbox.recovered_unknown", "touches": count},
            )
        return count

    async def tick(self) -> DeliveryStats:
        """One round: plan what campaign rules make due, then deliver what is due."""
        started = time.monotonic()
        now = self.clock.now()
        planned, idle = await self._plan(now)
        stats = DeliveryStats() if idle else await self.deliver(now)
        stats.planned = planned
        stats.seconds = time.monotonic() - started
        if stats.busy:
            log.info(
                "outbox.tick",
                extra={"event": "outbox.tick", **stats.as_fields()},
            )
        return stats

    async def plan(self, now: datetime) -> int:
        """Inserts the touches that became due by `now`; returns how many are new."""
        return (await self._plan(now))[0]

    async def _plan(self, now: datetime) -> tuple[int, bool]:
        """Plans as `plan` does; also tells whether the round is idle (nothing planned,
        waiting or due), so that delivery can be skipped. Most ticks are: one read in the
        planning transaction spares them the broadcast writer's and the claim's own."""
        async with self.sessions() as session:
            count = await planning.plan_touches(
                session, self.script(), now, margin=self.plan_margin
            )
            # As the first delivery batch would read it (deliver: the later of the two).
            moment = max(now, self.clock.now())
            check = select(broadcasts.any_waiting(now), touch_queue.any_due(moment))
            casting, due = (await session.execute(check)).one()
            await session.commit()
        if casting:
            count += await self.plan_broadcasts(now)
        return count, not (count or casting or due)

    async def plan_broadcasts(self, now: datetime) -> int:
        """Writes the recipients of the broadcasts whose time has come, one batch a
        transaction, so a stop in between resumes after the last batch written."""
        count = 0
        while not self.courier.stopping:

            async def write() -> broadcasts.Written | None:
                async with self.sessions() as session:
                    await touch_queue.take_write_lock(session)
                    written = await broadcasts.write_recipients(session, self.script(), now)
                    await session.commit()
                return written

            written = await transactions.retrying(write, "outbox.broadcast_recipients")
            if written is None:
                break
            count += written.recipients
            if not written.more:
                log.info(
                    "broadcast.recipients_written",
                    extra={"event": "broadcast.recipients_written",
                           "broadcast_id": written.broadcast_id},
                )  # fmt: skip
        return count

    async def deliver(self, now: datetime) -> DeliveryStats:
        """Sends the due touches: batches are read and checked, then each touch waits for its
        rate-limit slot, is claimed and sent (bounded concurrency, so the rate limiter is the
        only throttle); results are written as they come in."""
        round_ = _Round()
        started = time.monotonic()
        claims = Claims(functools.partial(self._claim_many, floor=now), "outbox.claim")
        queue: deque[_Outgoing] = deque()
        inflight: dict[asyncio.Task[Attempt], _Outgoing] = {}
        exhausted = False
        async with self._round:
            while True:
                if self.courier.stopping:
                    queue.clear()
                    exhausted = True
                if not queue and not exhausted:
                    if time.monotonic() - started > self.round_seconds:
                        exhausted = True
                    else:
                        moment = max(now, self.clock.now())
                        busy = {item.touch_id for item in inflight.values()}
                        batch, examined = await self._prepare(moment, round_, busy)
                        queue.extend(batch)
                        exhausted = examined < self.batch_size
                while queue and len(inflight) < self.concurrency:
                    item = queue.popleft()
                    task = self.courier.spawn(self._deliver_one(item, claims))
                    inflight[task] = item
                if not inflight:
                    if queue or not exhausted:
                        continue
                    break
                done, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                finished = [(inflight.pop(task), task) for task in done]
                await self._record(
                    [(item, task.result()) for item, task in finished if not task.cancelled()],
                    round_,
                )
                if queue and len(inflight) > self.concurrency // 2:
                    continue
        if not self.courier.stopping:
            await self._alert_managers(round_)
        return round_.stats

    async def stop(self, grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS) -> None:
        """The graceful stop: touches waiting for a slot stay planned, the requests on the
        wire finish and are recorded; the tick in progress ends."""
        await self.courier.drain(grace_seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_seconds):
                async with self._round:
                    pass
        if self._leases_shared:
            try:
                async with self.sessions() as session, session.begin():
                    await touch_queue.release_leases(session, self.instance)
            except Exception as error:  # the leases run out on their own
                log.warning(
                    "outbox.leases_kept: the other instances take this one's queued "
                    "touches when their leases run out",
                    extra={"event": "outbox.leases_kept", "error": type(error).__name__},
                )

    async def _deliver_one(self, item: _Outgoing, claims: Claims) -> Attempt:
        return await self.courier.deliver(
            item.chat_id,
            functools.partial(claims.claim, item.touch_id),
            functools.partial(self._send_touch, item),
        )

    async def _send_touch(self, item: _Outgoing) -> Any:
        """The touch's text, then its offer's invoice. The touch is sent once its text is;
        the invoice waits for a slot of its own and is best effort (a failure is logged)."""
        message = await self.bot.send_message(
            chat_id=item.chat_id,
            text=item.reply.text,
            parse_mode="HTML",
            reply_markup=item.markup or keyboard(item.reply),
            request_timeout=self.send_timeout,
        )
        if item.invoice is not None:
            try:
                if self.courier.limiter is not None:
                    await self.courier.limiter.acquire(item.chat_id)
                await deliver_invoice(
                    self.bot, item.chat_id, item.invoice, self.provider_token,
                    request_timeout=self.send_timeout,
                )  # fmt: skip
            except Exception as error:  # the text left: the touch is sent whatever this is
                log.warning(
                    "outbox.invoice_not_sent: the touch's text was sent, its invoice was not",
                    extra={"event": "outbox.invoice_not_sent", "touch_id": item.touch_id,
                           "error": safe_error(error)},
                )  # fmt: skip
        return message

    # -- steps ----------------------------------------------------------------------------

    async def _prepare(
        self, now: datetime, round_: _Round, busy: Collection[int] = ()
    ) -> tuple[list[_Outgoing], int]:
        """Claims a batch of due touches, cancels the obsolete, postpones those outside the
        window or over the cap, and renders the rest."""
        script = self.script()
        outgoing: list[_Outgoing] = []
        async with self.sessions() as session:
            if not await touch_queue.lock_if_due(session, now, busy):
                return [], 0
            pairs = await touch_queue.due_touches(
                session, now, self.batch_size, busy, holder=self.instance
            )
            if not pairs:
                return [], 0
            lead_ids = sorted({touch.lead_id for touch, _ in pairs})
            since = now - script.frequency_cap.per
            history = await touch_queue.recent_sends(session, lead_ids, since)
            casts = await broadcasts.broadcasts_by_id(
                session, filter(None, (broadcasts.broadcast_of(t.campaign) for t, _ in pairs))
            )
            for touch, lead in pairs:
                cast_id = broadcasts.broadcast_of(touch.campaign)
                sent = history.get(touch.lead_id, [])
                if cast_id is not None:
                    cast = casts.get(cast_id)
                    decision = broadcasts.decide(lead, cast, script, now, sent, self.zone)
                else:
                    decision = decide(touch, lead, script, now, sent, self.zone)
                if isinstance(decision, Cancel):
                    await touch_queue.cancel_touch(session, touch.id, decision.reason)
                    round_.stats.cancelled += 1
                elif isinstance(decision, Postpone):
                    await touch_queue.postpone_touch(session, touch.id, decision.until,
                                                   decision.why)  # fmt: skip
                    round_.stats.postponed += 1
                elif isinstance(decision, HoldOut):
                    await holdout.hold_out(session, touch.id, now)
                elif isinstance(decision, Send) and lead is not None and lead.chat_id:
                    if cast_id is not None:
                        history.setdefault(lead.id, []).append(now)
                        outgoing.append(self._broadcast_item(touch.id, lead, casts[cast_id]))
                        continue
                    campaign = script.campaign(touch.campaign)
                    assert campaign is not None  # decide() cancels touches of removed ones
                    history.setdefault(lead.id, []).append(now)
                    reply = rendering.render_touch(script, campaign, touch.step, lead, now)
                    outgoing.append(
                        _Outgoing(
                            touch_id=touch.id,
                            lead_id=lead.id,
                            chat_id=lead.chat_id,
                            campaign=campaign.id,
                            step=touch.step,
                            reply=reply,
                            notify_managers=campaign.steps[touch.step - 1].notify_managers,
                            lead_label=lead_label(lead.id, lead.first_name, lead.username),
                            invoice=offer_invoice(
                                script, reply.offer, lead.id, self.provider_token
                            ),
                        )
                    )
            await session.commit()
        return outgoing, len(pairs)

    def _broadcast_item(self, touch_id: int, lead: Lead, broadcast: Broadcast) -> _Outgoing:
        assert lead.chat_id is not None
        arm = broadcasts.arm_of(broadcast.id, lead.id, broadcast.text_b is not None)
        text = broadcasts.text_for(broadcast, arm, self.script(), lead.first_name)
        return _Outgoing(
            touch_id=touch_id, lead_id=lead.id, chat_id=lead.chat_id,
            campaign=broadcasts.campaign_of(broadcast.id), step=broadcasts.STEP,
            reply=Reply(text), notify_managers=False, lead_label="",
            markup=broadcast_keyboard(broadcast.id, broadcast.buttons),
        )  # fmt: skip

    async def _claim_many(self, touch_ids: list[int], floor: datetime) -> set[int]:
        """Marks touches "sending" and commits, right as their requests leave; anything that
        went stale meanwhile (a reply, /stop, a block, the window closing) stays planned and
        is decided again by the next batch."""
        now = max(floor, self.clock.now())
        # Outside the window only test runs (/test_funnel) may go: their days are seconds.
        tests_only = not in_window(now, self.script().send_window, self.zone)
        async with self.sessions() as session:
            claimed = await touch_queue.claim_for_sending(
                session, touch_ids, now, test_runs_only=tests_only
            )
            await session.commit()
        return claimed

    def _outcome(self, item: _Outgoing, attempt: Attempt) -> Outcome | None:
        now = self.clock.now()
        fields = {"event": "outbox.send_" + attempt.verdict, "touch_id": item.touch_id,
                  "lead_id": item.lead_id, "campaign": item.campaign, "step": item.step,
                  "error": attempt.error}  # fmt: skip
        verdict = attempt.verdict
        if verdict == "sent":
            return Outcome(item.touch_id, item.lead_id, "sent", now)
        if verdict == "retry":
            retry_at = now + timedelta(seconds=attempt.retry_after or RETRY_SECONDS)
            return Outcome(item.touch_id, item.lead_id, "planned", now, error=attempt.error,
                           retry_at=retry_at)  # fmt: skip
        if verdict == "blocked":
            return Outcome(item.touch_id, item.lead_id, "failed", now, reason="blocked",
                           error=attempt.error)  # fmt: skip
        if verdict == "refused":
            log.warning(
                "outbox.send_failed: Telegram refused the touch; check the campaign's text "
                "and buttons in the script",
                extra=fields,
            )
            return Outcome(item.touch_id, item.lead_id, "failed", now, reason="bad_request",
                           error=attempt.error)  # fmt: skip
        if verdict == "unknown":
            log.warning(
                "outbox.send_unknown: no answer from Telegram; the touch may have reached the "
                "lead and is not resent. Many of these mean the network or TELEGRAM_API_URL "
                "is unhealthy",
                extra=fields,
            )
            return Outcome(item.touch_id, item.lead_id, "unknown", now, reason="no_answer",
                           error=attempt.error)  # fmt: skip
        return None  # skipped: never claimed, still planned

    async def _record(self, results: list[tuple[_Outgoing, Attempt]], round_: _Round) -> None:
        pairs = [(item, self._outcome(item, attempt)) for item, attempt in results]
        outcomes = [outcome for _, outcome in pairs if outcome is not None]
        if not outcomes:
            return

        async def write() -> Mapping[str, int]:
            async with self.sessions() as session:
                counts = await touch_queue.record_outcomes(session, outcomes, self.clock.now())
                await session.commit()
            return counts

        counts = await transactions.retrying(write, "outbox.record")
        stats = round_.stats
        for status, n in counts.items():
            stats.count(status, n)
        for item, outcome in pairs:
            if outcome is not None and outcome.status == "sent" and item.notify_managers:
                key = (item.campaign, item.step)
                round_.alerts.setdefault(key, []).append(item.lead_label)

    # -- managers' alerts -----------------------------------------------------------------

    async def _alert_managers(self, round_: _Round) -> None:
        """One message per campaign step per round (the managers' chat allows 20 a minute)."""
        if self.manager_chat_id is None or not round_.alerts:
            return
        script = self.script()
        for (campaign_id, step), labels in round_.alerts.items():
            campaign = script.campaign(campaign_id)
            title = campaign.title if campaign else campaign_id
            for text in alert_texts(title, step, labels, script.language):
                try:
                    await self.bot.send_message(self.manager_chat_id, text, parse_mode="HTML")
                except TelegramAPIError as error:
                    log.error(
                        "outbox.alert_failed: check MANAGER_CHAT_ID and that the bot is in "
                        "that chat",
                        extra={"event": "outbox.alert_failed", "error": safe_error(error)},
                    )
                    return
