"""What ships where: the emulator is a distribution of its own that imports nothing of the
bot; the demo and the terminal chat are dev tools, and without them the CLI says what to
install."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from bot.__main__ import _chat, _demo
from bot.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = ROOT / "emulator" / "telegram_emulator"


def imported_roots(path: Path) -> set[str]:
    """The top-level names a module imports (relative imports stay inside its package)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.partition(".")[0])
    return roots


def test_the_emulator_imports_only_the_standard_library_and_aiohttp() -> None:
    modules = sorted(EMULATOR.glob("*.py"))
    assert modules
    outside = {
        f"{path.name}: {root}"
        for path in modules
        for root in imported_roots(path)
        if root not in sys.stdlib_module_names and root != "aiohttp"
    }
    assert outside == set()


@pytest.mark.parametrize(
    ("absent", "needs"),
    [
        ("telegram_emulator", "needs the emulator: pip install ./emulator"),
        ("devtools", "needs the dev tools and the emulator: pip install ./devtools ./emulator"),
    ],
)
async def test_the_demo_and_the_chat_say_what_to_install_when_a_dev_tool_is_absent(
    absent: str, needs: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a production install looks like: the package and its modules cannot be imported.
    for module in [m for m in sys.modules if m.partition(".")[0] in ("devtools", absent)]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, absent, None)
    settings = load_settings()
    assert await _demo(settings, prospects=1, seed=1) == 2
    assert await _chat(settings) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"the demo {needs} (in the repository)",
        f"the terminal chat {needs} (in the repository)",
    ]
