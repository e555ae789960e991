"""Faults with a real `python -m bot run` process against the emulator (smaller than
`make bench-faults`):

- SIGTERM in the middle of a follow-up wave the rate limiter holds back: queued touches are
  sent after the restart, each once, none "unknown";
- SIGTERM while managers' cards wait for the group's 20-a-minute limit: the same for cards;
- kill -9 in the middle of a wave: nothing delivered twice, and what is lost is no more than
  the rows left "unknown", which are no more than the requests that can be on the wire;
- kill -9 after getUpdates handed the bot a tap and before the bot handled it: after the
  restart the answer is recorded and the prospect gets the next question.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from telegram_emulator import SimUser, TelegramEmulator

from bench.faults_harness import (
    HOT,
    LAST_QUESTION,
    BotProcess,
    Db,
    Gates,
    Prospect,
    cards_delivered,
    create_database,
    script_label,
    seed_wave,
    touches_delivered,
    wait_for,
    write_wave_script,
)
from tests import engines

# At 10 messages a second and at most 80 ms a request, one or two requests are on the wire at
# any moment; 10 leaves room for slow commits around them. Rows waiting for the rate limiter
# are not on the wire and must not be among the "unknown" ones.
# The harness reads the bot's SQLite file directly (read-only, while the process writes);
# on PostgreSQL the same kill -9 is covered by tests/test_kill9.py and the e2e kill test.
pytestmark = engines.sqlite_only

IN_FLIGHT_BOUND = 10
CARDS = 22  # the group takes 20 cards a minute: two must wait


@asynccontextmanager
async def bot_process(
    emu: TelegramEmulator, tmp_path: Path, **settings: str
) -> AsyncIterator[BotProcess]:
    bot = BotProcess(
        emu,
        tmp_path / "bot.sqlite3",
        tmp_path,
        script=write_wave_script(tmp_path / "script.yaml"),
        settings=settings,
    )
    try:
        yield bot
    finally:
        await bot.close()


async def _wave(emu: TelegramEmulator, bot: BotProcess, leads: int) -> list[SimUser]:
    assert bot.script is not None
    return await seed_wave(bot.url, emu, leads, script_label(bot.script))


def _delivered(emu: TelegramEmulator, users: list[SimUser]) -> Counter[int]:
    """Chat -> how many wave touches reached it."""
    counts: Counter[int] = Counter()
    for (chat, _campaign, _step), n in touches_delivered(emu, {u.chat_id for u in users}).items():
        counts[chat] += n
    return counts


def _nothing_due(statuses: Counter[str]) -> bool:
    return not (statuses["planned"] or statuses["sending"])


async def test_the_emulator_waits_a_random_time_within_the_latency_range() -> None:
    emu = TelegramEmulator(latency=0.02, latency_max=0.06, latency_seed=7)
    waits = [emu.request_latency() for _ in range(200)]
    assert 0.02 <= min(waits) < 0.025 and 0.055 < max(waits) <= 0.06
    assert TelegramEmulator(latency=0.03).request_latency() == 0.03
    again = TelegramEmulator(latency=0.02, latency_max=0.06, latency_seed=7)
    assert [again.request_latency() for _ in range(200)] == waits


@pytest.mark.slow
async def test_sigterm_mid_wave_leaves_the_queued_touches_planned(tmp_path: Path) -> None:
    leads = 40
    async with (
        TelegramEmulator(latency=0.01, latency_max=0.03) as emu,
        bot_process(emu, tmp_path, RATE_PER_SECOND="4") as bot,
    ):
        users = await _wave(emu, bot, leads)
        db = Db(bot.database)
        await bot.start()
        await emu.wait_until(lambda: sum(_delivered(emu, users).values()) >= 8, 60)
        await bot.terminate()
        at_stop = db.touch_statuses()
        assert sum(_delivered(emu, users).values()) < leads, "the stop must land mid-wave"

        await bot.start()
        await wait_for(lambda: _nothing_due(db.touch_statuses()), 60)
        statuses = db.touch_statuses()
        delivered = _delivered(emu, users)
        assert statuses == Counter(sent=leads), (
            f"after SIGTERM and a restart every touch is sent, none unknown: {dict(statuses)}; "
            f"right after the SIGTERM: {dict(at_stop)}\n{bot.tail()}"
        )
        assert len(delivered) == leads and set(delivered.values()) == {1}, delivered


@pytest.mark.slow
async def test_sigterm_while_cards_wait_for_the_group_limit_loses_none(tmp_path: Path) -> None:
    async with TelegramEmulator(latency=0.01, latency_max=0.03) as emu:
        manager = emu.add_user("Менеджер")
        group = emu.add_group("Отдел продаж", members=[manager])
        await group.add_bot(by=manager)
        async with bot_process(emu, tmp_path, MANAGER_CHAT_ID=str(group.id)) as bot:
            db = Db(bot.database)
            await create_database(bot.url)
            gates = Gates([LAST_QUESTION])
            prospects = [
                Prospect(emu.add_user(f"Hot{i}"), HOT, patience=30, gates=gates)
                for i in range(CARDS)
            ]
            await bot.start()
            deadline = time.monotonic() + 120
            tasks = [asyncio.create_task(p.live(deadline)) for p in prospects]
            try:
                assert await wait_for(lambda: gates.waiting[LAST_QUESTION] >= CARDS, 60)
                gates.open(LAST_QUESTION)  # everyone answers the last question at once: hot
                await emu.wait_until(lambda: len(group.chat.log) >= 20, 60)
                await asyncio.sleep(1.0)  # the rest wait for the group's minute
                waiting = db.card_statuses()
                await bot.terminate()
                at_stop = db.card_statuses()
                assert len(group.chat.log) < CARDS, "the stop must land mid-burst"

                await bot.start()
                await wait_for(lambda: _nothing_due(db.card_statuses()), 90)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            statuses = db.card_statuses()
            delivered = cards_delivered(emu, group.id)
            assert statuses == Counter(sent=CARDS), (
                f"after SIGTERM and a restart every card is sent, none unknown: "
                f"{dict(statuses)}; before the SIGTERM: {dict(waiting)}, right after it: "
                f"{dict(at_stop)}\n{bot.tail()}"
            )
            assert len(delivered) == CARDS and set(delivered.values()) == {1}, delivered


@pytest.mark.slow
async def test_kill9_mid_wave_loses_at_most_what_was_on_the_wire(tmp_path: Path) -> None:
    leads = 60
    async with (
        TelegramEmulator(latency=0.02, latency_max=0.08) as emu,
        bot_process(emu, tmp_path, RATE_PER_SECOND="10") as bot,
    ):
        users = await _wave(emu, bot, leads)
        db = Db(bot.database)
        await bot.start()
        await emu.wait_until(lambda: sum(_delivered(emu, users).values()) >= 15, 60)
        stop = await bot.kill()
        assert sum(_delivered(emu, users).values()) < leads, "the kill must land mid-wave"

        await bot.start()
        await wait_for(lambda: _nothing_due(db.touch_statuses()), 60)
        statuses = db.touch_statuses()
        delivered = _delivered(emu, users)
        not_delivered = leads - len(delivered)
        assert set(statuses) <= {"sent", "unknown"}, statuses
        assert max(delivered.values()) == 1, "a touch was delivered twice"
        assert not_delivered <= statuses["unknown"], (not_delivered, statuses)
        assert statuses["unknown"] <= IN_FLIGHT_BOUND, (
            f"{statuses['unknown']} touches unknown after one kill -9 at 10 messages/s, "
            f"{len(stop.on_wire)} requests on the wire: rows waiting for the rate limiter "
            f"must still be planned ({not_delivered} never delivered)"
        )


@pytest.mark.slow
async def test_kill9_between_fetching_a_tap_and_handling_it_loses_no_answer(
    tmp_path: Path,
) -> None:
    async with TelegramEmulator() as emu:
        user = emu.add_user("Катя")
        async with bot_process(emu, tmp_path) as bot:
            db = Db(bot.database)
            await bot.start()
            await user.send("/start habr")
            first = await user.wait_for(lambda m: "Вопрос 1 из 4" in m.plain_text, 30)
            await user.press(first, HOT["need"])
            second = await user.wait_for(lambda m: "Вопрос 2 из 4" in m.plain_text, 10)
            # The bot's next reply reaches the user but its answer never comes back, so the
            # bot is still busy with this user when the user taps again.
            emu.hang_next("sendMessage", chat_id=user.chat_id, seconds=120)
            await user.press(second, HOT["timing"])
            third = await user.wait_for(lambda m: "Вопрос 3 из 4" in m.plain_text, 10)
            await user.press(third, HOT["budget"])
            tap = emu.pending_updates[-1]["update_id"]
            await emu.wait_until(lambda: _returned(emu, tap), 10)
            # getUpdates handed the tap over; kill once the bot confirms it to Telegram (or
            # soon after, if it confirms only later).
            confirmed = True
            try:
                await emu.wait_until(lambda: _confirmed(emu, tap), 3)
            except TimeoutError:
                confirmed = False
            await bot.kill()
            before = db.answers()[(user.id, "budget")]

            await bot.start()
            try:
                await user.wait_for(lambda m: "Вопрос 4 из 4" in m.plain_text, 30)
            except TimeoutError:
                pytest.fail(
                    f"the tap getUpdates returned before the kill was never handled: no next "
                    f"question; answer recorded: {bool(db.answers()[(user.id, 'budget')])} "
                    f"(at the kill: {bool(before)}; offset confirmed: {confirmed}; pending "
                    f"in the emulator: {len(emu.pending_updates)}, inbox rows: {db.inbox()})"
                )
            assert db.answers()[(user.id, "budget")] == 1


def _returned(emu: TelegramEmulator, update_id: int) -> bool:
    return any(
        r.method == "getUpdates"
        and r.status == 200
        and any(u["update_id"] == update_id for u in r.result or [])
        for r in emu.requests
    )


def _confirmed(emu: TelegramEmulator, update_id: int) -> bool:
    return any(
        r.method == "getUpdates"
        and isinstance(r.params.get("offset"), int)
        and r.params["offset"] > update_id
        for r in emu.requests
    )
