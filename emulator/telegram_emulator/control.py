"""The emulator's HTTP control API (JSON under `/_emulator/`), so a bot running in another
process can be driven from a test or a script, and `ControlClient`, its Python client.

Every answer is JSON; failures are `{"ok": false, "error": "..."}` with status 400/404/408.

    GET  /_emulator/health                      -> {"ok": true, "bot": {...}}
    GET  /_emulator/stats                       -> EmulatorStats as JSON
    GET  /_emulator/requests?method=&since=N    -> {"requests": [...]} (recorded Bot API calls
                                                   from index N on, optionally of one method)
    POST /_emulator/users                       {"first_name", "last_name"?, "username"?,
                                                 "language_code"?, "started"?} -> user
    GET  /_emulator/users                       -> {"users": [...]}
    POST /_emulator/users/{id}/send             {"text", "reply_to"?} -> {"message_id"}
    POST /_emulator/users/{id}/sticker          {"emoji"?}
    POST /_emulator/users/{id}/photo            {"caption"?}
    POST /_emulator/users/{id}/voice            {"duration"?}
    POST /_emulator/users/{id}/contact          {"phone_number"}
    POST /_emulator/users/{id}/location         {"latitude"?, "longitude"?}
    POST /_emulator/users/{id}/press            {"label", "message_id"?, "chat_id"?}
                                                -> {"query_id", "data", "message_id"}
                                                (no message_id: the newest bot message in the
                                                chat that has a button with this label)
    POST /_emulator/users/{id}/press_data       {"data", "message_id", "chat_id"?}
    POST /_emulator/users/{id}/pay              {"message_id"?, "timeout"?} -> {"status",
                                                 "error_message", "telegram_payment_charge_id"}
                                                (no message_id: the newest invoice in the chat;
                                                the bot's pre-checkout answer is awaited)
    POST /_emulator/users/{id}/block | unblock | deactivate
    GET  /_emulator/users/{id}/answers          -> {"answers": [...]} (callback answers)
    GET  /_emulator/chats/{chat_id}/messages?min_count=N&timeout=S
                                                -> {"messages": [...]} once the bot has sent at
                                                least N messages there (408 after S seconds)
    POST /_emulator/groups                      {"title", "member_ids": [...]} -> group
    POST /_emulator/groups/{chat_id}/add_bot    {"by", "as_admin"?}
    POST /_emulator/groups/{chat_id}/send       {"user_id", "text"}
    POST /_emulator/faults                      {"method", "times"?, "error_code"?,
                                                 "description"?, "retry_after"?, "hang"?,
                                                 "seconds"?, "apply"?, "chat_id"?}
    POST /_emulator/settings                    {"latency"?, "latency_max"?, "rate_limits"?,
                                                 "slow_chat"?: {"chat_id", "seconds"}}
    GET  /_emulator/webhook                     -> {"webhook": getWebhookInfo's url or null,
                                                   "targets", "duplicate_rate", "in_flight",
                                                   "deliveries": [...]} (since=N: from index N)
    POST /_emulator/webhook                     {"targets"?: [url, ...] | null,
                                                 "duplicate_rate"?, "seed"?}: a load
                                                balancer's instances, in turn, and the share
                                                of updates delivered twice
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from .state import (
    BotMessage,
    CallbackAnswer,
    EmulatorStats,
    FileDescriptor,
    FileInfo,
    RecordedRequest,
    WebhookDeliveryRecord,
    World,
)

if TYPE_CHECKING:
    from .users import SimGroup, SimUser
    from .webhook import WebhookDelivery

PREFIX = "/_emulator"
RouteHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class ControlledEmulator(Protocol):
    """What the control API drives: the `TelegramEmulator` that mounts it, described here so
    that this module does not import the server back."""

    world: World
    users: dict[int, SimUser]
    groups: dict[int, SimGroup]
    latency: float
    latency_max: float | None
    rate_limits: bool
    slow_chats: dict[int, float]
    webhook: WebhookDelivery

    @property
    def requests(self) -> list[RecordedRequest]: ...

    @property
    def stats(self) -> EmulatorStats: ...

    def add_user(
        self,
        first_name: str = ...,
        last_name: str | None = ...,
        username: str | None = ...,
        language_code: str | None = ...,
        *,
        user_id: int | None = ...,
        started: bool = ...,
    ) -> SimUser: ...

    def add_group(
        self, title: str = ..., members: list[SimUser] | None = ..., *, chat_id: int | None = ...
    ) -> SimGroup: ...

    def user(self, user_id: int) -> SimUser: ...

    async def wait_until(
        self,
        check: Callable[[], T | None],
        timeout: float = ...,  # noqa: ASYNC109
    ) -> T: ...

    def fail_next(
        self,
        method: str,
        times: int = ...,
        *,
        error_code: int = ...,
        description: str | None = ...,
        retry_after: int | None = ...,
        chat_id: int | None = ...,
    ) -> None: ...

    def hang_next(
        self,
        method: str,
        times: int = ...,
        *,
        seconds: float | None = ...,
        apply: bool = ...,
        chat_id: int | None = ...,
    ) -> None: ...

    def slow_chat(self, chat_id: int, seconds: float | None) -> None: ...


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _file_json(info: FileInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {k: v for k, v in dataclasses.asdict(info).items() if k != "data"}


def message_json(message: BotMessage) -> dict[str, Any]:
    """A bot message for the control API (everything but the raw Bot API object)."""
    return {
        "message_id": message.message_id,
        "chat_id": message.chat_id,
        "date": message.date,
        "kind": message.kind,
        "text": message.text,
        "plain_text": message.plain_text,
        "parse_mode": message.parse_mode,
        "entities": message.entities,
        "buttons": [[button._asdict() for button in row] for row in message.buttons],
        "reply_keyboard": message.reply_keyboard,
        "remove_keyboard": message.remove_keyboard,
        "photo": _file_json(message.photo),
        "document": _file_json(message.document),
        "reply_to_message_id": message.reply_to_message_id,
        "edit_date": message.edit_date,
        "history": message.history,
        "deleted": message.deleted,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, FileDescriptor):
        return dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def request_json(request: RecordedRequest) -> dict[str, Any]:
    return {
        "method": request.method,
        "params": _jsonable(request.params),
        "status": request.status,
        "at": request.at,
        "duration": request.duration,
        "description": request.description,
        "injected": request.injected,
    }


def _answer_json(answer: CallbackAnswer) -> dict[str, Any]:
    return dataclasses.asdict(answer)


def _ok(payload: dict[str, Any]) -> web.Response:
    return web.Response(
        text=json.dumps({"ok": True, **payload}, ensure_ascii=False, default=str),
        content_type="application/json",
    )


def setup_control_routes(app: web.Application, emu: ControlledEmulator) -> None:
    """Mount the control API on the emulator's application."""
    routes = _ControlRoutes(emu)
    table: list[tuple[str, str, RouteHandler]] = [
        ("GET", "/health", routes.health),
        ("GET", "/stats", routes.stats),
        ("GET", "/requests", routes.requests),
        ("GET", "/users", routes.list_users),
        ("POST", "/users", routes.create_user),
        ("POST", "/users/{user_id}/{action}", routes.user_action),
        ("GET", "/users/{user_id}/answers", routes.answers),
        ("GET", "/chats/{chat_id}/messages", routes.chat_messages),
        ("POST", "/groups", routes.create_group),
        ("POST", "/groups/{chat_id}/{action}", routes.group_action),
        ("POST", "/faults", routes.faults),
        ("POST", "/settings", routes.settings),
        ("GET", "/webhook", routes.webhook_info),
        ("POST", "/webhook", routes.webhook_setup),
    ]
    for method, path, handler in table:
        app.router.add_route(method, PREFIX + path, _guarded(handler))


def _guarded(handler: RouteHandler) -> RouteHandler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ControlError as error:
            status, message = error.status, str(error)
        except (LookupError, ValueError, PermissionError, RuntimeError, TypeError) as error:
            # Wrong ids, labels or arguments: the caller's mistake, reported, not a 500.
            status, message = 400, f"{type(error).__name__}: {error}"
        except TimeoutError as error:
            status, message = 408, str(error) or "timed out"
        return web.Response(
            text=json.dumps({"ok": False, "error": message}, ensure_ascii=False),
            status=status,
            content_type="application/json",
        )

    return guarded


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise ControlError(400, "the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ControlError(400, "the body must be a JSON object")
    return body


def _int(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ControlError(400, f"{name} must be an integer") from None


class _ControlRoutes:
    def __init__(self, emu: ControlledEmulator) -> None:
        self.emu = emu

    def _user(self, request: web.Request) -> SimUser:
        user_id = _int(request.match_info["user_id"], "user_id")
        if user_id not in self.emu.users:
            raise ControlError(404, f"no user {user_id}")
        return self.emu.users[user_id]

    def _group(self, request: web.Request) -> SimGroup:
        chat_id = _int(request.match_info["chat_id"], "chat_id")
        if chat_id not in self.emu.groups:
            raise ControlError(404, f"no group {chat_id}")
        return self.emu.groups[chat_id]

    @staticmethod
    def _user_json(user: SimUser) -> dict[str, Any]:
        return {
            **user.to_api(),
            "chat_id": user.chat_id,
            "blocked": user.blocked,
            "deactivated": user.deactivated,
        }

    async def health(self, request: web.Request) -> web.StreamResponse:
        return _ok({"bot": self.emu.world.bot.to_api()})

    async def stats(self, request: web.Request) -> web.StreamResponse:
        return _ok({"stats": self.emu.stats.to_json()})

    async def requests(self, request: web.Request) -> web.StreamResponse:
        since = _int(request.query.get("since", "0"), "since")
        method = request.query.get("method")
        selected = [
            request_json(r)
            for r in self.emu.requests[since:]
            if method is None or r.method == method
        ]
        return _ok({"requests": selected, "total": len(self.emu.requests)})

    async def list_users(self, request: web.Request) -> web.StreamResponse:
        return _ok({"users": [self._user_json(u) for u in self.emu.users.values()]})

    async def create_user(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        user = self.emu.add_user(
            first_name=str(body.get("first_name") or "Иван"),
            last_name=body.get("last_name"),
            username=body.get("username"),
            language_code=body.get("language_code", "ru"),
            user_id=body.get("id"),
            started=bool(body.get("started", True)),
        )
        return _ok({"user": self._user_json(user)})

    def _bot_message(self, user: SimUser, body: dict[str, Any]) -> BotMessage:
        chat_id = _int(body.get("chat_id", user.chat_id), "chat_id")
        chat = self.emu.world.chats.get(chat_id)
        if chat is None:
            raise ControlError(404, f"no chat {chat_id}")
        if "message_id" in body:
            message_id = _int(body["message_id"], "message_id")
            found = chat.by_id.get(message_id)
            if found is None:
                raise ControlError(404, f"no bot message {message_id} in chat {chat_id}")
            return found
        label = body.get("label")
        for message in reversed(chat.log):
            if not message.deleted and label in message.labels:
                return message
        raise ControlError(404, f"no bot message in chat {chat_id} has a button {label!r}")

    async def user_action(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        action = request.match_info["action"]
        body = await _body(request)
        sent = None
        if action == "send":
            sent = await user.send(str(body.get("text", "")), reply_to=body.get("reply_to"))
        elif action == "sticker":
            sent = await user.send_sticker(str(body.get("emoji", "👍")))
        elif action == "photo":
            sent = await user.send_photo(body.get("caption"))
        elif action == "voice":
            sent = await user.send_voice(_int(body.get("duration", 3), "duration"))
        elif action == "contact":
            sent = await user.send_contact(str(body.get("phone_number", "")))
        elif action == "location":
            sent = await user.send_location(
                float(body.get("latitude", 55.755826)), float(body.get("longitude", 37.6173))
            )
        elif action in ("press", "press_data"):
            message = self._bot_message(user, body)
            if action == "press":
                query = await user.press(message, str(body.get("label")))
            else:
                query = await user.press_data(message, str(body.get("data", "")))
            return _ok(
                {"query_id": query.query_id, "data": query.data, "message_id": query.message_id}
            )
        elif action == "pay":
            return _ok(await self._pay(user, body))
        elif action == "block":
            await user.block()
        elif action == "unblock":
            await user.unblock()
        elif action == "deactivate":
            await user.deactivate()
        else:
            raise ControlError(404, f"unknown user action {action!r}")
        if sent is not None:
            return _ok({"message_id": sent.message_id, "chat_id": sent.chat_id})
        return _ok({"user": self._user_json(user)})

    async def _pay(self, user: SimUser, body: dict[str, Any]) -> dict[str, Any]:
        from .payments import invoice_of

        world = self.emu.world
        chat = world.chats[user.chat_id]
        if "message_id" in body:
            message = self._bot_message(user, body)
        else:
            invoices = [m for m in chat.log if not m.deleted and invoice_of(world, m)]
            if not invoices:
                raise ControlError(404, f"no invoice in chat {chat.id}")
            message = invoices[-1]
        timeout = float(body.get("timeout", 10.0))
        result = await user.pay(message, timeout=min(max(timeout, 0.1), 10.0))
        charge = result.charge
        return {
            "status": result.status,
            "error_message": result.error_message,
            "message_id": message.message_id,
            "telegram_payment_charge_id": charge.telegram_payment_charge_id if charge else None,
        }

    async def answers(self, request: web.Request) -> web.StreamResponse:
        user = self._user(request)
        return _ok({"answers": [_answer_json(a) for a in user.callback_answers]})

    async def chat_messages(self, request: web.Request) -> web.StreamResponse:
        chat_id = _int(request.match_info["chat_id"], "chat_id")
        chat = self.emu.world.chats.get(chat_id)
        if chat is None:
            raise ControlError(404, f"no chat {chat_id}")
        min_count = _int(request.query.get("min_count", "0"), "min_count")
        timeout = float(request.query.get("timeout", "5"))
        if len(chat.log) < min_count:
            try:
                await self.emu.wait_until(lambda: len(chat.log) >= min_count, timeout)
            except TimeoutError:
                raise ControlError(
                    408, f"chat {chat_id} has {len(chat.log)} bot messages, wanted {min_count}"
                ) from None
        messages = [message_json(m) for m in chat.log if not m.deleted]
        return _ok({"messages": messages})

    async def create_group(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        members = [self.emu.user(_int(i, "member_ids")) for i in body.get("member_ids", [])]
        group = self.emu.add_group(str(body.get("title") or "Менеджеры"), members)
        return _ok({"group": {"id": group.id, "title": group.title}})

    async def group_action(self, request: web.Request) -> web.StreamResponse:
        group = self._group(request)
        action = request.match_info["action"]
        body = await _body(request)
        if action == "add_bot":
            by = self.emu.user(_int(body.get("by"), "by"))
            await group.add_bot(by, as_admin=bool(body.get("as_admin", False)))
            return _ok({"group": {"id": group.id, "title": group.title}})
        if action == "send":
            user = self.emu.user(_int(body.get("user_id"), "user_id"))
            sent = await group.send(user, str(body.get("text", "")))
            return _ok({"message_id": sent.message_id, "chat_id": sent.chat_id})
        raise ControlError(404, f"unknown group action {action!r}")

    async def faults(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        method = body.get("method")
        if not isinstance(method, str):
            raise ControlError(400, "method is required")
        times = _int(body.get("times", 1), "times")
        chat = body.get("chat_id")
        chat_id = None if chat is None else _int(chat, "chat_id")
        if body.get("hang"):
            seconds = body.get("seconds")
            self.emu.hang_next(
                method,
                times,
                seconds=None if seconds is None else float(seconds),
                apply=bool(body.get("apply", True)),
                chat_id=chat_id,
            )
        else:
            retry_after = body.get("retry_after")
            self.emu.fail_next(
                method,
                times,
                error_code=_int(body.get("error_code", 500), "error_code"),
                description=body.get("description"),
                retry_after=None if retry_after is None else _int(retry_after, "retry_after"),
                chat_id=chat_id,
            )
        return _ok({})

    async def settings(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        if "latency" in body:
            self.emu.latency = float(body["latency"])
        if "latency_max" in body:
            high = body["latency_max"]
            self.emu.latency_max = None if high is None else float(high)
        if "rate_limits" in body:
            self.emu.rate_limits = bool(body["rate_limits"])
        slow = body.get("slow_chat")
        if slow is not None:
            if not isinstance(slow, dict):
                raise ControlError(400, "slow_chat must be {chat_id, seconds}")
            seconds = slow.get("seconds")
            self.emu.slow_chat(
                _int(slow.get("chat_id"), "chat_id"), None if seconds is None else float(seconds)
            )
        return _ok(
            {
                "latency": self.emu.latency,
                "latency_max": self.emu.latency_max,
                "rate_limits": self.emu.rate_limits,
                "slow_chats": {str(k): v for k, v in self.emu.slow_chats.items()},
            }
        )

    async def webhook_info(self, request: web.Request) -> web.StreamResponse:
        since = _int(request.query.get("since", "0"), "since")
        hook = self.emu.world.webhook
        delivery = self.emu.webhook
        return _ok(
            {
                "webhook": hook.url if hook else None,
                "targets": delivery.targets,
                "duplicate_rate": delivery.duplicate_rate,
                "in_flight": delivery.in_flight,
                "deliveries": [_delivery_json(r) for r in self.emu.world.webhook_log[since:]],
            }
        )

    async def webhook_setup(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        targets = body.get("targets", self.emu.webhook.targets)
        rate = body.get("duplicate_rate")
        seed = body.get("seed")
        self.emu.webhook.configure(
            targets=targets,
            duplicate_rate=None if rate is None else float(rate),
            seed=None if seed is None else _int(seed, "seed"),
        )
        return _ok({"targets": self.emu.webhook.targets,
                    "duplicate_rate": self.emu.webhook.duplicate_rate})  # fmt: skip


def _delivery_json(record: WebhookDeliveryRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)


class ControlClient:
    """Drive an emulator in another process through the control API.

    `async with ControlClient("http://127.0.0.1:8081") as emu: user = await emu.add_user()`.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        http_method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        async with self._session.request(
            http_method, f"{self.base_url}{PREFIX}{path}", json=body, params=params
        ) as response:
            payload: dict[str, Any] = await response.json()
        if not payload.get("ok"):
            raise RuntimeError(f"emulator control {http_method} {path}: {payload.get('error')}")
        return payload

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def add_user(self, first_name: str = "Иван", **fields: Any) -> dict[str, Any]:
        payload = await self._call("POST", "/users", {"first_name": first_name, **fields})
        return dict(payload["user"])

    async def send(self, user_id: int, text: str) -> int:
        payload = await self._call("POST", f"/users/{user_id}/send", {"text": text})
        return int(payload["message_id"])

    async def action(self, user_id: int, action: str, **fields: Any) -> dict[str, Any]:
        """sticker / photo / voice / contact / location / block / unblock / deactivate."""
        return await self._call("POST", f"/users/{user_id}/{action}", fields)

    async def press(
        self, user_id: int, label: str, message_id: int | None = None, chat_id: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"label": label}
        if message_id is not None:
            body["message_id"] = message_id
        if chat_id is not None:
            body["chat_id"] = chat_id
        return await self._call("POST", f"/users/{user_id}/press", body)

    async def pay(self, user_id: int, message_id: int | None = None) -> dict[str, Any]:
        """The user pays an invoice (the newest one in their chat by default)."""
        body: dict[str, Any] = {} if message_id is None else {"message_id": message_id}
        return await self._call("POST", f"/users/{user_id}/pay", body)

    async def messages(
        self, chat_id: int, min_count: int = 0, wait: float = 5.0
    ) -> list[dict[str, Any]]:
        """The bot's messages in a chat, once there are at least `min_count` (server waits up
        to `wait` seconds)."""
        payload = await self._call(
            "GET", f"/chats/{chat_id}/messages", query={"min_count": min_count, "timeout": wait}
        )
        return list(payload["messages"])

    async def stats(self) -> dict[str, Any]:
        return dict((await self._call("GET", "/stats"))["stats"])

    async def requests(self, method: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return list(
            (await self._call("GET", "/requests", query={"method": method, "since": since}))[
                "requests"
            ]
        )

    async def fault(self, method: str, **fields: Any) -> None:
        await self._call("POST", "/faults", {"method": method, **fields})

    async def webhook(
        self,
        targets: list[str] | None = None,
        duplicate_rate: float | None = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Deliver to `targets` in turn (a load balancer), `duplicate_rate` of them twice."""
        body: dict[str, Any] = {"targets": targets}
        if duplicate_rate is not None:
            body["duplicate_rate"] = duplicate_rate
        if seed is not None:
            body["seed"] = seed
        return await self._call("POST", "/webhook", body)
