"""What the handlers are given by the application, as small types defined here: the settings
they read (BotConfig), the hand-off they plan and kick after a commit (HandOffPort), and
reloading the script (ScriptReloader). bot/ fills them in and passes them as workflow data,
so the presentation never imports the application."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiogram.methods import TelegramMethod
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.dialogue.flow import Result
from funnel.script.schema import Script


@dataclass(frozen=True)
class BotConfig:
    """Who the admins are, where the managers sit, and the school's time zone."""

    admin_ids: frozenset[int]
    manager_chat_id: int | None
    zone: ZoneInfo
    # PAYMENT_PROVIDER_TOKEN; None: only offers in Telegram Stars can be sent.
    payment_provider_token: str | None = None

    def is_admin(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.admin_ids


class HandOffPort(Protocol):
    """Hands hot leads to the managers and the CRM: rows planned in the update's transaction,
    delivered after its commit."""

    @property
    def manager_chat_id(self) -> int | None: ...

    async def plan(self, session: AsyncSession, result: Result) -> bool:
        """Writes what `result` calls for; True when there is something to deliver."""
        ...

    async def plan_payment(
        self, session: AsyncSession, lead_id: int, purchase_id: int, event: str
    ) -> bool:
        """A payment ("paid") or refund ("refunded"): the managers' note and the CRM's event."""
        ...

    def kick(self) -> None:
        """Delivers what is due, in the background."""
        ...


class ReplyPort(Protocol):
    """The reply outbox (bot/replies.py): a reply written in the update's transaction and
    delivered after its commit."""

    async def stage(
        self, session: AsyncSession, chat_id: int, requests: Sequence[TelegramMethod[Any]]
    ) -> Any:
        """Writes the requests with the update; what `deliver` takes after the commit."""
        ...

    async def deliver(self, staged: Any) -> None: ...


class ScriptReloader(Protocol):
    """The script in force, reloaded on an admin's demand."""

    async def reload(self) -> Script:
        """The new script; raises ScriptError (keeping the old one) when the file is bad."""
        ...

    def problems_that_fit(self, problems: Sequence[str]) -> list[str]:
        """As many of a refusal's problems as one reply can carry."""
        ...
