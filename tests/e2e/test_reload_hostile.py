"""`/reload` of a hostile script through the emulator: the admin gets a refusal naming the
file and line, and prospects keep talking to the script in force."""

from __future__ import annotations

from pathlib import Path

import pytest
from telegram_emulator.server import TelegramEmulator

from funnel.core.clock import FakeClock
from tests.conftest import RU_SCRIPT
from tests.e2e.conftest import running_world

RU = RU_SCRIPT.read_bytes()
LABEL = "Сменить профессию".encode()
LABEL_LINE = RU[: RU.index(LABEL)].count(b"\n") + 1


def alias_bomb() -> bytes:
    rows = [b'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [b"a%d: &a%d [%s]" % (n, n, b", ".join([b"*a%d" % (n - 1)] * 9)) for n in range(1, 10)]
    return b"\n".join(rows) + b"\n"


HOSTILE = {
    # name: (content, the problem after "script.yaml")
    "5mb": (b"# padding\n" * 524_288, ": the script is 5,242,880 bytes; the limit is"),
    "nested": (b"format: 1\nstages: " + b"[" * 100_000 + b"\n", ":2: nested deeper than 20"),
    "alias-bomb": (alias_bomb(), ":2: aliases (*name) are not allowed"),
    "not-utf8": (
        RU.replace(LABEL, "Сменить профессию".encode("cp1251"), 1),
        f":{LABEL_LINE}: not UTF-8 text",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
async def test_a_hostile_script_is_refused_and_the_old_one_serves(
    emu: TelegramEmulator, tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    path = tmp_path / "script.yaml"
    path.write_bytes(RU)
    async with running_world(emu, tmp_path, clock, script_path=str(path)) as world:
        good = world.app.scripts.current
        content, problem = HOSTILE[kind]
        path.write_bytes(content)

        await world.admin.send("/reload")
        reply = (await world.admin.next_message(timeout=15)).plain_text
        assert reply.startswith("Сценарий не принят, работает прежний.")
        assert f"{path}{problem}" in reply
        assert "Traceback" not in reply and len(reply) < 4096

        assert world.app.scripts.current is good
        prospect = world.user("Мария")
        await prospect.send("/start")
        first = await prospect.next_message()
        assert "Вопрос 1 из 4" in first.plain_text and "Сменить профессию" in first.labels

        path.write_bytes(RU.replace(b'version: "2026-11-1"', b"version: fixed", 1))
        await world.admin.send("/reload")
        assert "python_course@fixed загружен" in (await world.admin.next_message()).plain_text
