"""`TelegramEmulator`: the aiohttp server that answers `/bot<token>/<method>` like the Bot API,
records every request, injects latency and faults, and owns the simulated users and groups."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from aiohttp import web

from .control import setup_control_routes
from .errors import ApiError, not_found, unauthorized
from .limits import RateLimitConfig, RateLimiter
from .methods import BotApi
from .params import for_record, read_params
from .state import BotMessage, EmulatorStats, RecordedRequest, WebhookDeliveryRecord, World
from .users import SimGroup, SimUser
from .webhook import WebhookDelivery

T = TypeVar("T")
TOKEN = re.compile(r"^(\d+):[A-Za-z0-9_-]{5,}$")
DEFAULT_TOKEN = "123456789:EMULATOR-test-token"
# The methods a slow chat (`TelegramEmulator.slow_chat`) holds up, by their names' start.
SLOW_METHODS = ("send", "edit", "copy", "forward")


@dataclass
class Fault:
    """What the next matching request(s) of a method get instead of the normal answer."""

    remaining: int
    error_code: int = 500
    description: str = "Internal Server Error"
    retry_after: int | None = None
    hang: bool = False
    seconds: float | None = None  # how long a hang lasts; None: until the emulator stops
    apply: bool = True  # a hung request still takes effect (the response is what gets lost)
    chat_id: int | None = None  # only requests to this chat; None: any


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class TelegramEmulator:
    """A local Telegram Bot API server with simulated users, for the demo, tests and benchmarks.

    Usage: `async with TelegramEmulator() as emu:` (or `await emu.start()` / `await emu.stop()`),
    then point aiogram at `emu.base_url` with `TelegramAPIServer.from_base(emu.base_url)`.
    Every well-formed token is accepted; all bots share one world (one update queue).
    Once the bot calls setWebhook, updates are POSTed to its URL instead of waiting for
    getUpdates; `webhook_targets` (a load balancer's instances, delivered in turn) and
    `duplicate_rate` (that share delivered twice) shape it, see `webhook.py`.
    Each request waits `latency` seconds before it is served; with `latency_max` it waits a
    random time between the two instead (a real network's spread; `latency_seed` repeats it).
    `slow_chat(chat_id, seconds)` makes every send to one chat slow (see there).
    """

    def __init__(
        self,
        *,
        rate_per_second: float = 30.0,
        chat_rate_per_second: float = 1.0,
        chat_burst: int = 5,
        group_per_minute: int = 20,
        rate_limits: bool = True,
        latency: float = 0.0,
        latency_max: float | None = None,
        latency_seed: int | None = None,
        token: str = DEFAULT_TOKEN,
        bot_username: str = "leadbot_test_bot",
        bot_first_name: str = "Leadbot",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        control_api: bool = True,
        webhook_targets: list[str] | None = None,
        duplicate_rate: float = 0.0,
        duplicate_seed: int | None = None,
    ) -> None:
        match = TOKEN.match(token)
        if match is None:
            raise ValueError(f"not a bot token: {token!r}")
        self.token = token
        self.latency = latency
        self.latency_max = latency_max
        self._latency_rng = random.Random(latency_seed)
        self.world = World(wall_clock=wall_clock)
        self.world.bot.id = int(match.group(1))
        self.world.bot.username = bot_username
        self.world.bot.first_name = bot_first_name
        self.limits = RateLimitConfig(
            rate_per_second=rate_per_second,
            chat_rate_per_second=chat_rate_per_second,
            chat_burst=chat_burst,
            group_per_minute=group_per_minute,
        )
        self.limiter = RateLimiter(self.limits, clock)
        self.api = BotApi(self.world, self.limiter if rate_limits else None)
        self.users: dict[int, SimUser] = {}
        self.groups: dict[int, SimGroup] = {}
        self._clock = clock
        self._faults: dict[str, list[Fault]] = {}
        # Chat id -> seconds each send to it waits before it is served (`slow_chat`).
        self.slow_chats: dict[int, float] = {}
        self.webhook = WebhookDelivery(
            self.world, clock, targets=webhook_targets, duplicate_rate=duplicate_rate,
            seed=duplicate_seed,
        )  # fmt: skip
        self._released = asyncio.Event()  # set on stop: hung requests return
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self.app = web.Application(client_max_size=60 * 1024 * 1024)
        if control_api:
            setup_control_routes(self.app, self)
        self.app.router.add_route("*", "/bot{token}/{method}", self._handle)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving; return the base URL, e.g. "http://127.0.0.1:40123"."""
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        self.api.closing = False
        self._released = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_port = runner.addresses[0][1] if runner.addresses else port
        self._base_url = f"http://{host}:{bound_port}"
        self.webhook.start()
        return self._base_url

    async def stop(self) -> None:
        """Answer waiting long polls, release hung requests, close the server."""
        if self._runner is None:
            return
        self.api.wake_pollers()
        self._released.set()
        await self.webhook.stop()
        runner, self._runner = self._runner, None
        await runner.cleanup()
        self._base_url = None

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not running; await start() first")
        return self._base_url

    @property
    def bot_id(self) -> int:
        return self.world.bot.id

    @property
    def bot_username(self) -> str:
        return self.world.bot.username

    # --- simulated people ------------------------------------------------------------------

    def add_user(
        self,
        first_name: str = "Иван",
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "ru",
        *,
        user_id: int | None = None,
        started: bool = True,
    ) -> SimUser:
        """A new user; `started=False`: the user never opened the bot, so the bot gets 403
        `bot can't initiate conversation with a user` until the user writes first."""
        record = self.world.add_user(
            first_name, last_name, username, language_code, user_id=user_id, started=started
        )
        user = SimUser(self.world, record)
        self.users[user.id] = user
        return user

    def add_group(
        self,
        title: str = "Менеджеры",
        members: list[SimUser] | None = None,
        *,
        chat_id: int | None = None,
    ) -> SimGroup:
        """A supergroup; the first member is its creator. The bot joins via `add_bot()`."""
        chat = self.world.add_group(title, [u.id for u in members or []], chat_id=chat_id)
        group = SimGroup(self.world, chat)
        self.groups[group.id] = group
        return group

    def user(self, user_id: int) -> SimUser:
        return self.users[user_id]

    def group(self, chat_id: int) -> SimGroup:
        return self.groups[chat_id]

    def chat_member_status(self, chat_id: int, user_id: int) -> str:
        """creator / administrator / member / left / kicked, as getChatMember reports it."""
        return self.world.member_status(chat_id, user_id)

    def messages(self, chat_id: int) -> list[BotMessage]:
        """The bot's (non-deleted) messages in any chat, oldest first."""
        chat = self.world.chats.get(chat_id)
        return [m for m in chat.log if not m.deleted] if chat else []

    # --- observation -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.world.requests

    def requests_for(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.world.requests if r.method == method]

    def clear_requests(self) -> None:
        self.world.requests.clear()

    @property
    def stats(self) -> EmulatorStats:
        return self.world.stats

    @property
    def webhook_deliveries(self) -> list[WebhookDeliveryRecord]:
        """Every POST of an update to a webhook, oldest first."""
        return self.world.webhook_log

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued and not yet confirmed by a getUpdates offset."""
        return list(self.world.updates)

    async def wait_until(
        self,
        check: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> T:
        """Wait until `check()` (re-evaluated on every message, edit, deletion or callback
        answer) returns something truthy; TimeoutError otherwise."""
        return await self.world.changed.wait_until(check, timeout)

    async def wait_for_request(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> list[RecordedRequest]:
        """Wait until at least `count` finished requests of `method` were recorded."""

        def check() -> list[RecordedRequest] | None:
            done = [r for r in self.requests_for(method) if r.status is not None]
            return done if len(done) >= count else None

        return await self.world.changed.wait_until(check, timeout)

    def request_latency(self) -> float:
        """How long the next request waits before it is served."""
        high = self.latency_max
        if high is None or high <= self.latency:
            return self.latency
        return self._latency_rng.uniform(self.latency, high)

    def reset_limits(self) -> None:
        self.limiter.reset()

    @property
    def rate_limits(self) -> bool:
        return self.api.limiter is not None

    @rate_limits.setter
    def rate_limits(self, enabled: bool) -> None:
        self.api.limiter = self.limiter if enabled else None

    # --- fault injection -------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        times: int = 1,
        *,
        error_code: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
        chat_id: int | None = None,
    ) -> None:
        """The next `times` requests of `method` (to `chat_id` only, if given) fail with this
        error instead of running, e.g. `fail_next("sendMessage", error_code=429, retry_after=3)`.
        """
        if description is None:
            description = {
                400: "Bad Request: injected failure",
                403: "Forbidden: bot was blocked by the user",
                429: f"Too Many Requests: retry after {retry_after or 1}",
                502: "Bad Gateway",
            }.get(error_code, "Internal Server Error")
        if error_code == 429 and retry_after is None:
            retry_after = 1
        self._faults.setdefault(method, []).append(
            Fault(times, error_code, description, retry_after, chat_id=chat_id)
        )

    def hang_next(
        self,
        method: str,
        times: int = 1,
        *,
        seconds: float | None = None,
        apply: bool = True,
        chat_id: int | None = None,
    ) -> None:
        """The next `times` requests of `method` (to `chat_id` only, if given) get no answer
        for `seconds` (None: until the emulator stops), i.e. past the client's timeout. With
        `apply=True` the request still takes effect (the message reaches the user), which is
        the "timeout after the request left" case; with `apply=False` it is lost and finally
        answered 502 Bad Gateway."""
        self._faults.setdefault(method, []).append(
            Fault(
                times, 502, "Bad Gateway", hang=True, seconds=seconds, apply=apply, chat_id=chat_id
            )
        )

    def slow_chat(self, chat_id: int, seconds: float | None) -> None:
        """Every send to `chat_id` (a method named send*, edit*, copy* or forward* with that
        chat_id) waits `seconds` before it is served, then takes effect and is answered as
        usual: a chat whose requests hang on a stuck connection or a long throttle, while
        the rest of the bot's requests (other chats, answerCallbackQuery, getChatMember) go
        at their normal pace. `None` or 0 makes the chat quick again; stopping the emulator
        ends the waits."""
        if seconds:
            self.slow_chats[chat_id] = float(seconds)
        else:
            self.slow_chats.pop(chat_id, None)

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, method: str, params: dict[str, Any]) -> Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        chat_id = params.get("chat_id")
        fault = next((f for f in queue if f.chat_id is None or f.chat_id == chat_id), None)
        if fault is None:
            return None
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.remove(fault)
        return fault

    async def _hang(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._released.wait(), seconds)

    # --- HTTP ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        name = request.match_info["method"]
        method = self.api.canonical.get(name.lower(), name)
        started = self._clock()
        record = RecordedRequest(method=method, params={}, at=self.world.wall_clock(), token=token)
        self.world.requests.append(record)
        self.world.stats.requests[method] += 1
        params: dict[str, Any] = {}
        try:
            match = TOKEN.match(token)
            if match is None:
                raise unauthorized()
            bot = self.world.bot
            bot.id = int(match.group(1))
            params = await read_params(request)
            record.params = for_record(params)
            self.world.changed.notify()  # lets tests wait for a request to arrive
            delay = self.request_latency()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.slow_chats and method.startswith(SLOW_METHODS):
                slow = self.slow_chats.get(params.get("chat_id"))  # type: ignore[arg-type]
                if slow:
                    await self._hang(slow)
            result = await self._run(method, params, record)
        except ApiError as error:
            return self._refuse(record, error, params, started)
        record.status = 200
        record.result = result
        record.duration = self._clock() - started
        self.world.changed.notify()
        return web.Response(
            text=_dumps({"ok": True, "result": result}), content_type="application/json"
        )

    async def _run(self, method: str, params: dict[str, Any], record: RecordedRequest) -> Any:
        handler = self.api.handlers.get(method)
        fault = self._take_fault(method, params)
        if fault is not None:
            record.injected = True
            if not fault.hang:
                parameters = {"retry_after": fault.retry_after} if fault.retry_after else None
                raise ApiError(fault.error_code, fault.description, parameters)
            result = None
            if fault.apply and handler is not None:
                try:
                    result = await handler(self.world.bot, params)
                finally:
                    await self._hang(fault.seconds)
                return result
            await self._hang(fault.seconds)
            raise ApiError(fault.error_code, fault.description)
        if handler is None:
            raise not_found()
        return await handler(self.world.bot, params)

    def _refuse(
        self,
        record: RecordedRequest,
        error: ApiError,
        params: dict[str, Any],
        started: float,
    ) -> web.Response:
        stats = self.world.stats
        stats.errors_by_code[error.error_code] += 1
        chat_id = params.get("chat_id")
        if error.error_code == 429:
            stats.too_many_requests += 1
            stats.too_many_by_method[record.method] += 1
            if isinstance(chat_id, int):
                stats.too_many_by_chat[chat_id] += 1
        elif error.error_code == 403:
            stats.forbidden += 1
        record.status = error.error_code
        record.description = error.description
        record.duration = self._clock() - started
        self.world.changed.notify()
        return web.Response(
            text=_dumps(error.to_payload()),
            status=error.error_code,
            content_type="application/json",
        )
