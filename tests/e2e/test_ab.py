"""A/B tests through the emulator: simulated prospects meet the welcome variant the bot
assigns them and convert at the rate that variant truly has; the owner's /ab then names
the better variant, or does not when the rates are equal. Also /ab's refusals."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from funnel.core.clock import FakeClock
from funnel.core.models import Exposure, Lead, Touch
from funnel.experiments.holdout import HELD_OUT
from tests.conftest import RU_SCRIPT
from tests.e2e.conftest import WARM, World, running_world

SHORT = "Привет, {first_name}! 4 вопроса — и подберём курс."
EXPERIMENT = """
experiments:
  - id: welcome_short
    title: "Короткое приветствие"
    target: texts.welcome
    metric: qualified
    min_effect: 30%
    variants:
      - {id: control, weight: 50}
      - {id: short, weight: 50, text: "SHORT"}
""".replace("SHORT", SHORT)


@pytest.fixture
async def world(emu: Any, tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    path = tmp_path / "ru.yaml"
    path.write_text(RU_SCRIPT.read_text(encoding="utf-8") + EXPERIMENT, encoding="utf-8")
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as running:
        yield running


async def ask(world: World, command: str) -> str:
    await world.admin.send(command)
    return (await world.admin.next_message()).plain_text


async def prospects(
    world: World, rates: dict[str, float], count: int, seed: int
) -> dict[str, int]:
    """`count` prospects press /start; each finishes the questions (reaching "qualified")
    with the true rate of the variant the bot showed them. Returns the leads per variant."""
    rng = random.Random(seed)
    seen = {"control": 0, "short": 0}
    for n in range(count):
        user = world.user(f"Лид{n}")
        await user.send("/start ads")
        message = await user.next_message()
        variant = "short" if "4 вопроса — и подберём курс" in message.plain_text else "control"
        seen[variant] += 1
        if rng.random() >= rates[variant]:
            continue  # goes silent after the welcome
        for label in WARM:
            await user.press(message, label)
            message = await user.next_message()
    return seen


async def test_a_real_difference_reaches_a_verdict_for_the_better_variant(world: World) -> None:
    seen = await prospects(world, {"control": 0.2, "short": 0.8}, 90, seed=3)
    assert min(seen.values()) >= 30, seen
    async with world.sessions() as session:
        exposed = await session.scalar(select(func.count()).select_from(Exposure))
    assert exposed == 90
    report = await ask(world, "/ab")
    assert "Короткое приветствие" in report
    assert "вариант «short» лучше контроля" in report, report
    one = await ask(world, "/ab welcome_short")
    assert "вариант «short» лучше контроля" in one
    assert "⚠️" not in one  # a 50/50 split that held


async def test_equal_rates_give_no_verdict(world: World) -> None:
    await prospects(world, {"control": 0.5, "short": 0.5}, 70, seed=4)
    report = await ask(world, "/ab")
    assert "лучше" not in report, report
    assert "Пока мало данных" in report or "разницы больше" in report, report


async def test_forged_and_bad_arguments_are_answered_not_crashed(world: World) -> None:
    assert "Теста «nope» нет" in await ask(world, "/ab nope")
    assert "welcome_short" in await ask(world, "/ab nope")
    assert "нет" in await ask(world, "/ab ../../etc/passwd")
    # Escaped: the tags arrive as typed, not as bold.
    assert "«<b>x</b>»" in await ask(world, "/ab <b>x</b>")
    assert "/ab id" in await ask(world, "/ab one two")
    long = await ask(world, "/ab " + "x" * 5000)
    assert long and len(long) < 4096
    assert "Короткое приветствие" in await ask(world, "/ab WELCOME_SHORT")
    # A prospect who types /ab learns nothing of the tests.
    user = world.user("Чужой")
    await user.send("/ab")
    reply = await user.next_message()
    assert "Короткое приветствие" not in reply.plain_text


async def test_a_holdout_is_planned_never_sent_and_its_lift_reported(
    emu: Any, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "ru.yaml"
    source = RU_SCRIPT.read_text(encoding="utf-8")
    path.write_text(
        source.replace("    kind: nurture\n", "    kind: nurture\n    holdout: 50%\n", 1)
    )
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as world:
        users = []
        for n in range(30):
            user = world.user(f"Лид{n}")
            await user.send("/start ads")
            await user.next_message()
            users.append(user)
        clock.advance(timedelta(minutes=61))
        await world.app.outbox.tick()
        async with world.sessions() as session:
            rows = (await session.execute(select(Lead.user_id, Touch.status).join(
                Touch, Touch.lead_id == Lead.id))).all()  # fmt: skip
        status = dict(rows)
        assert len(status) == 30 and set(status.values()) == {"sent", HELD_OUT}, status
        for user in users:
            # Held out: nothing but the welcome; messaged: the nudge too.
            expected = 1 if status[user.id] == HELD_OUT else 2
            assert len(world.emu.messages(user.chat_id)) == expected, user
        # Every messaged lead and one held-out lead answer the first question.
        held_back = [u for u in users if status[u.id] == HELD_OUT][:1]
        for user in [u for u in users if status[u.id] == "sent"] + held_back:
            message = world.emu.messages(user.chat_id)[-1]
            await user.press(message, WARM[0])
            await user.next_message()
        report = await ask(world, "/campaigns")
        assert "Контрольная группа (им не отправляли)" in report, report
        assert "прошли бы и без него" in report


async def test_a_winner_set_by_reload_stops_the_split_and_keeps_the_history(
    world: World, tmp_path: Path
) -> None:
    await prospects(world, {"control": 0.0, "short": 0.0}, 12, seed=5)
    path = tmp_path / "ru.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "    winner: short\n", encoding="utf-8")
    assert "загружен" in await ask(world, "/reload")
    seen = await prospects(world, {"control": 0.0, "short": 0.0}, 8, seed=6)
    assert seen == {"control": 0, "short": 8}
    async with world.sessions() as session:
        exposed = await session.scalar(select(func.count()).select_from(Exposure))
    assert exposed == 12  # those who came after the winner are no test subjects
    report = await ask(world, "/ab")
    assert "Тест остановлен: победил «short»" in report
    assert "лучше" not in report and "Пока мало данных" not in report
