"""The webhook's port against a stranger, over real sockets on 127.0.0.1: slow heads, slow
bodies and idle kept-alive connections are cut off in time; the connections it holds are
capped, idle ones make room so `/healthz` keeps answering, and `/healthz` and `/metrics`
can have a listener of their own in webhook mode; hostile bodies and tokens get a 4xx,
counted by reason, one log line a minute per reason, never a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from telegram_emulator import TelegramEmulator

from bot import webhook
from bot.settings import load_settings
from funnel.core.clock import FakeClock
from funnel.core.models import InboxUpdate
from tests.conftest import ROOT
from tests.e2e.test_webhook import PATH, SECRET, scrape, start_update, value, webhook_app

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def as_json(update: dict[str, Any]) -> bytes:
    return json.dumps(update).encode()


def rejected(families: dict[str, list[Any]], reason: str) -> float:
    return value(families, "leadbot_webhook_rejected_total", reason=reason)


async def connect(address: str) -> Connection:
    parts = urlsplit(address)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, field = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(field)
    return status, await asyncio.wait_for(reader.readexactly(length), 5)


async def exchange(address: str, request: bytes) -> int:
    """One raw request on a fresh connection; the status of the answer."""
    reader, writer = await connect(address)
    try:
        writer.write(request)
        await writer.drain()
        status, _ = await read_response(reader)
        return status
    finally:
        writer.close()


def webhook_post(body: bytes, secret: bytes = SECRET.encode()) -> bytes:
    return (
        b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
        b"X-Telegram-Bot-Api-Secret-Token: " + secret + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """How long the server took to close the connection (it sent nothing but the close)."""
    started = time.monotonic()
    with suppress(ConnectionError):
        data = await asyncio.wait_for(reader.read(65536), seconds)
        while data:
            data = await asyncio.wait_for(reader.read(65536), seconds)
    return time.monotonic() - started


def rejected_lines(caplog: pytest.LogCaptureFixture, reason: str) -> int:
    return sum(
        1
        for record in caplog.records
        if record.getMessage().startswith("webhook.rejected")
        and getattr(record, "reason", None) == reason
    )


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not loud, [(r.name, r.getMessage()) for r in loud]


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The port's timeouts in fractions of a second, so a test waits for them."""
    monkeypatch.setattr(webhook, "HEADER_SECONDS", 0.5)
    monkeypatch.setattr(webhook, "BODY_SECONDS", 0.5)
    monkeypatch.setattr(webhook, "KEEPALIVE_SECONDS", 0.6)
    monkeypatch.setattr(webhook, "LINGER_SECONDS", 0.2)
    yield


@asynccontextmanager
async def holding(address: str, count: int) -> AsyncIterator[list[Connection]]:
    opened: list[Connection] = []
    try:
        for _ in range(count):
            opened.append(await connect(address))
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def test_a_secret_that_is_not_utf8_is_a_401_counted_and_logged_once(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_app(emu, tmp_path, clock) as app:
        assert app.web is not None
        body = as_json(start_update(700_001, 555))
        for secret in (b"\xff\xfe\xfd", b"s3cret_\xc3\x28", SECRET.encode() + b"\x80"):
            for _ in range(20):
                assert await exchange(app.web.address, webhook_post(body, secret)) == 401
        families = await scrape(app)
        assert rejected(families, "bad_secret") == 60
        async with app.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(InboxUpdate)) == 0
    assert rejected_lines(caplog, "bad_secret") == 1, "one line a minute, not one a request"
    no_tracebacks(caplog)


async def test_deep_out_of_range_and_large_bodies_are_refused_counted_by_reason(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_app(emu, tmp_path, clock) as app:
        assert app.web is not None
        address = app.web.address
        deep_list = b"[" * 100_000 + b"]" * 100_000
        deep_update = b'{"update_id": 1, "message": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001
        for body in (deep_list, deep_update, deep_list):
            assert await exchange(address, webhook_post(body)) == 400
        for update_id in (10**30, 2**63, -1):
            body = f'{{"update_id": {update_id}}}'.encode()
            assert await exchange(address, webhook_post(body)) == 400, update_id
        # Past the limit by its Content-Length, and by what a chunked body turns out to be.
        assert await exchange(address, webhook_post(b"{" + b" " * 2_000_000 + b"}")) == 413

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"update_id": 1, "x": "'
            for _ in range(40):
                yield b"a" * 65_536
            yield b'"}'

        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with (
            aiohttp.ClientSession() as http,
            http.post(address + PATH, data=chunks(), headers=headers) as response,
        ):
            assert response.status == 413
        # The largest id the inbox holds is still an update.
        user = emu.add_user("Анна")
        last = 2**63 - 1
        assert await exchange(address, webhook_post(as_json(start_update(last, user.id)))) == 200
        await user.next_message(timeout=10)
        families = await scrape(app)
        assert rejected(families, "too_deep") == 3
        assert rejected(families, "bad_update_id") == 3
        assert rejected(families, "too_large") == 2
        assert rejected(families, "store_failed") == 0, "never a 503 Telegram would resend"
        async with app.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(InboxUpdate)) == 1
    for reason in ("too_deep", "bad_update_id", "too_large"):
        assert rejected_lines(caplog, reason) == 1, reason
    no_tracebacks(caplog)
    assert "RecursionError" not in caplog.text


async def test_slow_heads_slow_bodies_and_idle_connections_are_cut_off(
    emu: TelegramEmulator,
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    quick: None,
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_app(emu, tmp_path, clock) as app:
        assert app.web is not None
        address = app.web.address

        # Slowloris: a head sent a line at a time, never finished.
        reader, writer = await connect(address)
        writer.write(b"POST /telegram HTTP/1.1\r\nHost: bot\r\n")

        async def trickle() -> None:
            with suppress(ConnectionError):
                for n in range(100):
                    writer.write(f"X-Pad-{n}: a\r\n".encode())
                    await writer.drain()
                    await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        took = await closed_within(reader, 5)
        assert 0.4 < took < 2.0, took
        assert not trickling.done(), "cut off while it was still sending"
        trickling.cancel()
        writer.close()

        # A connection that sends nothing at all.
        reader, writer = await connect(address)
        assert await closed_within(reader, 5) < 2.0
        writer.close()

        # The right token and a body that stops coming: 408, and the connection closes.
        reader, writer = await connect(address)
        writer.write(webhook_post(b"x" * 200)[:-190])
        status, _ = await read_response(reader)
        assert status == 408
        assert await closed_within(reader, 5) < 2.0
        writer.close()

        # Kept alive after a request, then a second head trickled: aiohttp's keep-alive
        # timeout closes it.
        reader, writer = await connect(address)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n")
        status, _ = await read_response(reader)
        assert status == 200
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        assert await closed_within(reader, 5) < 2.0
        writer.close()

        # An honest client is not hurt by any of it.
        user = emu.add_user("Анна")
        await user.send("/start vk_ads")
        await user.next_message(timeout=10)
        families = await scrape(app)
        assert rejected(families, "slow_headers") == 2
        assert rejected(families, "slow_body") == 1
    no_tracebacks(caplog)


async def test_idle_connections_past_the_cap_make_room_so_healthz_answers(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_app(emu, tmp_path, clock, webhook_max_connections=100) as app:
        assert app.web is not None
        address = app.web.address
        async with holding(address, 300):
            await asyncio.sleep(0.2)  # the server has accepted them all
            started = time.monotonic()
            async with aiohttp.ClientSession() as http, http.get(address + "/healthz") as answer:
                assert answer.status == 200
            assert time.monotonic() - started < 2.0
            user = emu.add_user("Анна")
            await user.send("/start vk_ads")
            await user.next_message(timeout=10)
            families = await scrape(app)
        # 300 idle and 4 real connections (/healthz, the emulator's, the scrape) through 100.
        assert rejected(families, "idle_closed") >= 200
        assert rejected(families, "too_many_connections") == 0
    assert rejected_lines(caplog, "idle_closed") == 1
    no_tracebacks(caplog)


async def test_past_the_cap_a_new_connection_is_closed_at_once_without_a_traceback(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with webhook_app(
        emu, tmp_path, clock, webhook_max_connections=100, metrics_listen="127.0.0.1:0"
    ) as app:
        assert app.web is not None
        address, ops = app.web.address, app.web.ops_address
        assert address != ops
        # 100 connections that each finished a request and stay kept alive: none is idle
        # before its first head, so none makes room.
        async with holding(address, 100) as busy:
            for reader, writer in busy:
                writer.write(b"GET /nowhere HTTP/1.1\r\nHost: bot\r\n\r\n")
                assert (await read_response(reader))[0] == 404
            async with holding(address, 200) as refused:
                for reader, _ in refused:
                    assert await closed_within(reader, 5) < 2.0
            # The monitoring's own listener answers all the while.
            async with aiohttp.ClientSession() as http, http.get(ops + "/healthz") as answer:
                assert answer.status == 200
            families = await scrape_at(ops)
            assert rejected(families, "too_many_connections") == 200
            # A connection given back is a place for a new one.
            for _, writer in busy[:10]:
                writer.close()
            await asyncio.sleep(0.2)
            assert await exchange(address, b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n") == 404
    assert rejected_lines(caplog, "too_many_connections") == 1
    no_tracebacks(caplog)


async def scrape_at(ops: str) -> dict[str, list[Any]]:
    async with aiohttp.ClientSession() as http, http.get(ops + "/metrics") as response:
        assert response.status == 200
        body = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


async def test_metrics_listen_in_webhook_mode_takes_healthz_and_metrics_off_the_webhook_port(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock, metrics_listen="127.0.0.1:0") as app:
        assert app.web is not None
        address, ops = app.web.address, app.web.ops_address
        user = emu.add_user("Анна")
        await user.send("/start vk_ads")
        await user.next_message(timeout=10)
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/metrics"):
                async with http.get(address + path) as response:
                    assert response.status == 404, path
                async with http.get(ops + path) as response:
                    assert response.status == 200, path
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            async with http.post(ops + PATH, json={}, headers=headers) as response:
                assert response.status == 404, "the webhook is on its own port only"
        families = await scrape_at(ops)
        assert value(families, "leadbot_updates_total", type="message") == 1


def test_the_port_is_local_by_default_and_the_unit_allows_the_connections() -> None:
    defaults = load_settings(_env_file=None)
    assert defaults.webhook_listen.startswith("127.0.0.1:")
    unit = (ROOT / "deploy" / "leadbot.service").read_text()
    (line,) = [x for x in unit.splitlines() if x.startswith("LimitNOFILE=")]
    limit = int(line.split("=", 1)[1])
    needed = defaults.webhook_max_connections + webhook.OPS_MAX_CONNECTIONS
    assert limit >= needed + webhook.RESERVED_FDS


def test_a_short_open_files_limit_is_raised_or_the_cap_lowered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    limits = {"soft": 1024, "hard": 4096}

    def getrlimit(_which: int) -> tuple[int, int]:
        return limits["soft"], limits["hard"]

    def setrlimit(_which: int, values: tuple[int, int]) -> None:
        if values[0] > limits["hard"]:
            raise ValueError("not allowed")
        limits["soft"] = values[0]

    monkeypatch.setattr(resource, "getrlimit", getrlimit)
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    assert webhook.fit_descriptors(1100) == 1100
    assert limits["soft"] == 1100 + webhook.RESERVED_FDS, "raised as far as needed"
    limits.update(soft=1024, hard=1024)
    assert webhook.fit_descriptors(1100) == 1024 - webhook.RESERVED_FDS
    assert limits["soft"] == 1024
