"""`/reload` parses in a worker thread: the bot keeps answering while a big script loads, and
a refused script leaves the one in force."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from bot.scripts import REPLY_CHARS, ScriptHolder
from funnel.script.loading import MAX_SCRIPT_BYTES, ScriptError, load_script
from tests.conftest import RU_SCRIPT


def just_under_the_limit(path: Path) -> Path:
    """The shipped script padded with comment lines to a byte under the size limit."""
    source = RU_SCRIPT.read_bytes() + b"\n"
    line = b"# " + b"x" * 77 + b"\n"
    room = MAX_SCRIPT_BYTES - 1 - len(source)
    path.write_bytes(source + line * (room // len(line)) + b"#" * (room % len(line)))
    assert path.stat().st_size == MAX_SCRIPT_BYTES - 1
    return path


async def test_the_event_loop_keeps_serving_while_a_big_script_loads(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    holder = ScriptHolder(RU_SCRIPT)
    holder.path = just_under_the_limit(path)
    started = time.perf_counter()
    load_script(path)
    blocking = time.perf_counter() - started  # what a load on the loop would freeze it for

    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    began, before = time.perf_counter(), len(ticks)
    script = await holder.reload()
    took, during = time.perf_counter() - began, len(ticks) - before
    await asyncio.sleep(0.05)  # a tick after the load closes the last gap
    ticking.cancel()

    assert holder.current is script and script.id == "python_course"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Parsing on the loop would leave one gap as long as the whole load.
    assert max(gaps) < min(blocking / 2, 0.25), (max(gaps), blocking)
    assert during >= took / 0.01 / 4, (during, took)


async def test_a_refused_reload_keeps_the_script_in_force(tmp_path: Path) -> None:
    path = tmp_path / "script.yaml"
    path.write_bytes(RU_SCRIPT.read_bytes())
    holder = ScriptHolder(path)
    good = holder.current
    for bad in (b"format: 1\nstages: [", b"a: " + b"[" * 50_000, b"\xff\xfe", b""):
        path.write_bytes(bad)
        with pytest.raises(ScriptError) as caught:
            await holder.reload()
        assert caught.value.problems[0].startswith(str(path))
        assert holder.current is good and holder() is good
    path.write_bytes(RU_SCRIPT.read_bytes().replace(b'version: "2026-11-1"', b"version: v2", 1))
    fresh = await holder.reload()
    assert holder.current is fresh and fresh.version == "v2"


async def test_two_reloads_at_once_both_answer(tmp_path: Path) -> None:
    holder = ScriptHolder(just_under_the_limit(tmp_path / "script.yaml"))
    first, second = await asyncio.gather(holder.reload(), holder.reload())
    assert holder.current is second and first.label == second.label


def test_a_long_refusal_fits_one_telegram_message() -> None:
    problems = [f"/srv/script.yaml:{n}: " + "x" * 280 for n in range(50)]
    shown = ScriptHolder.problems_that_fit(problems)
    assert sum(len(p) + 1 for p in shown) <= REPLY_CHARS < 4096
    assert shown[:-1] == problems[: len(shown) - 1]
    assert shown[-1] == f"...and {50 - (len(shown) - 1)} more"
    assert ScriptHolder.problems_that_fit(problems[:2]) == problems[:2]


def test_the_diff_of_a_huge_edit_fits_one_message_and_is_valid_html() -> None:
    from funnel.core.telegram_text import check_telegram_html
    from funnel.script.diff import Changes, ScriptDiff
    from handlers.views.script_diff import format_script_diff_html

    many = tuple(f"q{n:04d}_" + "x" * 18 for n in range(3000))
    diff = ScriptDiff(
        "a<b>@1",
        "a&b@2",
        questions=Changes(added=many, removed=many, changed=many),
        texts=Changes(changed=tuple(f"texts.{k}" for k in many)),
        campaigns=Changes(added=many),
        other=("stages", "send_window"),
    )
    for lang in ("ru", "en"):
        text = format_script_diff_html(diff, lang)
        assert len(text) <= 3000 and check_telegram_html(text) is None
        assert "a&lt;b&gt;@1" in text and "+2988" in text


async def test_a_changed_file_is_reloaded_once_and_a_touched_one_not_at_all(
    tmp_path: Path,
) -> None:
    from bot.scripts import Refused, Reloaded

    path = tmp_path / "script.yaml"
    path.write_bytes(RU_SCRIPT.read_bytes())
    holder = ScriptHolder(path)
    first = holder.current
    assert await holder.reload_if_changed() is None
    path.touch()
    assert await holder.reload_if_changed() is None and holder.current is first
    path.write_bytes(b"format: 1\nformat: 2\n")
    refused = await holder.reload_if_changed()
    assert isinstance(refused, Refused) and ":2: 'format' is written twice" in refused.problems[0]
    assert await holder.reload_if_changed() is None and holder.current is first
    path.write_bytes(RU_SCRIPT.read_bytes().replace(b'version: "2026-11-1"', b"version: v2", 1))
    reloaded = await holder.reload_if_changed()
    assert isinstance(reloaded, Reloaded)
    assert (reloaded.old, reloaded.new) == (first, holder.current)
    assert holder.current.version == "v2"
    # An admin's /reload counts as a read: the watcher does not reload it again.
    path.write_bytes(RU_SCRIPT.read_bytes().replace(b'version: "2026-11-1"', b"version: v3", 1))
    await holder.reload()
    assert await holder.reload_if_changed() is None
    forced = await holder.reload_if_changed(force=True)
    assert isinstance(forced, Reloaded) and forced.new.version == "v3"


async def test_a_vanished_file_keeps_the_script_and_says_so(tmp_path: Path) -> None:
    from bot.scripts import Refused

    path = tmp_path / "script.yaml"
    path.write_bytes(RU_SCRIPT.read_bytes())
    holder = ScriptHolder(path)
    path.unlink()
    refused = await holder.reload_if_changed()
    assert isinstance(refused, Refused) and "cannot read" in refused.problems[0]
    assert await holder.reload_if_changed() is None
    assert holder.current.id == "python_course"
