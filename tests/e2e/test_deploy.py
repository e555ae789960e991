"""docs/deploy.md's systemd steps followed as written, in a scratch root standing for `/`:
each command of the guide's block is carried out by a rule of its own below (a command the
guide gains and this file does not know fails the test). What needs root is checked
instead of done: the user the guide creates is the one the unit runs as and the folders
are given to. Then the unit itself, as systemd reads it: its ExecStartPre and ExecStart
run from its WorkingDirectory with its Environment and EnvironmentFile only (the settings
file made from .env.example), on the wheel installed into a fresh virtualenv, against the
emulator, which answers one /start. The dependencies come from this environment (there is
no index offline), through a path file in the new virtualenv."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import aiohttp
import pytest
from telegram_emulator import TelegramEmulator
from telegram_emulator.server import DEFAULT_TOKEN

from devtools.webhook_instance import free_port
from tests.guide import guide_block, parse_environment_file
from tests.wheel import Built

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "deploy_" + "x" * 24


def parse_unit(path: Path) -> dict[str, list[str]]:
    """A unit file's keys, each with its values in order (systemd allows a key again)."""
    keys: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        keys.setdefault(key, []).append(value)
    return keys


class Host:
    """The machine the guide is followed on: `root` stands for `/`, the checkout is the
    folder the guide's commands start in."""

    def __init__(self, root: Path, built: Built, edits: dict[str, str]) -> None:
        self.root = root
        self.built = built
        self.edits = edits
        self.users: set[str] = set()
        self.groups: set[str] = set()
        self.dist: Path | None = None
        self.started: list[str] = []
        self.done: list[str] = []

    def path(self, name: str) -> Path:
        if name.startswith("/"):
            return self.root / name.lstrip("/")
        if self.dist is not None and name.startswith("dist/"):
            return self.dist / name.removeprefix("dist/")
        return ROOT / name

    def follow(self, command: list[str]) -> None:
        program, *args = command
        if Path(program).name == "pip" and program.startswith("/"):
            self.install_into(self.path(program), args)
            self.done.append("pip install")
            return
        rule = getattr(self, "_" + Path(program).name.replace(".", "_").replace("-", "_"), None)
        assert rule is not None, f"the guide runs {command}, which this test cannot follow"
        rule(args)
        self.done.append(Path(program).name)

    def _make(self, args: list[str]) -> None:
        assert args == ["setup"]  # this environment is the set-up one

    def _pip(self, args: list[str]) -> None:
        if args[0] == "wheel":
            # `pip wheel --no-deps -w dist .`: the session's wheel stands for it.
            assert args[args.index("-w") + 1] == "dist" and args[-1] == "."
            self.dist = self.built.wheel.parent
            return
        raise AssertionError(f"pip {args} outside a virtualenv")

    def _useradd(self, args: list[str]) -> None:
        # Not root: remember who would exist.
        assert "--system" in args
        name = args[-1]
        self.users.add(name)
        if "--user-group" in args or "-U" in args:
            self.groups.add(name)

    def _python3_11(self, args: list[str]) -> None:
        assert args[:2] == ["-m", "venv"]
        venv = self.path(args[2])
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
        purelib = Path(sysconfig.get_paths()["purelib"])
        [site] = (venv / "lib").glob("python3*/site-packages")
        # The dependencies (aiogram, SQLAlchemy, ...) from here: the only copy offline.
        (site / "dependencies.pth").write_text(f"{purelib}\n", encoding="utf-8")

    def install_into(self, venv_pip: Path, args: list[str]) -> None:
        assert args[0] == "install"
        spec = args[1]
        name, _, extras = spec.partition("[")
        wheel = self.path(name)
        assert wheel == self.built.wheel, f"the guide installs {name}, the build makes {wheel}"
        assert extras.rstrip("]").split(",") == ["postgres", "redis"]
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", venv_pip.parent / "python", "install",
             "--no-deps", "--no-index", "--disable-pip-version-check", "--quiet", wheel],
            check=True, capture_output=True,
        )  # fmt: skip

    def _install(self, args: list[str]) -> None:
        mode = int(args[args.index("-m") + 1], 8)
        for flag, known in (("-o", self.users), ("-g", self.groups)):
            if flag in args:
                assert args[args.index(flag) + 1] in known, f"{args}: nobody created it"
        paths = [a for i, a in enumerate(args) if not a.startswith("-")
                 and (i == 0 or args[i - 1] not in ("-m", "-o", "-g"))]  # fmt: skip
        if "-d" in args:
            for folder in paths:
                self.path(folder).mkdir(parents=True, exist_ok=True)
                self.path(folder).chmod(mode)
            return
        source, target = (self.path(p) for p in paths)
        assert target.parent.is_dir(), f"{target.parent}: the guide did not create it"
        shutil.copyfile(source, target)
        target.chmod(mode)

    def _sudoedit(self, args: list[str]) -> None:
        [name] = args
        target = self.path(name)
        lines = []
        for line in target.read_text(encoding="utf-8").splitlines():
            key = line.partition("=")[0]
            lines.append(f"{key}={self.edits[key]}" if key in self.edits else line)
        missing = set(self.edits) - {line.partition("=")[0] for line in lines}
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert not missing, f"{sorted(missing)}: not in the settings file to edit"

    def _cp(self, args: list[str]) -> None:
        source, folder = args
        assert folder.endswith("/")
        target = self.path(folder)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.path(source), target)

    def _systemctl(self, args: list[str]) -> None:
        if args == ["daemon-reload"]:
            return
        assert args[:2] == ["enable", "--now"]
        self.started.extend(args[2:])

    def _journalctl(self, args: list[str]) -> None:
        pass


class Unit:
    """A unit file as systemd would run it, its absolute paths under the host's root."""

    def __init__(self, host: Host, name: str) -> None:
        self.host = host
        self.keys = parse_unit(host.path(f"/etc/systemd/system/{name}.service"))

    def one(self, key: str) -> str:
        [value] = self.keys[key]
        return value

    def command(self, key: str) -> list[str]:
        program, *args = shlex.split(self.one(key))
        return [str(self.host.path(program)), *args]

    @property
    def cwd(self) -> Path:
        return self.host.path(self.one("WorkingDirectory"))

    def environment(self, **changes: str) -> dict[str, str]:
        # What systemd gives a service: its own variables and the files', nothing inherited.
        env = {"PATH": os.defpath, "HOME": str(self.cwd), "LANG": "C.UTF-8"}
        for assignment in self.keys.get("Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = value
        for name in self.keys["EnvironmentFile"]:
            env |= parse_environment_file(self.host.path(name.lstrip("-")))
        return env | changes

    def run(
        self, key: str, replace: list[str] | None = None, **changes: str
    ) -> subprocess.CompletedProcess[str]:
        """The key's command (its `bot` arguments replaced by `replace`: `check` with the
        ExecStart's interpreter) in the unit's folder and environment, with `changes`."""
        command = self.command(key)
        if replace is not None:
            command = [*command[: command.index("bot") + 1], *replace]
        return subprocess.run(
            command, cwd=self.cwd, env=self.environment(**changes), capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip


async def healthy(url: str, process: asyncio.subprocess.Process, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while process.returncode is None and time.monotonic() < deadline:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"not healthy (exit {process.returncode})")


def install_as_the_guide_says(root: Path, built: Built, edits: dict[str, str]) -> Unit:
    """The guide's block, up to `systemctl enable --now`; then the unit's ExecStartPre and
    the checks an operator runs by hand, the unit's way."""
    host = Host(root, built, edits)
    for command in guide_block("systemd"):
        host.follow(command)
    assert host.done[:3] == ["make", "pip", "useradd"] and host.started == ["leadbot"]
    unit = Unit(host, "leadbot")
    assert unit.one("User") in host.users and unit.one("Group") in host.groups
    settings = host.path("/etc/leadbot/leadbot.env")
    assert settings.stat().st_mode & 0o777 == 0o600
    # .env.example's script setting, untouched by the edits: the shipped script.
    assert parse_environment_file(settings)["SCRIPT_PATH"] == ""

    migrated = unit.run("ExecStartPre")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("schema migrated from empty to ")
    [writable] = unit.keys["ReadWritePaths"]
    database = host.path(writable) / "leadbot.sqlite3"
    assert database.is_file(), sorted(p.name for p in host.path(writable).iterdir())

    # The installed wheel's scripts, not the checkout's: the unit runs from /opt/leadbot.
    [site] = host.path("/opt/leadbot/venv/lib").glob("python3*/site-packages")
    shipped = site / "bot" / "shipped" / "scripts"
    for setting, script in (("", "ru.yaml"), ("scripts/en.yaml", "en.yaml")):
        checked = unit.run("ExecStart", SCRIPT_PATH=setting, replace=["check"])
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.strip() == f"ok: settings and {shipped / script}"
    return unit


async def test_the_systemd_steps_as_written_start_a_bot_that_answers(
    emu: TelegramEmulator, tmp_path: Path, built_wheel: Built
) -> None:
    port = free_port()
    edits = {
        "BOT_TOKEN": DEFAULT_TOKEN,
        "TELEGRAM_API_URL": emu.base_url,
        "WEBHOOK_URL": "https://bot.school.example/telegram",
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_LISTEN": f"127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
    }
    # Nothing here talks to the emulator: its loop may wait.
    unit = install_as_the_guide_says(tmp_path / "root", built_wheel, edits)

    emu.webhook.configure(targets=[f"http://127.0.0.1:{port}/telegram"])
    process = await asyncio.create_subprocess_exec(
        *unit.command("ExecStart"), cwd=unit.cwd, env=unit.environment(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await healthy(f"http://127.0.0.1:{port}/healthz", process, 60)
        user = emu.add_user("Оля")
        await user.send("/start")
        first = await user.next_message(timeout=30)
        assert "1 из 4" in first.plain_text
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode(errors="replace")
    # ProtectSystem=strict: nothing written beside the data folder.
    assert sorted(p.name for p in unit.cwd.iterdir()) == ["data", "venv"]

    # A script setting that leads nowhere stops the start at ExecStartPre, naming it, with
    # the exit code the unit does not restart on.
    refused = unit.run("ExecStartPre", SCRIPT_PATH="scripts/ru.yml")
    assert refused.returncode == 2 and refused.stderr.startswith("settings: SCRIPT_PATH: ")
    assert unit.keys["RestartPreventExitStatus"] == ["2"]
