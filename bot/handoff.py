"""Hands hot leads over: the managers' card in MANAGER_CHAT_ID (with buttons to take it, mark
it paid or not a fit) and the lead's JSON to CRM_WEBHOOK_URL.

Both go through the `notifications` outbox: the rows are written in the transaction that
makes the lead hot, delivered right after its commit (`kick`), and whatever an error or a
crash left is delivered by the scheduler's `tick`. A card is sent at most once: a card that
may have left is never sent again. A webhook is retried until the CRM accepts it; the CRM
dedupes by the idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiogram import Bot
from aiogram.types import ReplyParameters
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import transactions
from bot.crm import CrmWebhook
from bot.delivery import Attempt, Courier, DeliveryStats
from bot.ratelimit import SendLimiter
from funnel.core import store
from funnel.core.clock import Clock
from funnel.core.models import Lead, Purchase
from funnel.dialogue.flow import Result
from funnel.handoff import cards, crm, notifications, service_level
from funnel.handoff.cards import ManagerCard
from funnel.handoff.notifications import (
    CARD_ERASURE,
    CARD_UPDATE,
    CRM_FORGOTTEN,
    CRM_WEBHOOK,
    MANAGER_CARD,
    PAYMENT_NOTE,
    SLA_ESCALATION,
    SLA_REMINDER,
    WEBHOOK_KINDS,
    Claimed,
    Outcome,
)
from funnel.script.schema import Script
from handlers.i18n import t
from handlers.keyboards import card_keyboard
from handlers.views.manager_card import format_manager_card
from handlers.views.payment_note import format_payment_note
from handlers.views.service_level import format_escalation, format_reminder

log = logging.getLogger("leadbot.handoff")

DEFAULT_BATCH = 50
# How long stopping the bot waits for deliveries on the wire before abandoning them (a card
# abandoned mid-request becomes "unknown" at the next start, a webhook is sent again).
DEFAULT_STOP_GRACE_SECONDS = 5.0
HandOffStats = DeliveryStats


@dataclass(frozen=True)
class CardMessage:
    """A managers' card ready to send: its data (for the buttons) and its text."""

    card: ManagerCard
    text: str


@dataclass(frozen=True)
class CardEdit:
    """A card already in the managers' chat, rendered again from the lead as it is now."""

    card: ManagerCard
    text: str


@dataclass(frozen=True)
class Notice:
    """A service-level notice: to the managers' chat quoting the card, or to an admin."""

    chat_id: int
    text: str
    reply_to: int | None


@dataclass(frozen=True)
class NoteMessage:
    """A short note for the managers' chat (a payment, a refund): text only, no buttons."""

    text: str


class HandOff:
    """Plans the hand-off in the dialogue's transaction and delivers it; `tick` is the
    scheduler's interval job."""

    def __init__(
        self,
        bot: Bot,
        sessions: async_sessionmaker[AsyncSession],
        script: Callable[[], Script],
        clock: Clock,
        manager_chat_id: int | None,
        crm_webhook_url: str | None = None,
        *,
        batch_size: int = DEFAULT_BATCH,
        send_timeout: int | None = None,
        webhook: CrmWebhook | None = None,
        stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
        limiter: SendLimiter | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.bot = bot
        self.sessions = sessions
        self.script = script
        self.clock = clock
        self.manager_chat_id = manager_chat_id
        self.webhook = webhook or (CrmWebhook(crm_webhook_url) if crm_webhook_url else None)
        self.batch_size = batch_size
        self.send_timeout = send_timeout
        self.stop_grace_seconds = stop_grace_seconds
        self._kicks: set[asyncio.Task[None]] = set()
        self.courier = Courier(limiter, "handoff")
        self._round = asyncio.Lock()

    # -- planning, in the dialogue's transaction ------------------------------------------

    async def plan(self, session: AsyncSession, result: Result) -> bool:
        """Writes the notifications `result` calls for into the caller's transaction; True
        when there is something new to deliver after the commit."""
        if result.forgotten is not None:
            planned = await notifications.plan_erasure(
                session, result.forgotten, self.clock.now(), crm=self.webhook is not None
            )
            return planned > 0
        lead_id = result.handoff or result.lead_id
        kinds = notifications.kinds_for(
            hot=result.handoff is not None,
            qualified=result.qualified,
            cards=self.manager_chat_id is not None,
            crm=self.webhook is not None,
        )
        if not kinds or lead_id is None:
            return False
        lead = await store.lead_by_id(session, lead_id)
        if lead is None or lead.deleted_at is not None:
            return False
        return await notifications.plan(session, lead, kinds, self.clock.now()) > 0

    async def plan_payment(
        self, session: AsyncSession, lead_id: int, purchase_id: int, event: str
    ) -> bool:
        """In the transaction that records a payment ("paid") or its refund ("refunded"): the
        managers' note and the CRM's event; True when there is something to deliver."""
        assert event in ("paid", "refunded")
        planned = await notifications.plan_payment(
            session, lead_id, purchase_id, "paid" if event == "paid" else "refunded",
            self.clock.now(), cards=self.manager_chat_id is not None,
            crm=self.webhook is not None,
        )  # fmt: skip
        return planned > 0

    def kick(self) -> None:
        """Delivers what is due now, in the background: the card arrives within seconds of the
        commit, and the update's handler does not wait for the managers' chat or the CRM."""
        task = asyncio.create_task(self._kicked())
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    async def _kicked(self) -> None:
        try:
            await self.tick()
        except Exception:
            log.exception(
                "handoff.kick_failed: the next tick delivers what is left",
                extra={"event": "handoff.kick_failed"},
            )

    async def settle(self) -> None:
        """Waits until the deliveries kicked so far are done."""
        while self._kicks:
            await asyncio.gather(*self._kicks, return_exceptions=True)

    # -- jobs -----------------------------------------------------------------------------

    async def recover(self) -> notifications.Recovered:
        """At start-up: a card a crash left "sending" may have reached the managers and is
        never resent; a webhook is planned again (the CRM dedupes it)."""
        async with self.sessions() as session:
            recovered = await notifications.recover_interrupted(session, self.clock.now())
            await session.commit()
        if recovered.unknown_cards:
            log.warning(
                "handoff.recovered_unknown: the bot stopped while sending these managers' "
                "cards; they may or may not be in the MANAGER_CHAT_ID chat and are not resent. "
                "Look the leads up with /lead <id> if a card is missing",
                extra={
                    "event": "handoff.recovered_unknown",
                    "cards": len(recovered.unknown_cards),
                    "lead_ids": [lead_id for _, lead_id in recovered.unknown_cards],
                },
            )
        if recovered.replanned_webhooks:
            log.info(
                "handoff.recovered_webhooks",
                extra={
                    "event": "handoff.recovered_webhooks",
                    "webhooks": recovered.replanned_webhooks,
                },
            )
        return recovered

    async def tick(self) -> DeliveryStats:
        """Delivers every due notification: each waits for its slot, is claimed, sent, and
        what came of it is recorded."""
        stats = DeliveryStats()
        async with self._round:
            busy: set[int] = set()
            while not self.courier.stopping:
                now = self.clock.now()

                async def read(now: datetime = now) -> list[Claimed]:
                    async with self.sessions() as session:
                        return await notifications.due(session, now, self.batch_size, busy)

                rows = await transactions.retrying(read, "handoff.due")
                if not rows:
                    break
                busy.update(row.id for row in rows)
                tasks = [self.courier.spawn(self._deliver_and_record(row)) for row in rows]
                results = await asyncio.gather(*tasks, return_exceptions=True)
                for result in results:
                    if isinstance(result, Outcome):
                        stats.count(result.status)
                    elif isinstance(result, Exception):
                        log.error(
                            "handoff.deliver_crashed",
                            extra={"event": "handoff.deliver_crashed",
                                   "error": type(result).__name__},
                        )  # fmt: skip
                if len(rows) < self.batch_size:
                    break
        if stats.busy:
            log.info("handoff.tick", extra={"event": "handoff.tick", **stats.as_fields()})
        return stats

    async def _deliver_and_record(self, row: Claimed) -> Outcome | None:
        """One row, recorded as soon as it is done: a card is "sent" (and its message known
        to the managers' buttons) without waiting for a slow CRM in the same batch."""
        outcome = await self._deliver(row)
        if outcome is None:
            return None

        async def write() -> None:
            async with self.sessions() as session:
                await notifications.record(session, [outcome], self.clock.now())
                await session.commit()

        await transactions.retrying(write, "handoff.record")
        return outcome

    async def close(self) -> None:
        """The graceful stop: cards waiting for the group's limit stay planned, requests on
        the wire finish (for a while), then the CRM session closes."""
        await self.courier.drain(self.stop_grace_seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.stop_grace_seconds):
                async with self._round:
                    pass
        if self._kicks:
            _, pending = await asyncio.wait(set(self._kicks), timeout=self.stop_grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self.webhook is not None:
            await self.webhook.close()

    # -- one delivery ---------------------------------------------------------------------

    async def _claim(self, row_id: int) -> bool:
        async def claim() -> set[int]:
            async with self.sessions() as session:
                claimed = await notifications.claim(session, [row_id])
                await session.commit()
            return claimed

        return row_id in await transactions.retrying(claim, "handoff.claim")

    async def _deliver(self, row: Claimed) -> Outcome | None:
        try:
            prepared = await self._prepare(row)
        except Exception as error:
            # Nothing has left yet: safe to try again.
            log.exception(
                "handoff.render_failed",
                extra={"event": "handoff.render_failed", "notification_id": row.id},
            )
            return self._retry(row, type(error).__name__)
        if isinstance(prepared, Outcome):
            return prepared
        claim = functools.partial(self._claim, row.id)
        if isinstance(prepared, CardEdit):
            return await self._edit_card(row, prepared, claim)
        if isinstance(prepared, Notice):
            return await self._send_notice(row, prepared, claim)
        if isinstance(prepared, CardMessage):
            return await self._send_card(row, prepared, claim)
        if isinstance(prepared, NoteMessage):
            return await self._send_note(row, prepared, claim)
        if isinstance(prepared, str):
            return await self._erase_card(row, prepared, claim)
        return await self._post_webhook(row, *prepared, claim)

    async def _prepare(
        self, row: Claimed
    ) -> (
        Outcome | CardMessage | CardEdit | Notice | NoteMessage | str | tuple[dict[str, Any], str]
    ):
        """The card, the erasure's text, or the webhook's payload and key, rendered from the
        lead as it is now; or the outcome when there is nothing to deliver any more."""
        script = self.script()
        async with self.sessions() as session:
            lead = await store.lead_by_id(session, row.lead_id)
            if row.kind == CARD_ERASURE:
                # Nothing of the person is left on the card, in the school's language.
                return t("card.erased", lang=script.language, lead=row.lead_id)
            if row.kind in (PAYMENT_NOTE, notifications.CRM_PURCHASE):
                return await self._prepare_payment(session, script, row, lead)
            if row.kind == CRM_FORGOTTEN:
                if self.webhook is None:
                    return Outcome(row.id, "cancelled", "CRM_WEBHOOK_URL is not set")
                key = crm.idempotency_key(row.id, row.lead_id, row.occasion, row.created_at)
                return crm.forgotten_payload(row.lead_id, key, row.created_at), key
            if lead is None or lead.deleted_at is not None:
                return Outcome(row.id, "cancelled", "the lead's data was erased (/forget)")
            if row.kind in (SLA_REMINDER, SLA_ESCALATION, CARD_UPDATE):
                return await self._prepare_loop(session, script, row, lead)
            if row.kind == MANAGER_CARD:
                if self.manager_chat_id is None:
                    return Outcome(row.id, "cancelled", "MANAGER_CHAT_ID is not set")
                card = await cards.manager_card(session, script, lead)
                return CardMessage(card, format_manager_card(card, lang=script.language))
            if row.kind == CRM_WEBHOOK:
                if self.webhook is None:
                    return Outcome(row.id, "cancelled", "CRM_WEBHOOK_URL is not set")
                key = crm.idempotency_key(row.id, row.lead_id, row.occasion, row.created_at)
                return await crm.lead_payload(session, script, lead, key), key
        return Outcome(row.id, "failed", f"unknown kind {row.kind!r}")

    async def _prepare_loop(
        self, session: AsyncSession, script: Script, row: Claimed, lead: Lead
    ) -> Outcome | CardEdit | Notice:
        """The managers' loop's rows: a card edited to show the lead as it is now; a reminder
        or an escalation, unless a manager took the lead meanwhile."""
        if row.chat_id is None or row.message_id is None:
            return Outcome(row.id, "cancelled", "the card's message is not known")
        if row.kind == CARD_UPDATE:
            card = await cards.manager_card(session, script, lead)
            return CardEdit(card, format_manager_card(card, lang=script.language))
        if lead.manager_id is not None:
            return Outcome(row.id, "cancelled", "a manager took the lead meanwhile")
        called = await service_level.card_called_at(session, row.occasion)
        waited = self.clock.now() - (called or row.created_at)
        lang = script.language
        if row.kind == SLA_REMINDER:
            text = format_reminder(lead.id, waited, lang=lang)
            return Notice(row.chat_id, text, row.message_id)
        name = " ".join(p for p in (lead.first_name, lead.last_name) if p)
        return Notice(row.chat_id, format_escalation(lead.id, name, waited, lang=lang), None)

    async def _edit_card(
        self, row: Claimed, edit: CardEdit, claim: Callable[[], Awaitable[bool]]
    ) -> Outcome | None:
        assert row.chat_id is not None and row.message_id is not None
        attempt = await self.courier.deliver(
            row.chat_id,
            claim,
            functools.partial(
                self.bot.edit_message_text,
                edit.text,
                chat_id=row.chat_id,
                message_id=row.message_id,
                reply_markup=card_keyboard(edit.card, self.script().language),
                request_timeout=self.send_timeout,
            ),
        )
        if attempt.verdict == "refused":
            # Unchanged, deleted by a manager or too old to edit: nothing more to do.
            return Outcome(row.id, "failed", attempt.error)
        return self._telegram_outcome(row, attempt)

    async def _send_notice(
        self, row: Claimed, notice: Notice, claim: Callable[[], Awaitable[bool]]
    ) -> Outcome | None:
        reply = None
        if notice.reply_to is not None:
            reply = ReplyParameters(message_id=notice.reply_to, allow_sending_without_reply=True)
        attempt = await self.courier.deliver(
            notice.chat_id,
            claim,
            functools.partial(
                self.bot.send_message,
                notice.chat_id,
                notice.text,
                reply_parameters=reply,
                request_timeout=self.send_timeout,
            ),
        )
        if attempt.verdict in ("refused", "blocked"):
            # An admin who never opened the bot, or a chat the bot left: a person must act.
            log.error(
                "handoff.notice_failed: Telegram refused a service-level notice; an admin must "
                "/start the bot once, and the bot must stay in MANAGER_CHAT_ID",
                extra={"event": "handoff.notice_failed", "notification_id": row.id,
                       "lead_id": row.lead_id, "kind": row.kind, "error": attempt.error},
            )  # fmt: skip
            return Outcome(row.id, "failed", (attempt.error or attempt.verdict)[:250])
        if attempt.verdict == "sent":
            log.info(
                "handoff.notice_sent",
                extra={"event": "handoff.notice_sent", "lead_id": row.lead_id,
                       "kind": row.kind},
            )  # fmt: skip
        return self._telegram_outcome(row, attempt)

    async def _prepare_payment(
        self, session: AsyncSession, script: Script, row: Claimed, lead: Any
    ) -> Outcome | NoteMessage | tuple[dict[str, Any], str]:
        """A payment's note for the managers, or its event for the CRM (no personal data in
        either: the lead's number, the offer and the money)."""
        occasion = notifications.payment_occasion(row.occasion)
        purchase = await session.get(Purchase, occasion[1]) if occasion else None
        if occasion is None or purchase is None:
            return Outcome(row.id, "cancelled", "the purchase is not in the database")
        event = occasion[0]
        if row.kind == PAYMENT_NOTE:
            if self.manager_chat_id is None:
                return Outcome(row.id, "cancelled", "MANAGER_CHAT_ID is not set")
            offer = script.offer(purchase.offer)
            text = format_payment_note(
                row.lead_id, purchase.amount, purchase.currency,
                offer.title if offer else purchase.offer, event, lang=script.language,
            )  # fmt: skip
            return NoteMessage(text)
        if self.webhook is None:
            return Outcome(row.id, "cancelled", "CRM_WEBHOOK_URL is not set")
        key = crm.idempotency_key(row.id, row.lead_id, row.occasion, row.created_at)
        return crm.purchase_payload(purchase, event, key, lead), key

    async def _send_note(
        self, row: Claimed, message: NoteMessage, claim: Callable[[], Awaitable[bool]]
    ) -> Outcome | None:
        chat_id = self.manager_chat_id
        assert chat_id is not None
        attempt = await self.courier.deliver(
            chat_id,
            claim,
            functools.partial(
                self.bot.send_message, chat_id, message.text, request_timeout=self.send_timeout
            ),
        )
        return self._telegram_outcome(row, attempt)

    async def _send_card(
        self, row: Claimed, message: CardMessage, claim: Callable[[], Awaitable[bool]]
    ) -> Outcome | None:
        chat_id = self.manager_chat_id
        assert chat_id is not None
        attempt = await self.courier.deliver(
            chat_id,
            claim,
            functools.partial(
                self.bot.send_message,
                chat_id,
                message.text,
                reply_markup=card_keyboard(message.card, self.script().language),
                request_timeout=self.send_timeout,
            ),
        )
        outcome = self._telegram_outcome(row, attempt)
        if outcome is not None and outcome.status == "sent":
            message = attempt.result
            log.info(
                "handoff.card_sent",
                extra={"event": "handoff.card_sent", "lead_id": row.lead_id,
                       "attempt": row.attempts},
            )  # fmt: skip
            return Outcome(row.id, "sent", chat_id=chat_id,
                           message_id=getattr(message, "message_id", None))  # fmt: skip
        return outcome

    async def _erase_card(
        self, row: Claimed, text: str, claim: Callable[[], Awaitable[bool]]
    ) -> Outcome | None:
        if row.chat_id is None or row.message_id is None:
            return Outcome(row.id, "cancelled", "the card's message is not known")
        attempt = await self.courier.deliver(
            row.chat_id,
            claim,
            functools.partial(
                self.bot.edit_message_text,
                text,
                chat_id=row.chat_id,
                message_id=row.message_id,
                reply_markup=None,
                request_timeout=self.send_timeout,
            ),
        )
        if attempt.verdict == "refused":
            # Deleted by a manager, or too old to edit: nothing of the lead is left to erase.
            return Outcome(row.id, "failed", attempt.error)
        return self._telegram_outcome(row, attempt)

    def _telegram_outcome(self, row: Claimed, attempt: Attempt) -> Outcome | None:
        """Cards and their edits: sent; tried again when refused before delivery; failed when
        Telegram says no for good; unknown (never resent) when it may have arrived."""
        verdict = attempt.verdict
        if verdict == "sent":
            return Outcome(row.id, "sent")
        if verdict == "retry":
            later = None
            if attempt.retry_after is not None:
                later = self.clock.now() + timedelta(seconds=attempt.retry_after)
            return self._retry(row, attempt.error or "refused", not_before=later)
        if verdict in ("refused", "blocked"):
            return self._refused(row, attempt.error or verdict)
        if verdict == "unknown":
            return self._unknown(row, attempt.error or "no answer")
        return None  # skipped: never claimed

    async def _post_webhook(
        self, row: Claimed, payload: dict[str, Any], key: str,
        claim: Callable[[], Awaitable[bool]],
    ) -> Outcome | None:  # fmt: skip
        assert self.webhook is not None
        attempt = await self.courier.deliver(
            None, claim, functools.partial(self.webhook.post, payload, key)
        )
        if attempt.verdict == "skipped":
            return None
        status = attempt.result if attempt.verdict == "sent" else None
        if isinstance(status, int) and 200 <= status < 300:
            log.info(
                "handoff.webhook_sent",
                extra={
                    "event": "handoff.webhook_sent",
                    "lead_id": row.lead_id,
                    "kind": row.kind,
                    "status": status,
                    "attempt": row.attempts,
                },
            )
            return Outcome(row.id, "sent")
        # The CRM dedupes by the idempotency key, so even a request that may have arrived is
        # sent again.
        problem = f"HTTP {status}" if status is not None else (attempt.error or "no answer")
        return self._retry(row, problem)

    # -- outcomes and their logs ----------------------------------------------------------

    def _retry(self, row: Claimed, error: str, *, not_before: datetime | None = None) -> Outcome:
        now = self.clock.now()
        outcome = notifications.retry_or_give_up(row, now, error, not_before=not_before)
        setting = "CRM_WEBHOOK_URL" if row.kind in WEBHOOK_KINDS else "MANAGER_CHAT_ID"
        fields = {
            "notification_id": row.id,
            "lead_id": row.lead_id,
            "kind": row.kind,
            "attempt": row.attempts,
            "error": error,
        }
        if outcome.status == "failed":
            log.error(
                f"handoff.gave_up: not delivered for a day of tries; check {setting} and "
                "that the receiving side is up",
                extra={"event": "handoff.gave_up", **fields},
            )
        else:
            assert outcome.retry_at is not None
            log.warning(
                f"handoff.retry: not delivered, tried again later; if this repeats, check "
                f"{setting} and that the receiving side is up",
                extra={
                    "event": "handoff.retry",
                    "retry_in": round((outcome.retry_at - now).total_seconds()),
                    **fields,
                },
            )
        return outcome

    def _refused(self, row: Claimed, reason: str) -> Outcome:
        reason = reason[: notifications.MAX_ERROR]
        log.error(
            "handoff.card_failed: Telegram refused the managers' card; check MANAGER_CHAT_ID "
            "and that the bot is a member of that chat",
            extra={
                "event": "handoff.card_failed",
                "notification_id": row.id,
                "lead_id": row.lead_id,
                "manager_chat_id": self.manager_chat_id,
                "error": reason,
            },
        )
        return Outcome(row.id, "failed", reason)

    def _unknown(self, row: Claimed, text: str) -> Outcome:
        log.warning(
            "handoff.card_unknown: no answer from Telegram; the card may be in the managers' "
            "chat and is not resent. Look the lead up with /lead <id> if it is missing",
            extra={
                "event": "handoff.card_unknown",
                "notification_id": row.id,
                "lead_id": row.lead_id,
                "error": text,
            },
        )
        return Outcome(row.id, "unknown", text)
