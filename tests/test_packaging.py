"""What ships where: the application's wheel carries bot/, funnel/, handlers/, the migrations
and the shipped scripts, and runs from any folder; the emulator is a distribution of its own
that imports nothing of the bot; the demo and the terminal chat are dev tools, and without
them the CLI says what to install."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bot.__main__ import _chat, _demo
from bot.settings import Settings, load_settings
from tests import wheel

ROOT = Path(__file__).resolve().parent.parent
EMULATOR = ROOT / "emulator" / "telegram_emulator"
ROOMS = ("bot", "funnel", "handlers")


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def pip(*args: str | Path, cwd: Path) -> str:
    # Offline: no index, no build isolation (the dev extra brings setuptools), no self-check.
    quiet = ("--no-deps", "--no-index", "--disable-pip-version-check", "--quiet")
    return run(sys.executable, "-m", "pip", *args, *quiet, cwd=cwd)


def files_under(folder: Path, *patterns: str) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for pattern in patterns
        for path in folder.rglob(pattern)
        if "__pycache__" not in path.parts
    }


# What setuptools says about data in a folder nobody named as a package: once per file, on
# every install (`make setup`, `pip install .`).
UNLISTED_PACKAGE = "is absent from the `packages` configuration"


@pytest.mark.slow
def test_the_wheel_carries_the_application_and_its_data_and_runs_from_any_folder(
    tmp_path: Path, built_wheel: wheel.Built
) -> None:
    assert UNLISTED_PACKAGE not in built_wheel.warnings
    assert "Warning" not in built_wheel.warnings, built_wheel.warnings
    names = set(zipfile.ZipFile(built_wheel.wheel).namelist())

    tops = {name.partition("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == set(ROOMS)
    for room in ROOMS:
        assert {f"{room}/{f}" for f in files_under(ROOT / room, "*.py")} <= names
    migrations = files_under(ROOT / "migrations", "*.py", "*.mako")
    assert {"env.py", "script.py.mako", "versions/0001_initial_schema.py"} <= migrations
    assert {f"bot/shipped/migrations/{f}" for f in migrations} <= names
    scripts = files_under(ROOT / "scripts", "*.yaml")
    assert {"ru.yaml", "en.yaml"} <= scripts
    assert {f"bot/shipped/scripts/{f}" for f in scripts} <= names
    catalogs = files_under(ROOT / "locales", "*.po")
    assert {"ru/LC_MESSAGES/leadbot.po", "en/LC_MESSAGES/leadbot.po"} <= catalogs
    assert {f"handlers/locales/{f}" for f in catalogs} <= names

    installed = tmp_path / "site"
    pip("install", "--target", installed, built_wheel.wheel, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing to find next to the cwd
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env |= {"PYTHONPATH": str(installed), "DATABASE_URL": "sqlite+aiosqlite:///leads.sqlite3"}
    code = "import bot, funnel, handlers; print(bot.__file__, funnel.__file__, handlers.__file__)"
    where = run(sys.executable, "-c", code, cwd=elsewhere, env=env)
    # The installed wheel's code, not the checkout's nor an editable install's.
    assert all(Path(f).is_relative_to(installed.resolve()) for f in where.split())
    shipped = installed.resolve() / "bot" / "shipped"
    texts = (
        "from handlers.i18n import locales_dir, t; print(locales_dir(), t('menu.help', lang='en'))"
    )
    found, english = run(sys.executable, "-c", texts, cwd=elsewhere, env=env).split()
    assert Path(found) == installed.resolve() / "handlers" / "locales" and english == "Help"
    checked = run(sys.executable, "-m", "bot", "check", cwd=elsewhere, env=env)
    assert checked.strip() == f"ok: settings and {shipped / 'scripts' / 'ru.yaml'}"
    # The report migrates a new database first: the migrations come from the wheel too.
    report = json.loads(
        run(sys.executable, "-m", "bot", "stats", "--json", cwd=elsewhere, env=env)
    )
    assert report["stages"][0]["reached"] == 0
    assert (elsewhere / "leads.sqlite3").exists()


@pytest.mark.slow
def test_an_editable_install_warns_about_no_package(tmp_path: Path) -> None:
    # `make setup`'s `pip install -e .`: the same hooks pip runs, without pip hiding their output.
    source = wheel.copy_build_sources(tmp_path / "source")
    built = wheel.backend("build_editable", source, tmp_path / "wheels")
    assert built.wheel.name.startswith("leadbot-0.1.0")
    assert UNLISTED_PACKAGE not in built.warnings, built.warnings


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
