"""The demo is reproducible: the same seed prints the same report, byte for byte, however fast
the machine and whatever runs beside it; the bot's logs go to a file, not between the lines
of the progress and the report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

PROSPECTS = "12"


def start_demo(folder: Path, seed: str) -> subprocess.Popen[str]:
    folder.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator")]),
        "LOG_LEVEL": "INFO",
    }
    for name in ("BOT_TOKEN", "DATABASE_URL", "SCRIPT_PATH", "TIME_SCALE"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "demo", "--prospects", PROSPECTS, "--seed", seed],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(run: subprocess.Popen[str]) -> str:
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return out


def test_the_same_seed_prints_the_same_report(tmp_path: Path) -> None:
    # Side by side, so they also compete for the machine: timing must not matter.
    runs = [start_demo(tmp_path / name, "7") for name in ("first", "second")]
    first, second = (finish(run) for run in runs)
    assert "Funnel report" in first and "Revenue:" in first
    assert first == second
    for name in ("first", "second"):
        log = tmp_path / name / "data" / "demo.log"
        assert log.exists() and log.stat().st_size > 0
        assert (tmp_path / name / "data" / "demo-funnel.png").exists()
    # The progress and the report are not interrupted by log lines; the log's path is told.
    assert " INFO " not in first and "leadbot." not in first
    assert first.rstrip().endswith("Logs: data/demo.log")
