"""Webhook mode on SQLite, one instance: the emulator POSTs updates to the bot's webhook as
Telegram does (the secret token header, resending what got no 200). A wrong secret is
refused and counted, an update delivered twice is handled once, a whole dialogue works,
`/metrics` is scraped and `/healthz` tells a reachable database from a gone or locked one."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiogram.types import Update
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from telegram_emulator import TelegramEmulator
from telegram_emulator.server import DEFAULT_TOKEN

from bot import inbox, transactions
from bot.app import App
from bot.scheduler import TICK_JOB_ID
from funnel.core.clock import FakeClock
from funnel.core.models import Answer, InboxUpdate, Lead, Touch
from tests.e2e.conftest import HOT, fast_limiter, settings_for
from tests.engines import sqlite_only

SECRET = "s3cret_Token-for-tests"
PATH = "/telegram"


@asynccontextmanager
async def webhook_app(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, **extra: object
) -> AsyncIterator[App]:
    """The bot in webhook mode on a free local port; the emulator delivers to it (as a load
    balancer would: the public URL in setWebhook is only a name here)."""
    settings = settings_for(
        emu,
        tmp_path,
        webhook_url="https://bot.school.example/telegram",
        webhook_secret=SECRET,
        webhook_listen="127.0.0.1:0",
        webhook_path=PATH,
        **extra,
    )
    app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await app.start(scheduler=False, webhook=True)
    assert app.web is not None
    emu.webhook.configure(targets=[app.web.address + PATH])
    try:
        yield app
    finally:
        await app.stop()


def url(app: App, path: str) -> str:
    assert app.web is not None
    return app.web.address + path


async def scrape(app: App) -> dict[str, list[Any]]:
    """/metrics as {family name: [samples]}, parsed by the official client's parser."""
    async with aiohttp.ClientSession() as http, http.get(url(app, "/metrics")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(body)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float:
    for family in families.values():
        for item in family:
            if item.name == sample and all(item.labels.get(k) == v for k, v in labels.items()):
                return float(item.value)
    raise AssertionError(f"no sample {sample} {labels} in /metrics")


async def post(app: App, body: Any, secret: str | None) -> int:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url(app, PATH), json=body, headers=headers) as response,
    ):
        return response.status


def start_update(update_id: int, user_id: int, text: str = "/start vk_ads") -> dict[str, Any]:
    user = {"id": user_id, "is_bot": False, "first_name": "Анна", "language_code": "ru"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_772_528_400,
            "chat": {"id": user_id, "type": "private", "first_name": "Анна"},
            "from": user,
            "text": text,
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        },
    }


async def test_setwebhook_carries_the_secret_and_every_update_type(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock):
        (request,) = emu.requests_for("setWebhook")
        params = request.params
        assert params["url"] == "https://bot.school.example/telegram"
        assert params["secret_token"] == SECRET
        assert params.get("drop_pending_updates") in (None, False)
        assert {"message", "callback_query", "my_chat_member", "pre_checkout_query"} <= set(
            params["allowed_updates"]
        )
        assert not emu.requests_for("deleteWebhook"), "webhook mode never removes the webhook"
    assert not emu.requests_for("deleteWebhook"), "a stopping instance leaves it for the others"


async def test_a_wrong_or_missing_secret_is_refused_counted_and_not_logged(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with webhook_app(emu, tmp_path, clock) as app:
        forged = start_update(900_001, 555)
        assert await post(app, forged, None) == 401
        assert await post(app, forged, "wrong-token") == 401
        assert await post(app, forged, SECRET + "x") == 401
        assert await post(app, forged, "") == 401
        families = await scrape(app)
        assert value(families, "leadbot_webhook_rejected_total", reason="bad_secret") == 4
        async with app.sessions() as session:
            stored = await session.scalar(select(func.count()).select_from(InboxUpdate))
        assert stored == 0, "a refused update is never stored"
        assert not emu.messages(555)
        # A body that is not an update, with the right secret: 400, counted, nothing stored.
        assert await post(app, {"nonsense": True}, SECRET) == 400
        assert await post(app, ["a", "list"], SECRET) == 400
        families = await scrape(app)
        assert value(families, "leadbot_webhook_rejected_total", reason="bad_body") == 2
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "webhook.rejected" in logged
    assert "wrong-token" not in logged and SECRET not in logged


async def test_a_dialogue_over_the_webhook_each_update_delivered_twice_is_handled_once(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:
        assert app.web is not None
        # Every update goes out twice at once, as Telegram resending one it thinks was lost.
        emu.webhook.configure(targets=[app.web.address + PATH], duplicate_rate=1.0, seed=1)
        user = emu.add_user("Анна")
        await user.send("/start vk_ads")
        message = await user.next_message()
        assert "1 из 4" in message.plain_text
        for label in HOT:
            await user.press(message, label)
            message = await user.next_message()
        await emu.wait_until(lambda: not emu.pending_updates and not emu.webhook.in_flight, 10)
        async with app.sessions() as session:
            lead = await session.scalar(select(Lead).where(Lead.user_id == user.id))
            assert lead is not None
            answers = (
                await session.scalars(select(Answer.question).where(Answer.lead_id == lead.id))
            ).all()
        assert len(answers) == len(HOT) and len(set(answers)) == len(HOT), answers
        texts = [m.plain_text for m in user.messages]
        assert len(texts) == len(set(texts)) == len(HOT) + 1, texts  # no reply twice
        assert emu.stats.webhook_duplicates == len(HOT) + 1
        families = await scrape(app)
        assert value(families, "leadbot_updates_duplicate_total") == len(HOT) + 1
        assert value(families, "leadbot_updates_total", type="message") == 1
        assert value(families, "leadbot_updates_total", type="callback_query") == len(HOT)


async def test_an_update_delivered_again_is_skipped_and_one_numbered_anew_is_handled(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:
        user = emu.add_user("Анна")
        update = start_update(700_001, user.id)
        assert await post(app, update, SECRET) == 200
        first = await user.next_message()
        assert await post(app, update, SECRET) == 200  # Telegram resending it
        assert await post(app, update, SECRET) == 200
        assert app.web is not None
        await app.web.handling.drain(5)
        assert [m.message_id for m in user.messages] == [first.message_id]
        families = await scrape(app)
        assert value(families, "leadbot_updates_duplicate_total") == 2
        # A Bot API server started anew hands out the same id for another update: it is
        # new, it is answered, and the log says why ids repeat.
        other = emu.add_user("Борис")
        assert await post(app, start_update(700_001, other.id, "/start other"), SECRET) == 200
        assert (await other.next_message()).buttons
        async with app.sessions() as session:
            lead = await session.scalar(select(Lead).where(Lead.user_id == user.id))
        assert lead is not None and lead.source == "vk_ads"
    assert "inbox.renumbered" in caplog.text


async def test_metrics_has_every_family_with_sensible_values(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:
        user = emu.add_user("Анна")
        # The first reply meets a 429: the bot waits and sends it again.
        emu.fail_next("sendMessage", error_code=429, retry_after=1, chat_id=user.id)
        await user.send("/start vk_ads")
        await user.next_message(timeout=10)
        # The reply can arrive before its update's task has finished (and left in-flight).
        assert app.web is not None
        await app.web.handling.drain(5)
        async with app.sessions() as session:
            lead = await session.scalar(select(Lead).where(Lead.user_id == user.id))
            assert lead is not None
            # A follow-up 90 s overdue: the outbox's depth and age show it.
            now = clock.now()
            session.add(
                Touch(lead_id=lead.id, campaign="nurture", step=1, cycle=1,
                      due_at=now - timedelta(seconds=90), created_at=now)
            )  # fmt: skip
            await session.commit()
        job = app.scheduler.get_job(TICK_JOB_ID)
        assert job is not None
        families = await scrape(app)
        assert value(families, "leadbot_outbox_due", outbox="touches") == 1
        assert value(families, "leadbot_outbox_oldest_due_seconds", outbox="touches") == 90
        assert value(families, "leadbot_outbox_due", outbox="notifications") == 0
        assert value(families, "leadbot_outbox_oldest_due_seconds", outbox="notifications") == 0
        await job.func()  # one scheduler round, timed
        families = await scrape(app)

    assert value(families, "leadbot_updates_total", type="message") == 1
    assert value(families, "leadbot_handler_seconds_count", type="message") == 1
    handled = value(families, "leadbot_handler_seconds_sum", type="message")
    assert 0 < handled < 30
    assert value(families, "leadbot_telegram_429_total") == 1
    assert value(families, "leadbot_sends_total", outcome="retried") == 1
    assert value(families, "leadbot_sends_total", outcome="sent") >= 1
    for outcome in ("refused", "blocked", "unknown"):
        assert value(families, "leadbot_sends_total", outcome=outcome) >= 0
    assert value(families, "leadbot_tick_seconds_count", job="outbox") == 1
    assert 0 < value(families, "leadbot_tick_seconds_sum", job="outbox") < 30
    assert "leadbot_transaction_retries" in families
    assert value(families, "leadbot_webhook_rejected_total", reason="bad_secret") == 0
    assert value(families, "leadbot_updates_in_flight") == 0


async def test_database_retries_are_counted(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:
        tries = 0

        async def busy_once() -> int:
            nonlocal tries
            tries += 1
            if tries == 1:
                locked = sqlite3.OperationalError("database is locked")
                raise OperationalError("UPDATE leads", {}, locked)
            return tries

        assert await transactions.retrying(busy_once, "test.work") == 2
        families = await scrape(app)
        assert value(families, "leadbot_transaction_retries_total", work="test.work") == 1


@sqlite_only  # it locks and deletes the SQLite file itself
async def test_healthz_answers_200_and_503_when_the_database_is_locked_or_gone(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:

        async def health() -> tuple[int, dict[str, Any]]:
            async with aiohttp.ClientSession() as http, http.get(url(app, "/healthz")) as r:
                return r.status, await r.json()

        status, body = await health()
        assert (status, body["status"], body["database"]) == (200, "ok", "ok"), body
        assert body["redis"] == "not configured"

        database = tmp_path / "bot.sqlite3"
        other = sqlite3.connect(database, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another writer holds the file
        try:
            status, body = await health()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert status == 503 and body["failed"] == ["database"], body
        assert "locked" in body["database"]

        status, _ = await health()
        assert status == 200

        for path in tmp_path.glob("bot.sqlite3*"):
            path.unlink()
        status, body = await health()
        assert status == 503 and "database" in body["failed"], body
        assert not database.exists(), "the health check must not create an empty database"


async def test_healthz_names_redis_when_it_does_not_answer(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    # Port 1 on this machine: nothing listens there.
    async with webhook_app(emu, tmp_path, clock, redis_url="redis://127.0.0.1:1/0") as app:
        async with aiohttp.ClientSession() as http, http.get(url(app, "/healthz")) as r:
            status, body = r.status, await r.json()
        assert status == 503 and body["failed"] == ["redis"], body
        assert body["database"] == "ok"


async def test_a_stopping_instance_refuses_new_updates_so_telegram_resends_them(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:
        assert app.web is not None
        app.web.stop_accepting()
        assert await post(app, start_update(800_001, 4242), SECRET) == 503
        async with aiohttp.ClientSession() as http, http.get(url(app, "/healthz")) as r:
            assert r.status == 503 and (await r.json())["status"] == "stopping"
        families = await scrape(app)
        assert value(families, "leadbot_webhook_rejected_total", reason="stopping") == 1


async def test_an_update_stored_and_not_handled_is_handled_at_the_next_start(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    user = emu.add_user("Анна")
    # What a kill right after the 200 leaves: the update stored, never handled.
    async with webhook_app(emu, tmp_path, clock) as app, app.sessions() as session:
        update = Update.model_validate(start_update(600_001, user.id))
        stored = await inbox.store(session, [update], clock.now(), app.bot.id)
        assert [s.update.update_id for s in stored] == [600_001]
        await session.commit()
    assert not user.messages
    async with webhook_app(emu, tmp_path, clock) as app:
        message = await user.next_message(timeout=10)
        assert "1 из 4" in message.plain_text
        async with app.sessions() as session:
            row = await session.scalar(select(InboxUpdate).where(InboxUpdate.update_id == 600_001))
        assert row is not None and row.handled_at is not None and row.payload == ""


async def test_polling_mode_serves_metrics_when_asked(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    settings = settings_for(emu, tmp_path, metrics_listen="127.0.0.1:0")
    app = App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
    await app.start(scheduler=False)
    try:
        user = emu.add_user("Анна")
        await user.send("/start")
        await user.next_message()
        families = await scrape(app)
        assert value(families, "leadbot_updates_total", type="message") == 1
        assert app.web is not None and app.web.webhook_path is None
        async with aiohttp.ClientSession() as http:
            async with http.post(app.web.address + PATH, json={}) as response:
                assert response.status in (404, 405), "no webhook in polling mode"
            async with http.get(app.web.address + "/healthz") as response:
                assert response.status == 200
    finally:
        await app.stop()


async def test_a_stop_lets_the_update_being_handled_finish(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    user = emu.add_user("Анна")
    async with webhook_app(emu, tmp_path, clock) as app:
        # The reply takes a second on the wire: the stop lands while the update is handled.
        emu.hang_next("sendMessage", seconds=1.0, chat_id=user.id)
        await user.send("/start vk_ads")
        await emu.wait_until(lambda: emu.requests_for("sendMessage"), 10)
        assert app.web is not None and app.web.handling.count == 1
        await app.stop()
        assert user.messages and "1 из 4" in user.messages[0].plain_text
        async with app.sessions() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(InboxUpdate)
                .where(InboxUpdate.handled_at.is_(None))
            )
        assert pending == 0, "the update in flight finished and was marked handled"


async def test_hostile_bodies_are_refused_without_harm(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock
) -> None:
    async with webhook_app(emu, tmp_path, clock) as app:
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with aiohttp.ClientSession() as http:
            for body in (b"not json at all", b"{", b'{"update_id": "x"}', b"\xff\xfe"):
                async with http.post(url(app, PATH), data=body, headers=headers) as response:
                    assert response.status == 400, body
            # Far past any real update: refused by the server before it is read whole.
            huge = b'{"update_id": 1, "message": {"text": "' + b"a" * 3_000_000 + b'"}}'
            async with http.post(url(app, PATH), data=huge, headers=headers) as response:
                assert response.status == 413
            async with http.get(url(app, PATH)) as response:
                assert response.status == 405
        # A real update with a text far over Telegram's 4096: stored, handled, no crash.
        user = emu.add_user("Анна")
        assert (
            await post(app, start_update(500_001, user.id, "/start " + "я" * 10_000), SECRET)
            == 200
        )
        await user.next_message(timeout=10)
        families = await scrape(app)
        assert value(families, "leadbot_webhook_rejected_total", reason="bad_body") == 4
        async with app.sessions() as session:
            stored = await session.scalar(select(func.count()).select_from(InboxUpdate))
        assert stored == 1
