"""The CRM webhook's client: the CRM's answer is read up to a cap and dropped, whatever the
CRM sends back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bot.crm import MAX_ANSWER_BYTES, CrmWebhook

CHUNK = b"x" * 65_536
HUGE = 1024 * 1024 * 1024  # what the CRM would send: 1 GiB


@dataclass
class Answers:
    url: str
    sent: list[int] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)


@pytest.fixture
async def crm() -> AsyncIterator[Answers]:
    answers = Answers(url="")

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = HUGE
        await response.prepare(request)
        sent = 0
        try:
            while sent < HUGE:
                await response.write(CHUNK)
                sent += len(CHUNK)
            answers.finished.append(True)
        except (ConnectionError, asyncio.CancelledError):
            answers.finished.append(False)
            raise
        finally:
            answers.sent.append(sent)
        return response

    async def small(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=201, text="ok")

    app = web.Application()
    app.router.add_post("/huge", endless)
    app.router.add_post("/small", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    answers.url = f"http://127.0.0.1:{port}"
    try:
        yield answers
    finally:
        await runner.cleanup()


async def test_a_huge_answer_is_not_read_in_full(crm: Answers) -> None:
    webhook = CrmWebhook(crm.url + "/huge", timeout=30)
    try:
        started = time.perf_counter()
        status = await webhook.post({"lead": 1}, key="k1")
        took = time.perf_counter() - started
    finally:
        await webhook.close()
    assert status == 200 and took < 5
    for _ in range(100):  # the server notices the dropped connection
        if crm.sent:
            break
        await asyncio.sleep(0.05)
    [sent] = crm.sent
    assert crm.finished == [False]
    # The socket buffers hold a few megabytes; the client read MAX_ANSWER_BYTES of them.
    assert MAX_ANSWER_BYTES < sent < 64 * 1024 * 1024


async def test_a_small_answer_and_the_next_post(crm: Answers) -> None:
    webhook = CrmWebhook(crm.url + "/small")
    try:
        assert await webhook.post({"lead": 1}, key="k1") == 201
        assert await webhook.post({"lead": 2}, key="k2") == 201
    finally:
        await webhook.close()
