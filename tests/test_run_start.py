"""The start-up of `python -m bot run` when Telegram is away, with a stand-in App: the probe
is retried with backoff, a start() cut short is undone and begun afresh on a new App."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiogram.exceptions import TelegramNetworkError, TelegramUnauthorizedError
from aiogram.methods import GetMe

import bot.__main__ as cli
from bot.settings import load_settings

SETTINGS = load_settings(_env_file=None, telegram_api_url="http://127.0.0.1:9/")


def away(cause: BaseException) -> TelegramNetworkError:
    error = TelegramNetworkError(method=GetMe(), message=f"{type(cause).__name__}: details")
    error.__cause__ = cause
    return error


class FakeBot:
    def __init__(self, answers: list[BaseException | None]) -> None:
        self.answers = answers

    async def get_me(self, request_timeout: int | None = None) -> None:
        assert request_timeout == cli.PROBE_TIMEOUT_SECONDS
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


class FakeApp:
    def __init__(self, probes: list[BaseException | None], start: BaseException | None) -> None:
        self.bot = FakeBot(probes)
        self.start_error = start
        self.started = self.stopped = 0

    async def start(self) -> None:
        self.started += 1
        if self.start_error is not None:
            raise self.start_error

    async def stop(self) -> None:
        self.stopped += 1


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "RETRY_FIRST_SECONDS", 0.001)
    monkeypatch.setattr(cli, "RETRY_MAX_SECONDS", 0.008)


def maker(*apps: FakeApp) -> Any:
    queue = list(apps)
    return lambda: queue.pop(0)


async def test_the_probe_is_retried_with_backoff(capsys: pytest.CaptureFixture[str]) -> None:
    refused = aiohttp.ClientConnectionError()
    app = FakeApp([away(refused)] * 5 + [away(TimeoutError()), OSError()], start=None)
    result = await cli._start_when_reachable(maker(app), SETTINGS, asyncio.Event())
    assert result is app and (app.started, app.stopped) == (1, 0)
    lines = capsys.readouterr().err.splitlines()
    server = "http://127.0.0.1:9"
    assert lines == [
        f"telegram: cannot reach {server} (ClientConnectionError); retrying in 0.001 s",
        f"telegram: cannot reach {server} (ClientConnectionError); retrying in 0.002 s",
        f"telegram: cannot reach {server} (ClientConnectionError); retrying in 0.004 s",
        f"telegram: cannot reach {server} (ClientConnectionError); retrying in 0.008 s",
        f"telegram: cannot reach {server} (ClientConnectionError); retrying in 0.008 s",
        f"telegram: cannot reach {server} (TimeoutError); retrying in 0.008 s",
        f"telegram: cannot reach {server} (OSError); retrying in 0.008 s",
        f"telegram: reached {server}; starting",
    ]


async def test_a_start_cut_short_begins_again_on_a_fresh_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = FakeApp([], start=away(aiohttp.ServerDisconnectedError()))
    second = FakeApp([], start=None)
    result = await cli._start_when_reachable(maker(first, second), SETTINGS, asyncio.Event())
    assert result is second
    assert (first.started, first.stopped, second.started, second.stopped) == (1, 1, 1, 0)
    assert capsys.readouterr().err.splitlines() == [
        "telegram: cannot reach http://127.0.0.1:9 (ServerDisconnectedError); retrying in 0.001 s",
        "telegram: reached http://127.0.0.1:9; starting",
    ]


async def test_a_stop_while_waiting_ends_the_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "RETRY_FIRST_SECONDS", 30.0)
    app = FakeApp([away(aiohttp.ClientConnectionError())] * 100, start=None)
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    result = await asyncio.wait_for(cli._start_when_reachable(maker(app), SETTINGS, stop), 5)
    assert result == 0 and (app.started, app.stopped) == (0, 1)


async def test_a_hanging_probe_is_cut_by_a_stop() -> None:
    class Hanging(FakeBot):
        async def get_me(self, request_timeout: int | None = None) -> None:
            await asyncio.sleep(3600)

    app = FakeApp([], start=None)
    app.bot = Hanging([])
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    result = await asyncio.wait_for(cli._start_when_reachable(maker(app), SETTINGS, stop), 5)
    assert result == 0 and (app.started, app.stopped) == (0, 1)


async def test_a_refused_token_ends_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    app = FakeApp([TelegramUnauthorizedError(method=GetMe(), message="Unauthorized")], None)
    result = await cli._start_when_reachable(maker(app), SETTINGS, asyncio.Event())
    assert result == 2 and (app.started, app.stopped) == (0, 1)
    assert capsys.readouterr().err.splitlines() == [
        "telegram: BOT_TOKEN was refused; take it again from @BotFather"
    ]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.telegram.org", "https://api.telegram.org:443"),
        ("http://user:pw@127.0.0.1:8081/x/y", "http://127.0.0.1:8081"),
        ("http://[::1]:8081", "http://[::1]:8081"),
    ],
)
def test_the_server_is_named_without_secrets(url: str, shown: str) -> None:
    assert cli._server(url) == shown
