"""The fair intake's rules, on the module itself: one slot per user, money first, the user's
own /stop first, a flood quieted with one notice (tests/e2e/test_isolation.py drives the bot)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiogram.types import Update

from bot.inbox import Stored
from bot.intake import InboundLimit, Intake, goes_first, is_express

USER = {"id": 7, "is_bot": False, "first_name": "A"}


def message(update_id: int, text: str, user: int = 7) -> Update:
    return Update.model_validate(
        {
            "update_id": update_id,
            "message": {
                "message_id": update_id,
                "date": 1,
                "text": text,
                "chat": {"id": user, "type": "private"},
                "from": {**USER, "id": user},
            },
        }
    )


def pre_checkout(update_id: int, user: int = 7) -> Update:
    return Update.model_validate(
        {
            "update_id": update_id,
            "pre_checkout_query": {
                "id": str(update_id),
                "from": {**USER, "id": user},
                "currency": "RUB",
                "total_amount": 100,
                "invoice_payload": "x",
            },
        }
    )


class Recorder:
    """Stands for the dispatcher: records what it handles, each taking `seconds`."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.started: list[tuple[int, str]] = []
        self.running = 0
        self.most_at_once: dict[int, int] = {}
        self._by_user: dict[int, int] = {}

    async def feed_update(self, bot: Any, update: Update, **data: Any) -> None:
        event = update.message or update.pre_checkout_query
        assert event is not None and event.from_user is not None
        user = event.from_user.id
        self.started.append((user, getattr(event, "text", None) or "pay"))
        self._by_user[user] = self._by_user.get(user, 0) + 1
        self.most_at_once[user] = max(self.most_at_once.get(user, 0), self._by_user[user])
        if not data["inbox_express"]:
            await asyncio.sleep(self.seconds)
        self._by_user[user] -= 1
        data["inbox_receipt"].marked = True


class Marks:
    def __init__(self) -> None:
        self.rows: list[int] = []

    async def mark(self, rows: list[int]) -> None:
        self.rows.extend(rows)


def intake(recorder: Recorder, marks: Marks, **extra: Any) -> Intake:
    return Intake(recorder, None, marks, **extra)  # type: ignore[arg-type]


async def test_a_users_backlog_holds_one_slot_and_the_others_go_round_robin() -> None:
    recorder, marks = Recorder(), Marks()
    fair = intake(recorder, marks, concurrency=2)
    for n in range(20):
        fair.submit(Stored(n, message(n, f"flood {n}", user=1)))
    for n in range(20, 23):
        fair.submit(Stored(n, message(n, "/help", user=100 + n)))
    await asyncio.sleep(0.3)
    # Two slots: one for the flooder, the other for the three others in turn.
    first_others = [i for i, (user, _) in enumerate(recorder.started) if user != 1]
    assert first_others[:3] == [1, 2, 3], recorder.started[:6]
    assert recorder.most_at_once[1] == 1
    await fair.drain(5)


async def test_payments_skip_every_queue_and_stop_goes_first_in_its_users() -> None:
    recorder, marks = Recorder(seconds=0.2), Marks()
    fair = intake(recorder, marks, concurrency=1)
    for n in range(5):
        fair.submit(Stored(n, message(n, f"text {n}")))
    fair.submit(Stored(10, message(10, "/stop")))
    fair.submit(Stored(11, pre_checkout(11)))
    await asyncio.sleep(0.05)
    assert (7, "pay") in recorder.started  # answered while the user's backlog waits
    await asyncio.sleep(0.3)
    assert [text for _, text in recorder.started if text != "pay"][:2] == ["text 0", "/stop"]
    await fair.drain(5)


async def test_a_flood_is_quieted_with_one_notice_and_stop_still_passes() -> None:
    recorder, marks = Recorder(seconds=0), Marks()
    told: list[int] = []

    async def slow_down(chat: int) -> None:
        told.append(chat)

    fair = intake(recorder, marks, limit=InboundLimit(20, 5), slow_down=slow_down)
    for n in range(50):
        fair.submit(Stored(n, message(n, f"flood {n}")))
    fair.submit(Stored(99, message(99, "/stop")))
    for _ in range(100):
        if fair.count == 0:
            break
        await asyncio.sleep(0.05)
    handled = [text for _, text in recorder.started]
    assert sorted(handled) == sorted(["/stop", *(f"flood {n}" for n in range(5))])
    assert len(handled) == 6
    assert sorted(marks.rows) == list(range(5, 50))  # recorded, not answered
    assert told == [7]
    assert fair.count == 0


def test_a_bucket_refills_and_a_new_flood_gets_a_new_notice() -> None:
    limit = InboundLimit(60, 2)  # one a second
    assert limit.admit(1, 0.0) == (True, False)
    assert limit.admit(1, 0.0) == (True, False)
    assert limit.admit(1, 0.0) == (False, True)
    assert limit.admit(1, 0.5) == (False, False)
    assert limit.admit(1, 1.5) == (True, False)
    assert limit.admit(1, 10.0) == (True, False)  # full again: the flood is over
    assert limit.admit(1, 10.0) == (True, False)
    assert limit.admit(1, 10.0) == (False, True)


def test_what_goes_first_and_what_is_money() -> None:
    assert goes_first(message(1, "/stop")) and goes_first(message(1, "/forget@leadbot"))
    assert not goes_first(message(1, "/start")) and not goes_first(message(1, "stop"))
    assert is_express(pre_checkout(1)) and not is_express(message(1, "/stop"))
