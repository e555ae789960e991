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
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import db, transactions
from bot.delivery_middleware import RateLimitMiddleware
from bot.dispatcher import create_dispatcher
from bot.handoff import HandOff
from bot.inbox import Poller
from bot.outbox import Outbox
from bot.ratelimit import RateLimiter
from bot.scheduler import add_daily_job, add_interval_job, create_scheduler
from bot.scripts import WATCH_SECONDS, ScriptHolder, announce_reload
from bot.settings import Settings
from funnel.core.clock import Clock, ScaledClock, SystemClock
from funnel.reports.digest import daily_digest
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


def make_clock(settings: Settings) -> Clock:
    return SystemClock() if settings.time_scale == 1 else ScaledClock(settings.time_scale)


def make_bot(settings: Settings, token: str, limiter: RateLimiter) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
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
        limiter: RateLimiter | None = None,
        retry_seconds: float = transactions.DEFAULT_BUDGET_SECONDS,
    ) -> None:
        self.settings = settings
        self.clock = clock or make_clock(settings)
        self.scripts = ScriptHolder(settings.script_path)
        self.engine: AsyncEngine = db.create_engine(settings.database_url)
        self.sessions = db.sessionmaker(self.engine)
        rate = PAID_BROADCAST_RATE if settings.paid_broadcast else settings.rate_per_second
        self.limiter = limiter or RateLimiter(rate_per_second=rate)
        self.bot = make_bot(settings, token, self.limiter)
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
        )
        self.dispatcher = create_dispatcher(
            settings, self.sessions, self.scripts, self.clock, self.handoff,
            retry_seconds=retry_seconds,
        )  # fmt: skip
        self.poller = Poller(self.dispatcher, self.bot, self.sessions, self.clock)
        self.scheduler = create_scheduler(self.outbox.tick, settings.tick_seconds)
        # Its own job: a retried card never waits behind a long campaign round.
        add_interval_job(self.scheduler, self.handoff.tick, settings.tick_seconds,
                         job_id=HANDOFF_JOB_ID)  # fmt: skip
        add_daily_job(self.scheduler, self.send_digest, 9, 0, settings.zone, job_id="daily_digest")
        watch_every = min(WATCH_SECONDS, settings.tick_seconds)
        add_interval_job(self.scheduler, self.watch_script, watch_every, job_id="script_watch")
        self._polling: asyncio.Task[Any] | None = None
        self._signalled: set[asyncio.Task[None]] = set()

    async def prepare(self) -> None:
        """Schema up to date; touches and cards a crash left half-sent are settled, never
        resent; webhooks are sent again."""
        await db.migrate(self.engine)
        recovered = await self.outbox.recover()
        if recovered:
            log.warning("outbox.recovered", extra={"touches": recovered})
        await self.handoff.recover()

    async def start(self, *, scheduler: bool = True) -> None:
        await self.prepare()
        await self.bot.delete_webhook(drop_pending_updates=False)
        await self.bot.set_my_commands(prospect_commands(self.scripts.current.language))
        if scheduler:
            self.scheduler.start()
        self._polling = asyncio.create_task(self.poller.run())

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
        await asyncio.gather(self.outbox.stop(), self.handoff.close())
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        await self.bot.session.close()
        await self.engine.dispose()
