"""The emulator's webhook delivery, against small receivers in this test: the secret header,
a resend after anything but 2xx, several targets in turn, duplicates, one sender's order,
getUpdates refused while a webhook is set, and the control API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram_emulator import ControlClient, TelegramEmulator
from telegram_emulator.server import DEFAULT_TOKEN


class Receiver:
    """A webhook that answers the statuses it is told, in order (then 200), and records."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.got: list[tuple[int, str | None, dict[str, Any]]] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(self.app)
        self.url = ""

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        status = self.statuses.pop(0) if self.statuses else 200
        self.got.append((status, request.headers.get("X-Telegram-Bot-Api-Secret-Token"), body))
        return web.Response(status=status)

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"

    async def stop(self) -> None:
        await self.runner.cleanup()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made = [Receiver(), Receiver()]
    for receiver in made:
        await receiver.start()
    yield made
    for receiver in made:
        await receiver.stop()


async def call(emu: TelegramEmulator, method: str, **params: Any) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{emu.base_url}/bot{DEFAULT_TOKEN}/{method}", json=params) as response,
    ):
        payload: dict[str, Any] = await response.json()
        return payload


async def test_updates_go_to_the_webhook_with_the_secret_and_are_resent_without_a_200(
    receivers: list[Receiver],
) -> None:
    receiver = receivers[0]
    receiver.statuses = [500, 401]
    async with TelegramEmulator() as emu:
        answer = await call(emu, "setWebhook", url=receiver.url, secret_token="abc_DEF-1")
        assert answer == {"ok": True, "result": True}
        polled = await call(emu, "getUpdates")
        assert polled["error_code"] == 409 and "webhook is active" in polled["description"]
        user = emu.add_user("Анна")
        await user.send("привет")
        await emu.wait_until(lambda: not emu.pending_updates and not emu.webhook.in_flight, 10)
        assert [status for status, _, _ in receiver.got] == [500, 401, 200]
        assert {secret for _, secret, _ in receiver.got} == {"abc_DEF-1"}
        assert len({body["update_id"] for _, _, body in receiver.got}) == 1
        assert receiver.got[0][2]["message"]["text"] == "привет"
        assert emu.stats.webhook_failed == 2
        info = (await call(emu, "getWebhookInfo"))["result"]
        assert info["url"] == receiver.url and info["pending_update_count"] == 0
        assert "401" in info["last_error_message"]
        # Removed: updates wait for getUpdates again.
        await call(emu, "deleteWebhook")
        await user.send("ещё")
        polled = await call(emu, "getUpdates")
        assert [u["message"]["text"] for u in polled["result"]] == ["ещё"]


async def test_several_targets_in_turn_some_updates_twice_one_sender_in_order(
    receivers: list[Receiver],
) -> None:
    async with TelegramEmulator(
        webhook_targets=[r.url for r in receivers], duplicate_rate=0.5, duplicate_seed=3
    ) as emu:
        await call(emu, "setWebhook", url="https://bot.example/public", secret_token="s")
        users = [emu.add_user(f"U{n}") for n in range(5)]
        for n in range(4):
            for user in users:
                await user.send(f"{user.id}:{n}")
        await emu.wait_until(lambda: not emu.pending_updates and not emu.webhook.in_flight, 10)
        counts = [len(r.got) for r in receivers]
        assert min(counts) >= 8, counts  # both instances got their share
        posts = [body for r in receivers for _, _, body in r.got]
        ids = [body["update_id"] for body in posts]
        assert len(set(ids)) == 20
        assert emu.stats.webhook_duplicates == len(ids) - 20 > 0
        # Each update's first delivery per sender in the order sent.
        first: dict[int, float] = {}
        for record in emu.webhook_deliveries:
            first.setdefault(record.update_id, record.at)
        by_user: dict[str, list[int]] = {}
        for body in sorted(posts, key=lambda b: first[b["update_id"]]):
            sender, _, n = body["message"]["text"].partition(":")
            if int(n) not in by_user.setdefault(sender, []):
                by_user[sender].append(int(n))
        assert all(order == [0, 1, 2, 3] for order in by_user.values()), by_user


async def test_the_control_api_sets_the_targets_and_the_duplicate_rate(
    receivers: list[Receiver],
) -> None:
    async with TelegramEmulator() as emu, ControlClient(emu.base_url) as control:
        await call(emu, "setWebhook", url="https://bot.example/public")
        answer = await control.webhook([r.url for r in receivers], duplicate_rate=1.0, seed=1)
        assert answer["targets"] == [r.url for r in receivers] and answer["duplicate_rate"] == 1
        user = emu.add_user("Анна")
        await user.send("раз")
        await emu.wait_until(lambda: not emu.pending_updates and not emu.webhook.in_flight, 10)
        assert [len(r.got) for r in receivers] == [1, 1], "one update, twice, to both"
        with pytest.raises(RuntimeError, match="duplicate_rate"):
            await control.webhook(None, duplicate_rate=2.0)
        with pytest.raises(RuntimeError, match="targets"):
            await control.webhook([], duplicate_rate=0)
        bad = await call(emu, "setWebhook", url="https://x.example", secret_token="no spaces")
        assert bad["error_code"] == 400


async def test_a_webhook_that_cannot_be_reached_keeps_the_update(
    receivers: list[Receiver],
) -> None:
    async with TelegramEmulator(webhook_targets=["http://127.0.0.1:1/hook"]) as emu:
        await call(emu, "setWebhook", url="https://bot.example/public")
        user = emu.add_user("Анна")
        await user.send("раз")
        await emu.wait_until(lambda: emu.stats.webhook_failed >= 2, 10)
        assert len(emu.pending_updates) == 1
        emu.webhook.configure(targets=[receivers[0].url])
        await emu.wait_until(lambda: not emu.pending_updates, 10)
        await asyncio.sleep(0)
        assert [status for status, _, _ in receivers[0].got] == [200]
