"""The layout is the architecture diagram, and this test holds it: funnel/ (the domain)
imports neither aiogram nor a room above it; handlers/ (the presentation) imports the domain
and aiogram, never bot/ (the application); the emulator imports none of the three; and no
two files of funnel/ import each other in a circle. Imports inside functions count too."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("funnel", "handlers", "bot")
# Directories that hold no code of ours: searched for nothing.
NOT_OURS = {"data", "build", "dist", "node_modules", "__pycache__"}


@dataclass(frozen=True)
class Import:
    path: Path  # the file that imports
    line: int
    module: str  # absolute dotted name of the imported module

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def file_of(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(path: Path) -> Iterator[Import]:
    """Every import in the file, at any depth, as the absolute module it loads."""
    module = module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    yield from imports_in(path.read_text(encoding="utf-8"), path, package)


def imports_in(source: str, path: Path, package: str) -> Iterator[Import]:
    """`from a import b` names a.b when that is a module, else a; relative imports are
    resolved from `package`."""
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield Import(path, node.lineno, submodule if file_of(submodule) else base)


def python_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.py") if "__pycache__" not in p.parts)


# The emulator is a distribution of its own (emulator/pyproject.toml), imported by this name.
EMULATOR = ROOT / "emulator" / "telegram_emulator"


def emulator_packages() -> list[Path]:
    return [EMULATOR] if (EMULATOR / "__init__.py").is_file() else []


def in_emulator(path: Path) -> bool:
    return any(package in path.parents for package in emulator_packages())


def room_files(room: str) -> list[Path]:
    """The room's own files (an emulator inside it is not the room)."""
    return [p for p in python_files(ROOT / room) if not in_emulator(p)]


def top(module: str) -> str:
    return module.split(".")[0]


def emulator_modules() -> tuple[str, ...]:
    return tuple(package.name for package in emulator_packages())


def is_emulator(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in emulator_modules())


def listing(found: list[Import]) -> str:
    return "\n".join(dict.fromkeys(str(i) for i in found))


def test_the_domain_imports_no_framework_and_no_room_above_it() -> None:
    found = [
        i
        for path in room_files("funnel")
        for i in imports_of(path)
        if top(i.module) in ("aiogram", "bot", "handlers") or is_emulator(i.module)
    ]
    assert not found, "funnel/ is pure Python and SQLAlchemy:\n" + listing(found)


def test_the_presentation_never_imports_the_application() -> None:
    found = [
        i
        for path in room_files("handlers")
        for i in imports_of(path)
        if top(i.module) == "bot" or is_emulator(i.module)
    ]
    assert not found, (
        "handlers/ gets what it needs from bot/ as workflow data (handlers/dependencies.py), "
        "it never imports it:\n" + listing(found)
    )


def test_the_emulator_imports_none_of_the_bot() -> None:
    packages = emulator_packages()
    assert packages, "no package named like the emulator was found"
    found = [
        i
        for package in packages
        for path in python_files(package)
        for i in imports_of(path)
        if top(i.module) in ROOMS and not is_emulator(i.module)
    ]
    assert not found, "the emulator is Telegram, not the bot:\n" + listing(found)


def test_no_import_cycle_inside_the_domain() -> None:
    files = room_files("funnel")
    edges: dict[Path, set[Path]] = {path: set() for path in files}
    for path in files:
        for i in imports_of(path):
            target = file_of(i.module) if top(i.module) == "funnel" else None
            if target is not None and target != path:
                edges[path].add(target)
    cycle = _a_cycle(edges)
    assert cycle is None, "funnel/ imports in a circle: " + " → ".join(
        str(p.relative_to(ROOT)) for p in cycle or []
    )


def test_every_import_of_ours_names_a_module_of_this_repository() -> None:
    """A renamed module must not be found somewhere else (an installed copy of the project)."""
    found = [
        i
        for room in ROOMS
        for path in python_files(ROOT / room)
        for i in imports_of(path)
        if top(i.module) in ROOMS and file_of(i.module) is None
    ]
    assert not found, "these modules do not exist here:\n" + listing(found)


def test_the_reading_sees_every_kind_of_import() -> None:
    source = """
from typing import TYPE_CHECKING
import funnel.core.models
from funnel.core import store
from funnel.core.clock import Clock
if TYPE_CHECKING:
    from bot.settings import Settings
def later():
    from handlers.views import report
from . import numbers
from .report import format_report_html
"""
    path = ROOT / "handlers" / "views" / "example.py"
    seen = sorted(i.module for i in imports_in(source, path, "handlers.views"))
    assert seen == sorted(
        [
            "typing",
            "funnel.core.models",
            "funnel.core.store",
            "funnel.core.clock",
            "bot.settings",
            "handlers.views.report",
            "handlers.views.numbers",
            "handlers.views.report",
        ]
    )


def _a_cycle(edges: dict[Path, set[Path]]) -> list[Path] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[Path, int] = {}  # 1: on the current path, 2: done
    trail: list[Path] = []

    def visit(node: Path) -> list[Path] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found is not None:
                    return found
        state[node] = 2
        trail.pop()
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found is not None:
                return found
    return None
