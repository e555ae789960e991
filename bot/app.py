"""The running application: database, script, Telegram client with the rate limiter,
dispatcher, the outbox and its scheduler; started and stopped as one."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, LinkPreviewOptions
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from bot import db, erasure, middlewares, transactions
from bot.callback_signing import SignCallbacks
from bot.delivery_middleware import RateLimitMiddleware, WriteGuardMiddleware
from bot.dispatcher import create_dispatcher
from bot.handoff import HandOff
from bot.inbox import Inbox
from bot.intake import InboundLimit, Intake, Poller
from bot.managers_loop import JOB_ID as MANAGERS_JOB_ID
from bot.managers_loop import ManagersLoop
from bot.metrics import Metrics, RequestMetrics, UpdateMetrics, install_retry_counter
from bot.outbox import Outbox
from bot.ratelimit import RateLimiter, SendLimiter
from bot.replies import Replies
from bot.scheduler import add_daily_job, add_interval_job, create_scheduler
from bot.scripts import WATCH_SECONDS, ScriptHolder, announce_reload
from bot.settings import Settings
from bot.shared_limits import SharedRateLimiter
from bot.webhook import WebServer, allowed_updates
from funnel.core import store
from funnel.core.clock import Clock, ScaledClock, SystemClock
from funnel.handoff.payments import unsendable_offers
from funnel.reports.digest import daily_digest
from handlers.callbacks import Signer
from handlers.i18n import N_, t
from handlers.views.digest import format_digest_html

log = logging.getLogger("leadbot.app")


def prospect_commands(language: str) -> list[BotCommand]:
    """The menu prospects see, in the school's language (that of its script)."""
    return [
        BotCommand(command="start", description=t("menu.start", lang=language)),
        BotCommand(command="help", description=t("menu.help", lang=language)),
        BotCommand(command="stop", description=t("menu.stop", lang=language)),
        BotCommand(command="forget", description=t("menu.forget", lang=language)),
    ]


PAID_BROADCAST_RATE = 1000.0
HANDOFF_JOB_ID = "handoff_tick"
MANAGERS_TICK_FUNNEL_SECONDS = 20.0


def managers_interval(settings: Settings) -> float:
    """Seconds between the managers' ticks: about every MANAGERS_TICK_FUNNEL_SECONDS of
    funnel time (minutes are the service level's unit), never more often than the funnel
    tick, so the outbox's busy waves do not share the database with it for nothing."""
    return max(settings.tick_seconds, MANAGERS_TICK_FUNNEL_SECONDS / settings.time_scale)


def make_clock(settings: Settings) -> Clock:
    return SystemClock() if settings.time_scale == 1 else ScaledClock(settings.time_scale)


def make_limiter(settings: Settings, token: str) -> SendLimiter:
    """The local limiter for one instance; with REDIS_URL, limits shared by every instance
    of this bot (keyed by the bot's id, the token's first part)."""
    rate = PAID_BROADCAST_RATE if settings.paid_broadcast else settings.rate_per_second
    if settings.redis_url is None:
        return RateLimiter(rate_per_second=rate)
    bot_id = token.partition(":")[0]
    return SharedRateLimiter.from_url(
        settings.redis_url.get_secret_value(),
        f"{settings.redis_prefix}:{bot_id}:",
        rate_per_second=rate,
    )


def make_bot(settings: Settings, token: str, limiter: SendLimiter, signer: Signer) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    # First, so the outermost: no request, and no wait for a send slot, inside a write.
    session.middleware(WriteGuardMiddleware())
    # Signs every request's buttons once, before a 429 makes the limiter send it again.
    session.middleware(SignCallbacks(signer))
    session.middleware(RateLimitMiddleware(limiter))
    return Bot(
        token,
        session=session,
        default=DefaultBotProperties(
            parse_mode=ParseMode.HTML, link_preview=LinkPreviewOptions(is_disabled=True)
        ),
    )


class App:
    def __init__(
        self,
        settings: Settings,
        *,
        token: str,
        clock: Clock | None = None,
        limiter: SendLimiter | None = None,
        retry_seconds: float = transactions.DEFAULT_BUDGET_SECONDS,
        scripts: ScriptHolder | None = None,
    ) -> None:
        """`scripts`: the script already read (start-up checks it first: read once)."""
        self.settings = settings
        self.clock = clock or make_clock(settings)
        self.created_at = self.clock.now()
        self.scripts = scripts or ScriptHolder(settings.script_path)
        self.engine: AsyncEngine = db.create_engine(settings.database_url)
        self.sessions = db.sessionmaker(self.engine)
        self.limiter = limiter or make_limiter(settings, token)
        # The buttons' key: the bot's signature on what it sends, checked on every press.
        self.signer = Signer.from_token(token)
        self.bot = make_bot(settings, token, self.limiter, self.signer)
        self.metrics = Metrics()
        # After the limiter's middleware: each request on the wire is counted, 429s included.
        self.bot.session.middleware(RequestMetrics(self.metrics))
        self._uncount_retries = install_retry_counter(self.metrics)
        self.handoff = HandOff(
            self.bot,
            self.sessions,
            self.scripts,
            self.clock,
            settings.manager_chat_id,
            settings.crm_webhook,
            limiter=self.limiter,
        )
        self.outbox = Outbox(
            sessions=self.sessions,
            bot=self.bot,
            script=self.scripts,
            clock=self.clock,
            zone=settings.zone,
            manager_chat_id=settings.manager_chat_id,
            limiter=self.limiter,
            provider_token=settings.provider_token,
        )
        # The replies to updates, committed with them (bot/replies.py).
        self.replies = Replies(
            self.bot, self.sessions, self.clock, self.limiter, self.mark_blocked,
        )  # fmt: skip
        self.dispatcher = create_dispatcher(
            settings, self.sessions, self.scripts, self.clock, self.handoff,
            retry_seconds=retry_seconds, outer=[UpdateMetrics(self.metrics)],
            replies=self.replies, signer=self.signer,
        )  # fmt: skip
        # One inbox and one fair intake for both modes (bot/inbox.py, bot/intake.py).
        self.inbox = Inbox(self.sessions, self.clock, self.bot.id)
        self.intake = Intake(
            self.dispatcher, self.bot, self.inbox,
            limit=InboundLimit(settings.inbound_per_minute, settings.inbound_burst),
            staff=settings.admin_ids, staff_chat=settings.manager_chat_id,
            slow_down=self.ask_to_slow_down,
            inflight=self.metrics.inflight, quieted=self.metrics.quieted,
        )  # fmt: skip
        self.poller = Poller(self.bot, self.inbox, self.intake, allowed_updates(self.dispatcher))
        self.scheduler = create_scheduler(
            self.metrics.timed(self.outbox.tick, "outbox"), settings.tick_seconds
        )
        # Its own job: a retried card never waits behind a long campaign round.
        add_interval_job(self.scheduler, self.metrics.timed(self.handoff.tick, "handoff"),
                         settings.tick_seconds, job_id=HANDOFF_JOB_ID)  # fmt: skip
        # The managers' loop: service-level reminders and silent takes, from the database.
        self.managers = ManagersLoop(
            self.sessions, self.scripts, self.clock, self.handoff, settings.service_level,
            settings.manager_silence, settings.admin_ids,
        )  # fmt: skip
        add_interval_job(self.scheduler, self.metrics.timed(self.managers.tick, "managers"),
                         managers_interval(settings), job_id=MANAGERS_JOB_ID)  # fmt: skip
        add_daily_job(self.scheduler, self.send_digest, 9, 0, settings.zone, job_id="daily_digest",
                      sessions=self.sessions, clock=self.clock)  # fmt: skip
        watch_every = min(WATCH_SECONDS, settings.tick_seconds)
        add_interval_job(self.scheduler, self.watch_script, watch_every, job_id="script_watch")
        self._polling: asyncio.Task[Any] | None = None
        self._signalled: set[asyncio.Task[None]] = set()
        # /healthz, /metrics and, in webhook mode, the webhook (bot/webhook.py).
        self.web: WebServer | None = None

    async def prepare(self) -> None:
        """Schema up to date; touches and cards a crash left half-sent are settled, never
        resent; webhooks are sent again."""
        await db.migrate(self.engine)
        recovered = await self.outbox.recover()
        if recovered:
            log.warning("outbox.recovered", extra={"touches": recovered})
        await self.handoff.recover()
        await self.replies.recover()

    async def start(self, *, scheduler: bool = True, webhook: bool = False) -> None:
        """Polling by default; `webhook=True`: Telegram posts updates to WEBHOOK_URL, which
        reaches this instance's WEBHOOK_LISTEN (through a TLS proxy or a load balancer)."""
        if isinstance(self.limiter, SharedRateLimiter):
            await self.limiter.connect()  # Redis unreachable: a clear error, not a start
        # Only webhook instances on PostgreSQL run side by side (getUpdates has one reader):
        # a reply another one may be sending is left to it for a while.
        self.replies.multi_instance = webhook and self.engine.dialect.name != "sqlite"
        await self.prepare()
        self.warn_about_offers()
        if webhook:
            await self._start_webhook()
        else:
            # Never drop what Telegram holds: a successful payment may be among the updates.
            await self.bot.delete_webhook(drop_pending_updates=False)
            if self.settings.metrics_listen:
                self.web = WebServer(self, self.settings.metrics_listen)
                await self.web.start()
        await self.bot.set_my_commands(prospect_commands(self.scripts.current.language))
        if scheduler:
            self.scheduler.start()
        if not webhook:
            self._polling = asyncio.create_task(self.poller.run())

    async def _start_webhook(self) -> None:
        settings = self.settings
        if settings.webhook_url is None or settings.webhook_secret is None:
            raise ValueError("; ".join(settings.webhook_problems()))
        secret = settings.webhook_secret.get_secret_value()
        self.web = WebServer(
            self, settings.webhook_listen, webhook_path=settings.webhook_path, secret=secret,
            ops_listen=settings.metrics_listen,
            max_connections=settings.webhook_max_connections,
        )  # fmt: skip
        await self.web.start()
        # What earlier runs stored and did not handle goes first, then Telegram delivers.
        await self.web.resume()
        # Every instance sets the same webhook; pending updates are never dropped.
        await self.bot.set_webhook(
            settings.webhook_url,
            secret_token=secret,
            allowed_updates=allowed_updates(self.dispatcher),
            drop_pending_updates=False,
        )

    def warn_about_offers(self) -> None:
        """Offers the script names that cannot be sent as the bot is set up."""
        token = self.settings.provider_token is not None
        for offer in unsendable_offers(self.scripts.current, token):
            log.warning(
                "payment.offer_unsendable: this offer's invoices are not sent until "
                "PAYMENT_PROVIDER_TOKEN is set (offers in XTR, Telegram Stars, need none)",
                extra={"event": "payment.offer_unsendable", "offer": offer.id,
                       "currency": offer.currency},
            )  # fmt: skip

    async def mark_blocked(self, session: AsyncSession, chat_id: int) -> None:
        """A reply met a blocked chat (bot/replies.py): no more sends to it."""
        await store.mark_blocked(session, chat_id, self.clock.now())

    async def ask_to_slow_down(self, chat_id: int) -> None:
        """Once per flood, to the person sending it (bot/intake.py)."""
        await self.bot.send_message(
            chat_id, t("updates.slow_down", lang=self.scripts.current.language)
        )

    async def send_digest(self) -> None:
        """09:00 in the school's zone: yesterday in numbers, to every admin."""
        async with self.sessions() as session:
            digest = await daily_digest(
                session, self.scripts.current, self.clock.now(), self.settings.zone
            )
        text = format_digest_html(digest, lang=self.scripts.current.language)
        for admin in sorted(self.settings.admin_ids):
            try:
                await self.bot.send_message(admin, text)
            except TelegramAPIError as e:
                log.warning(
                    "digest.not_delivered: the admin must /start the bot once",
                    extra={"admin_id": admin, "error": type(e).__name__},
                )

    async def watch_script(self, *, force: bool = False) -> None:
        """Reloads the script when its file changed on disk (or on SIGHUP, `force`) and tells
        the admins what changed, or which line is wrong while the last good script stays."""
        outcome = await self.scripts.reload_if_changed(force=force)
        if outcome is not None:
            why = N_("admin.reload.on_signal") if force else N_("admin.reload.on_change")
            await announce_reload(self.bot, self.settings.admin_ids, self.scripts, outcome, why)

    def reload_on_signal(self) -> None:
        """SIGHUP: the operator's way to say "read the script again"."""
        task = asyncio.create_task(self.watch_script(force=True))
        self._signalled.add(task)
        task.add_done_callback(self._signalled.discard)

    async def wait(self) -> None:
        if self._polling is not None:
            await self._polling
        elif self.web is not None and self.web.webhook_path is not None:
            await self.web.wait()

    async def stop(self) -> None:
        """The graceful stop (SIGTERM): nothing is lost. Rows waiting for a rate-limit slot
        stay planned, requests on the wire finish and are recorded, updates being handled
        finish; what was received and not handled is handled at the next start."""
        if self._polling is not None:
            # Updates being handled finish; what was received and not handled stays in the
            # inbox for the next start.
            await self.poller.stop()
            await asyncio.gather(self._polling, return_exceptions=True)
            self._polling = None
        if self.web is not None:
            # New webhook calls get 503 (Telegram sends them again), the updates being
            # handled finish; the webhook itself stays set for the other instances.
            await self.web.close()
            self.web = None
        self._uncount_retries()
        await asyncio.gather(self.outbox.stop(), self.handoff.close(), self.replies.stop())
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.bot.session.close()
        await middlewares.close_user_locks(self.engine)
        if isinstance(self.limiter, SharedRateLimiter):
            await self.limiter.close()
        await erasure.settle(self.engine)  # a /forget's cleaning finishes before the close
        await self.engine.dispose()
