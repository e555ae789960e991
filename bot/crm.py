"""POSTs a lead to the school's CRM (CRM_WEBHOOK_URL). The URL may carry a secret token and
the payload carries a person's answers, so neither ever reaches a log or an error text."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from bot import write_guard

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 64 * 1024


class CrmWebhook:
    """One HTTP session for the bot's lifetime, opened on the first POST."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return "CrmWebhook(url=<secret>)"

    async def post(self, payload: dict[str, Any], key: str) -> int:
        """Sends the payload once and returns the HTTP status. Raises aiohttp.ClientError or
        TimeoutError when no answer came; describe those with `describe`, never str().
        Refused inside a write transaction (write_guard.RequestInWriteTransaction)."""
        write_guard.refuse_inside("crm.post")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Idempotency-Key": key,
            "User-Agent": "leadbot",
        }
        # A redirect is an answer to fix in the setting, not one to follow with the payload.
        async with self._session.post(
            self._url, data=body, headers=headers, allow_redirects=False
        ) as response:
            # The answer is not used: a little is read, the rest is dropped with the
            # connection, so a CRM answering a gigabyte costs 64 KiB, not the memory.
            await response.content.read(MAX_ANSWER_BYTES)
            return response.status

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def describe(error: BaseException) -> str:
    """What went wrong, by kind only: aiohttp's messages may quote the URL and its token."""
    if isinstance(error, TimeoutError):
        return "no answer: timeout"
    return f"no answer: {type(error).__name__}"
