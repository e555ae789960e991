"""The application's wheel, built once a test session the way the image's first stage builds
it: from the files the Dockerfile's build stage copies (and nothing else of the checkout),
by setuptools' PEP 517 hooks, the ones `pip wheel` and `pip install` call. What the build
printed is kept, so a test can tell that it warned about nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# A build leaves these behind in its source folder; a checkout may hold them from earlier.
LEFTOVERS = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")


@dataclass(frozen=True)
class Built:
    wheel: Path
    # setuptools' warnings go to stderr; its list of copied files to stdout.
    warnings: str


def build_stage_sources() -> list[str]:
    """The paths the Dockerfile's build stage copies from the checkout (`COPY a b ./`,
    `COPY bot bot`), in order."""
    # Before the first FROM: comments; then the build stage; then the image.
    stages = DOCKERFILE.read_text(encoding="utf-8").split("\nFROM ")
    sources = []
    for line in stages[1].splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.extend(words[1:-1])
    return sources


def copy_build_sources(into: Path) -> Path:
    sources = build_stage_sources()
    assert "setup.py" in sources and "pyproject.toml" in sources, sources
    into.mkdir(parents=True)
    for name in sources:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=LEFTOVERS)
        else:
            shutil.copy2(source, into / name)
    return into


def backend(hook: str, source: Path, out: Path) -> Built:
    """Runs setuptools' `build_wheel` or `build_editable` on `source` into `out`."""
    code = f"import sys\nfrom setuptools import build_meta\nprint(build_meta.{hook}(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)], cwd=source, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"{hook}: exit {done.returncode}\n{done.stderr}"
    name = done.stdout.strip().splitlines()[-1]
    return Built(out / name, done.stderr)


def build_wheel(tmp: Path) -> Built:
    return backend("build_wheel", copy_build_sources(tmp / "source"), tmp / "wheels")
