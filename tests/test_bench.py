"""The benchmarks' harness works (its figures are `make bench`'s business, not a test's): a
few dialogues through both bots, every update counted, the same requests on both sides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cpu_benchmark_drives_both_bots_through_whole_dialogues(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")])}
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_cpu", "--json", "--dialogues", "6",
         "--concurrency", "3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for side in ("bare", "leadbot"):
        figures = result[side]
        assert figures["updates"] == 6 * 5  # /start and four answers each
        assert figures["cpu_seconds"] > 0
        assert figures["rss_mb"] > 0
        assert figures["requests"]["sendMessage"] == 6 * 5
        assert figures["requests"]["answerCallbackQuery"] == 6 * 4
    assert result["ratio"] > 0


def test_stack_floor_benchmark_runs_each_way_of_writing_an_answer() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_stack_floor", "--json", "--steps", "20"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    for figure in ("orm_step_us", "core_step_us", "sqlite3_step_us", "inbox_store_us"):
        assert result[figure] > 0
    # The same SQL in the same file: the driver's own statements cannot cost more than the
    # stack's on top of them.
    assert result["sqlite3_step_us"] < result["orm_step_us"]
