"""What ships where: the emulator is a distribution of its own that imports nothing of the
bot."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

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
