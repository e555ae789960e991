"""Several instances on one database: each stands for a bot process with its own engine
(its own connections), as two `python -m bot run` behind a load balancer would be.

- a touch or a card is claimed by exactly one instance (SKIP LOCKED on PostgreSQL; SQLite's
  single writer on SQLite);
- one user's updates are handled one at a time across instances (an advisory lock held
  from the start of the update to its end, replies included), while other users' are not
  held up;
- the daily digest goes out once whichever instances' schedulers fire;
- a second `python -m bot run` on the same SQLite file refuses to start and says why, and
  a killed instance leaves no lock behind.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Chat, Message, Update, User
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from telegram_emulator import DEFAULT_TOKEN, TelegramEmulator

from bot import db
from bot.middlewares import DbSession, PerUserOrder
from bot.scheduler import once_a_day
from funnel.core import store
from funnel.core.clock import FakeClock
from funnel.core.models import Lead, Notification, Touch
from funnel.followups import touch_queue
from funnel.handoff import notifications
from tests import engines
from tests.e2e.conftest import fast_limiter, settings_for

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
ZONE_NAME = "Europe/Moscow"


@pytest.fixture
async def instances(engine: AsyncEngine) -> AsyncIterator[list[async_sessionmaker[AsyncSession]]]:
    """Three instances' session makers on the test's (migrated) database."""
    engines_ = [db.create_engine(str(engine.url.render_as_string(hide_password=False)))
                for _ in range(3)]  # fmt: skip
    yield [db.sessionmaker(e) for e in engines_]
    for e in engines_:
        await e.dispose()


async def _leads_with_work(sessions: async_sessionmaker[AsyncSession], n: int) -> list[int]:
    async with sessions() as session, session.begin():
        leads = [
            store.new_lead(
                store.Profile(user_id=70_000 + i, chat_id=70_000 + i, first_name="Ann"),
                source="race",
                stage="engaged",
                position=None,
                version="race@1",
                at=NOW,
            )
            for i in range(n)
        ]
        session.add_all(leads)
        await session.flush()
        ids = [lead.id for lead in leads]
        await session.execute(
            insert(Touch),
            [{"lead_id": lead_id, "campaign": "nurture", "step": 1, "cycle": 1, "due_at": NOW,
              "status": "planned", "attempts": 0, "postponed": 0, "created_at": NOW}
             for lead_id in ids],
        )  # fmt: skip
        await session.execute(
            insert(Notification),
            [{"lead_id": lead_id, "kind": "manager_card", "occasion": "race", "due_at": NOW,
              "status": "planned", "attempts": 0, "created_at": NOW}
             for lead_id in ids],
        )  # fmt: skip
    return ids


async def test_each_touch_and_card_is_claimed_by_one_instance(
    instances: list[async_sessionmaker[AsyncSession]],
) -> None:
    await _leads_with_work(instances[0], 120)
    async with instances[0]() as session:
        touch_ids = sorted((await session.scalars(select(Touch.id))).all())
        card_ids = sorted((await session.scalars(select(Notification.id))).all())

    claimed_touches: Counter[int] = Counter()
    claimed_cards: Counter[int] = Counter()

    async def instance(sessions: async_sessionmaker[AsyncSession], offset: int) -> None:
        # Every instance sees every row due and claims in overlapping batches, as their
        # couriers would once their rate-limit slots come.
        order = touch_ids[offset:] + touch_ids[:offset]
        cards = card_ids[offset:] + card_ids[:offset]
        for start in range(0, len(order), 7):
            async with sessions() as session, session.begin():
                got = await touch_queue.claim_for_sending(session, order[start : start + 9], NOW)
            claimed_touches.update(got)
            async with sessions() as session, session.begin():
                got = await notifications.claim(session, cards[start : start + 9])
            claimed_cards.update(got)
            await asyncio.sleep(0)

    await asyncio.gather(*(instance(s, k * 40) for k, s in enumerate(instances)))
    assert set(claimed_touches) == set(touch_ids), "every touch went to an instance"
    assert set(claimed_cards) == set(card_ids)
    assert max(claimed_touches.values()) == 1, "no touch went to two instances"
    assert max(claimed_cards.values()) == 1, "no card went to two instances"
    async with instances[1]() as session:
        attempts = (await session.scalars(select(Touch.attempts))).all()
    assert set(attempts) == {1}


@engines.needs_postgres
async def test_instances_queue_disjoint_touches_until_the_lease_runs_out(
    instances: list[async_sessionmaker[AsyncSession]],
) -> None:
    """What one instance read into its queue another does not read too (it would spend a
    shared rate-limit slot on a claim it then loses); once the lease is over, it may."""
    await _leads_with_work(instances[0], 30)

    async def read(
        sessions: async_sessionmaker[AsyncSession], at: datetime, holder: str
    ) -> set[int]:
        async with sessions() as session, session.begin():
            due = await touch_queue.due_touches(session, at, 12, holder=holder)
            return {touch.id for touch, _ in due}

    first, second, third = await asyncio.gather(
        *(read(s, NOW, f"instance-{n}") for n, s in enumerate(instances))
    )
    assert not (first & second or first & third or second & third)
    assert sorted(map(len, (first, second, third))) == [6, 12, 12]
    assert await read(instances[0], NOW, "a-fourth") == set(), "every touch is someone's"
    # Its own leases do not hold an instance back; released, they are anyone's at once.
    assert await read(instances[0], NOW, "instance-0") == first
    async with instances[0]() as session, session.begin():
        await touch_queue.release_leases(session, "instance-1")
    assert await read(instances[2], NOW, "a-fourth") == second
    later = NOW + touch_queue.LEASE + timedelta(seconds=1)
    assert len(await read(instances[1], later, "a-fifth")) == 12, "a dead one's come back"
    # A starting instance gives every lease back (a killed one's queue goes at once).
    async with instances[0]() as session, session.begin():
        await touch_queue.release_leases(session)
    assert len(await read(instances[2], NOW, "a-sixth")) == 12


def _update(update_id: int, user_id: int, text: str) -> Update:
    user = User(id=user_id, is_bot=False, first_name="Ann")
    message = Message(
        message_id=update_id,
        date=NOW,
        chat=Chat(id=user_id, type="private"),
        from_user=user,
        text=text,
    )
    return Update(update_id=update_id, message=message)


@engines.needs_postgres
async def test_one_users_updates_never_interleave_across_instances(
    instances: list[async_sessionmaker[AsyncSession]],
) -> None:
    """Two instances' DbSession middlewares each handle a stream of the same users'
    updates; a handler that takes a while (its reply on the wire) never overlaps another
    handler of the same user, whichever instance runs it."""
    spans: dict[int, list[tuple[float, float, int]]] = {1: [], 2: []}
    concurrent = {"now": 0, "most": 0}

    async def handler(event: Any, data: dict[str, Any]) -> None:
        assert isinstance(event, Update) and event.message is not None
        assert event.message.from_user is not None
        began = time.monotonic()
        concurrent["now"] += 1
        concurrent["most"] = max(concurrent["most"], concurrent["now"])
        session: AsyncSession = data["session"]
        await session.execute(select(func.count()).select_from(Lead))
        await session.commit()  # the handler commits, then its reply leaves
        await asyncio.sleep(0.03)
        concurrent["now"] -= 1
        spans[event.message.from_user.id].append((began, time.monotonic(), event.update_id))

    # Each instance as its dispatcher has them: in order per user in the process, then
    # the session (and the lock across instances).
    middlewares = [(PerUserOrder(), DbSession(sessions)) for sessions in instances[:2]]
    clock = FakeClock(NOW)

    async def feed(k: int, update: Update) -> None:
        order, database = middlewares[k]
        await order(functools.partial(database, handler), update, {"clock": clock})

    # Both users' updates go to both instances, alternately.
    updates = [_update(n, 1 + (n // 2) % 2, f"message {n}") for n in range(24)]
    await asyncio.gather(*(feed(n % 2, update) for n, update in enumerate(updates)))
    for user_spans in spans.values():
        assert len(user_spans) == 12
        ordered = sorted(user_spans)
        for (_, ended, _), (began, _, _) in itertools.pairwise(ordered):
            assert began >= ended, "two updates of one user overlapped"
    assert concurrent["most"] >= 2, "different users were handled at the same time"
    for _, middleware in middlewares:
        assert middleware.user_locks is not None
        await middleware.user_locks.close()


@engines.needs_postgres
async def test_two_apps_answer_one_users_taps_in_order(tmp_path: Path, clock: FakeClock) -> None:
    """Two bots (two Apps on one PostgreSQL database) get one prospect's updates
    alternately, all at once: every update is answered once, and the answers come in the
    order of the taps, as with one instance."""
    from bot.app import App

    async with TelegramEmulator(rate_per_second=1000, chat_rate_per_second=200,
                                chat_burst=50) as emu:  # fmt: skip
        settings = settings_for(emu, tmp_path)
        apps = [App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
                for _ in range(2)]  # fmt: skip
        for app in apps:
            await app.prepare()
        try:
            user = emu.add_user("Ann")
            texts = [f"/start vk_{n}" if n % 3 == 0 else "/help" for n in range(12)]
            updates = [_update(n + 1, user.id, text) for n, text in enumerate(texts)]
            await asyncio.gather(
                *(apps[n % 2].dispatcher.feed_update(apps[n % 2].bot, update)
                  for n, update in enumerate(updates))
            )  # fmt: skip
            await asyncio.sleep(0.2)
            sent = [r for r in emu.requests_for("sendMessage") if r.status == 200]
            replies = [int(r.params["reply_to_message_id"]) for r in sent
                       if "reply_to_message_id" in r.params]  # fmt: skip
            assert len(sent) >= len(updates), "every update was answered"
            async with apps[0].sessions() as session:
                leads = (await session.scalars(select(Lead).where(Lead.user_id == user.id))).all()
            assert len(leads) == 1, "one lead, never two from two instances"
            if replies:
                assert replies == sorted(replies)
        finally:
            for app in apps:
                await app.stop()


async def test_the_daily_job_runs_once_across_instances(
    instances: list[async_sessionmaker[AsyncSession]],
) -> None:
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(ZONE_NAME)
    ran: list[int] = []

    def job(k: int) -> Callable[[], Any]:
        async def send() -> None:
            ran.append(k)

        return send

    clock = FakeClock(NOW)
    jobs = [once_a_day(sessions, "daily_digest", zone, job(k), clock)
            for k, sessions in enumerate(instances)]  # fmt: skip
    results = await asyncio.gather(*(run() for run in jobs))
    assert sorted(results) == [False, False, True] and len(ran) == 1
    # The same day again (a misfire, a restart): nobody runs it.
    assert not any(await asyncio.gather(*(run() for run in jobs)))
    # The next day: once again.
    clock.advance(timedelta(days=1))
    results = await asyncio.gather(*(run() for run in jobs))
    assert sum(results) == 1 and len(ran) == 2


async def test_the_app_sends_the_digest_once_with_two_schedulers(
    tmp_path: Path, clock: FakeClock
) -> None:
    from bot.app import App

    async with TelegramEmulator(rate_per_second=1000, chat_rate_per_second=200,
                                chat_burst=50) as emu:  # fmt: skip
        admin = emu.add_user("Owner", username="owner")
        await admin.send("/start")
        settings = settings_for(emu, tmp_path, admin_ids=str(admin.id))
        apps = [App(settings, token=DEFAULT_TOKEN, clock=clock, limiter=fast_limiter())
                for _ in range(2)]  # fmt: skip
        try:
            await apps[0].prepare()
            jobs = []
            for app in apps:
                job = app.scheduler.get_job("daily_digest")
                assert job is not None
                jobs.append(job.func)
            await asyncio.gather(*(run() for run in jobs))
            digests = [r for r in emu.requests_for("sendMessage")
                       if r.status == 200 and int(r.params["chat_id"]) == admin.id]  # fmt: skip
            assert len(digests) == 1
        finally:
            for app in apps:
                await app.stop()


# -- one instance per SQLite file -------------------------------------------------------


def _bot_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "REDIS_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
            "BOT_TOKEN": DEFAULT_TOKEN,
            # Nothing listens there: the refusal must come before any Telegram call.
            "TELEGRAM_API_URL": "http://127.0.0.1:9",
            "DATABASE_URL": url,
        }
    )
    return env


@engines.sqlite_only
def test_a_second_instance_on_one_sqlite_file_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}"
    held = db.single_instance_lock(url)
    assert held is not None
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bot", "run"],
            cwd=tmp_path,
            env=_bot_env(url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        held.close()
    assert result.returncode == 1
    assert "another instance of the bot" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr and "PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


@engines.sqlite_only
def test_a_killed_instance_leaves_no_lock_behind(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.sqlite3'}"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from bot import db; held = db.single_instance_lock(sys.argv[1]); "
         "print('held', flush=True); time.sleep(120)", url],
        cwd=ROOT, env=_bot_env(url), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(db.InstanceLocked, match=f"pid {holder.pid}"):
            db.single_instance_lock(url)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    again = db.single_instance_lock(url)
    assert again is not None
    again.close()
    # PostgreSQL and in-memory databases take no such lock.
    assert db.single_instance_lock("postgresql+asyncpg://u@127.0.0.1/x") is None
    assert db.single_instance_lock("sqlite+aiosqlite:///:memory:") is None


def _opened_file(url: str) -> Path:
    """The file SQLite itself opens for `url` (through the engine's driver), from SQLite."""
    import sqlite3

    from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
    from sqlalchemy.engine import make_url

    [name], options = SQLiteDialect_aiosqlite().create_connect_args(make_url(url))
    connection = sqlite3.connect(name, uri=bool(options.get("uri")))
    try:
        [(_, _, file)] = connection.execute("PRAGMA database_list").fetchall()
    finally:
        connection.close()
    return Path(file).resolve()


@engines.sqlite_only
def test_the_lock_sits_beside_the_file_sqlite_opens_for_every_url_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data dir"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    absolute = data / "bot.sqlite3"
    forms = [
        f"sqlite+aiosqlite:///{absolute}",
        "sqlite+aiosqlite:///data dir/bot.sqlite3",  # relative to the working directory
        "sqlite+aiosqlite:///./data dir/../data dir/bot.sqlite3",
        f"sqlite+aiosqlite:///file:{absolute}?uri=true",
        f"sqlite+aiosqlite:///file:{str(absolute).replace(' ', '%20')}?uri=true&mode=rwc",
        f"sqlite+aiosqlite:///file://{absolute}?uri=true",
        f"sqlite+aiosqlite:///file://localhost{absolute}?uri=true",
        "sqlite+aiosqlite:///file:data%20dir/bot.sqlite3?uri=true",
    ]
    for url in forms:
        assert _opened_file(url) == absolute, url
        held = db.single_instance_lock(url)
        assert held is not None, url
        try:
            assert Path(held.name) == absolute.with_name("bot.sqlite3.lock"), url
            # Every other spelling of the same file is refused while this one holds it.
            for other in forms:
                with pytest.raises(db.InstanceLocked):
                    db.single_instance_lock(other)
        finally:
            held.close()
    # Nothing was made where a URI read as a path would point (a folder named "file:").
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data dir"]
    assert sorted(p.name for p in data.iterdir()) == ["bot.sqlite3", "bot.sqlite3.lock"]
    # In-memory URIs take no lock.
    for url in (
        "sqlite+aiosqlite:///file::memory:?uri=true",
        "sqlite+aiosqlite:///file:shared?mode=memory&cache=shared&uri=true",
        "sqlite+aiosqlite://",
    ):
        assert db.single_instance_lock(url) is None, url


@engines.sqlite_only
def test_a_second_instance_through_a_uri_url_refuses_to_start(tmp_path: Path) -> None:
    """Two `python -m bot run` on one file, each with the `file:` URI form: the second one is
    refused (the lock was once put in a `file:` folder of the working directory, so both
    ran)."""
    url = f"sqlite+aiosqlite:///file:{tmp_path / 'bot.sqlite3'}?uri=true"
    first = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from bot import db; held = db.single_instance_lock(sys.argv[1]); "
         "print('held', flush=True); time.sleep(120)", url],
        cwd=tmp_path, env=_bot_env(url), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "held"
        second = subprocess.run(
            [sys.executable, "-m", "bot", "run"],
            cwd=tmp_path,
            env=_bot_env(url),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert second.returncode == 1
    assert f"another instance of the bot (pid {first.pid})" in second.stderr
    assert "Traceback" not in second.stderr
    assert (tmp_path / "bot.sqlite3.lock").exists() and not (tmp_path / "file:").exists()
