"""The dispatcher factory: middlewares, dependencies by name, and the routers in order
(admins first, then the managers' chat, then prospects)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher, Router
from aiogram.types import ErrorEvent, TelegramObject
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import logs, transactions
from bot.callback_signing import VerifyCallbacks
from bot.handoff import HandOff
from bot.middlewares import DbSession, PerUserOrder, ask_to_try_again
from bot.scripts import ScriptHolder
from bot.settings import Settings
from funnel.core.clock import Clock
from handlers import (
    admin,
    broadcasts,
    experiments,
    managers,
    managers_report,
    payments,
    prospect,
    test_funnel,
)  # fmt: skip
from handlers.callbacks import Signer
from handlers.dependencies import BotConfig, HandOffPort, ScriptReloader

log = logging.getLogger("leadbot.dispatcher")


def bot_config(settings: Settings) -> BotConfig:
    """What the handlers read of the settings."""
    return BotConfig(
        admin_ids=settings.admin_ids,
        manager_chat_id=settings.manager_chat_id,
        zone=settings.zone,
        payment_provider_token=settings.provider_token,
    )


def run_filters_on_loop(root: Router) -> None:
    """aiogram runs every filter that is a plain function (`F.data.startswith(...)`, a
    lambda) in a worker thread, in case it blocks; an update passes a dozen of them on its way
    through the routers, and each thread hop costs more than the check. Ours are all quick,
    pure looks at the update, so they run on the event loop instead."""
    for router in root.chain_tail:
        for observer in router.observers.values():
            # `_handler` holds the router-level filters (`router.message.filter(...)`).
            for handler in (observer._handler, *observer.handlers):
                for check in handler.filters or ():
                    if not check.awaitable:
                        check.callback = _on_loop(check.callback)
                        check.awaitable = True


def _on_loop(check: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def on_loop(*args: Any, **kwargs: Any) -> Any:
        return check(*args, **kwargs)

    return on_loop


def create_dispatcher(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    scripts: ScriptHolder,
    clock: Clock,
    handoff: HandOff,
    *,
    retry_seconds: float = transactions.DEFAULT_BUDGET_SECONDS,
    outer: Sequence[BaseMiddleware] = (),
    signer: Signer,
    **extra: Any,
) -> Dispatcher:
    """`outer`: update middlewares that see each update once, before the per-user order and
    the session's retries (the metrics). `signer`: the key the bot's session signs buttons
    with; a press it does not verify reaches the routers as a stale button."""
    config = bot_config(settings)
    # The handlers know these by their protocols (handlers/dependencies.py), not by their class.
    reloader: ScriptReloader = scripts
    handing_off: HandOffPort = handoff
    # No aiogram FSM: a dialogue's position lives in the database (survives a restart, is
    # shared by instances), and its middleware would build a context per update for nothing.
    dp = Dispatcher(
        disable_fsm=True,
        config=config,
        scripts=reloader,
        clock=clock,
        handoff=handing_off,
        **extra,
    )
    for middleware in outer:
        dp.update.outer_middleware(middleware)
    dp.update.outer_middleware(PerUserOrder())
    dp.update.outer_middleware(DbSession(sessions, retry_seconds=retry_seconds))

    async def current_script(
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        # Read per update, so a reload applies from the next update on.
        data["script"] = scripts.current
        return await handler(event, data)

    dp.update.outer_middleware.register(current_script)
    # Before every router's filters: no handler ever sees data the bot did not send there.
    dp.callback_query.outer_middleware(VerifyCallbacks(signer))
    # The admins' and managers' commands, the payments and /test_funnel before the
    # prospects' catch-all (it answers every other private command).
    dp.include_routers(
        admin.router(config), test_funnel.router(config), experiments.router(config),
        broadcasts.router(config), managers_report.router(config), managers.router(config),
        payments.router(config), prospect.router(),
    )  # fmt: skip
    run_filters_on_loop(dp)

    @dp.errors()
    async def on_error(event: ErrorEvent, bot: Bot) -> bool:
        # The exception's type and where it was raised, never its text: a message may
        # quote what the user typed.
        log.error(
            "update.failed: a bug stopped this update; whatever it had not committed is "
            "undone and the user was asked to try again",
            extra={
                "event": "update.failed",
                "update_id": event.update.update_id,
                "error": type(event.exception).__name__,
                "where": logs.origin(event.exception),
            },
        )
        await ask_to_try_again(bot, event.update, scripts.current.language)
        return True

    return dp
