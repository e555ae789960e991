"""The command line: `python -m bot run | demo | chat | check | stats | export | rebuild-rollups`.

`demo` and `chat` are developer tools (devtools/) on the local Telegram emulator, which runs
on its own with `python -m telegram_emulator`; neither ships in the application's wheel."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from bot.app import App


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the bot (long polling) with BOT_TOKEN")
    demo = commands.add_parser("demo", help="offline demo: emulator, 200 simulated prospects")
    demo.add_argument("--prospects", type=int, default=200)
    demo.add_argument("--seed", type=int, default=7)
    chat = commands.add_parser("chat", help="talk to the bot yourself, offline, in this terminal")
    chat.add_argument("--script", type=Path, default=None, help="a script file to try")
    chat.add_argument(
        "--time-scale", type=_time_scale, default=None,
        help="a test run: campaign delays divided by this (3600: an hour in a second)",
    )  # fmt: skip
    check = commands.add_parser("check", help="validate the settings and the script")
    check.add_argument("script", nargs="?", type=Path, help="a script file (default SCRIPT_PATH)")
    stats = commands.add_parser("stats", help="print the funnel report")
    stats.add_argument("--period", default="all", help="7d, 30d, all, or 2026-01-01..2026-01-31")
    stats.add_argument("--source", default=None)
    stats.add_argument("--json", action="store_true", help="machine-readable output")
    stats.add_argument(
        "--from-log", action="store_true", help="read the stage log even where rollups could"
    )
    export = commands.add_parser("export", help="write the leads as CSV (Excel, Google Sheets)")
    export.add_argument("--period", default="all")
    export.add_argument("--output", type=Path, default=Path("leads.csv"))
    commands.add_parser(
        "rebuild-rollups",
        help="recompute the report's rollups from the stage log (after writing leads by hand)",
    )
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except SettingsError as e:
        for line in e.lines:
            print(f"settings: {line}", file=sys.stderr)
        return 2

    from bot.logs import configure

    configure(settings.log_level)
    handlers: dict[str, Any] = {
        "run": lambda: _run(settings),
        "demo": lambda: _demo(settings, args.prospects, args.seed),
        "chat": lambda: _chat(settings, args.script, args.time_scale),
        "check": lambda: _check(settings, args.script),
        "stats": lambda: _stats(settings, args.period, args.source, args.json, args.from_log),
        "export": lambda: _export(settings, args.period, args.output),
        "rebuild-rollups": lambda: _rebuild_rollups(settings),
    }
    try:
        return int(asyncio.run(handlers[args.command]()) or 0)
    except KeyboardInterrupt:
        return 130


def _script_problems(path: Path) -> list[str]:
    from funnel.script.loading import ScriptError, load_script

    try:
        load_script(path)
    except ScriptError as e:
        return e.problems
    return []


def _warn_about_roles(settings: Settings) -> None:
    for line in settings.warnings():
        print(f"settings: WARNING {line}", file=sys.stderr)


async def _check(settings: Settings, script: Path | None) -> int:
    _warn_about_roles(settings)
    problems = _script_problems(script or settings.script_path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"ok: settings and {script or settings.script_path}")
    return 1 if problems else 0


# Telegram unreachable at start-up: try again, less often the longer it lasts.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 10


async def _run(settings: Settings) -> int:
    from bot.app import App

    if settings.bot_token is None:
        print("settings: BOT_TOKEN: required to run; get one from @BotFather", file=sys.stderr)
        return 2
    problems = _script_problems(settings.script_path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    _warn_about_roles(settings)
    token = settings.bot_token.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = await _start_when_reachable(lambda: App(settings, token=token), settings, stop)
    if isinstance(app, int):
        return app
    if hasattr(signal, "SIGHUP"):  # kill -HUP <pid>: read the script again
        loop.add_signal_handler(signal.SIGHUP, app.reload_on_signal)
    try:
        waiting = asyncio.create_task(stop.wait())
        await asyncio.wait(
            [waiting, asyncio.ensure_future(app.wait())], return_when="FIRST_COMPLETED"
        )
        waiting.cancel()
    finally:
        await app.stop()
    return 0


async def _start_when_reachable(
    make_app: Callable[[], App], settings: Settings, stop: asyncio.Event
) -> App | int:
    """The started app once Telegram answers, trying again with backoff meanwhile; an exit
    code when stopped (SIGINT/SIGTERM) or refused before that. One line per failed try."""
    import aiohttp
    from aiogram.exceptions import (
        TelegramAPIError,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
        TelegramUnauthorizedError,
    )

    from funnel.script.loading import ScriptError

    # Telegram's side; a database that cannot be reached is another story, told as before.
    telegram_away = (TelegramNetworkError, TelegramServerError, TelegramRetryAfter)
    unreachable = (*telegram_away, aiohttp.ClientError, OSError, TimeoutError)
    server = _server(settings.telegram_api_url)
    delay = RETRY_FIRST_SECONDS
    failed = False
    app = make_app()
    while True:
        error: BaseException
        try:
            # The probe changes nothing, so it may fail any number of times; start() runs
            # once Telegram has just answered.
            probe = app.bot.get_me(request_timeout=PROBE_TIMEOUT_SECONDS)
            if not await _unless_stopped(stop, probe):
                break
        except unreachable as e:
            error = e
        except TelegramAPIError as e:
            await app.stop()
            if isinstance(e, TelegramUnauthorizedError):
                print("telegram: BOT_TOKEN was refused; take it again from @BotFather",
                      file=sys.stderr)  # fmt: skip
                return 2
            print(f"telegram: {server} refused the start ({type(e).__name__})", file=sys.stderr)
            return 1
        else:
            if failed:
                print(f"telegram: reached {server}; starting", file=sys.stderr, flush=True)
            try:
                await app.start()
                return app
            except telegram_away as e:
                error = e
            # Telegram went away during start(): undo what it got through, start afresh.
            await app.stop()
            try:
                app = make_app()
            except ScriptError as e:
                print("\n".join(e.problems), file=sys.stderr)
                return 1
        cause = error.__cause__ if isinstance(error, TelegramNetworkError) else None
        print(
            f"telegram: cannot reach {server} ({type(cause or error).__name__}); "
            f"retrying in {delay:g} s",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        failed = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            break
        delay = min(delay * 2, RETRY_MAX_SECONDS)
    await app.stop()
    return 0


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[Any]) -> bool:
    """Awaits `work` unless `stop` comes first (then cancels it and returns False)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, stopping], return_when="FIRST_COMPLETED")
    stopping.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    task.result()
    return True


def _server(url: str) -> str:
    """scheme://host:port of the Bot API server: what an operator checks, never a token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    return (
        f"{parts.scheme}://[{host}]:{port}" if ":" in host else f"{parts.scheme}://{host}:{port}"
    )


async def _read(settings: Settings, period_text: str, work: Any) -> Any:
    """Runs `work(session, script, period, now)` on the database; None on a bad --period
    or script."""
    from bot import db
    from funnel.core.clock import SystemClock
    from funnel.reports.periods import parse_period
    from funnel.script.loading import ScriptError, load_script
    from handlers.errors import explain

    now = SystemClock().now()
    try:
        period = parse_period(period_text, now, tz=settings.zone)
    except ValueError as e:
        print(f"--period: {explain(e, 'en')}", file=sys.stderr)
        return None
    try:
        script = load_script(settings.script_path)
    except ScriptError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return None
    engine = db.create_engine(settings.database_url)
    try:
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            return await work(session, script, period, now)
    finally:
        await engine.dispose()


async def _stats(
    settings: Settings, period_text: str, source: str | None, as_json: bool, from_log: bool
) -> int:
    from funnel.reports.funnel_report import funnel_report
    from handlers.views.report import format_report_text

    async def work(session: Any, script: Any, period: Any, now: Any) -> Any:
        return await funnel_report(
            session, script, now=now, period=period, source=source, from_log=from_log
        )

    report = await _read(settings, period_text, work)
    if report is None:
        return 2
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_report_text(report))
    return 0


async def _export(settings: Settings, period_text: str, output: Path) -> int:
    from funnel.reports.export import export_leads_csv
    from handlers.views.export import csv_labels

    async def work(session: Any, script: Any, period: Any, now: Any) -> bytes:
        return await export_leads_csv(
            session, script, period, now, labels=csv_labels(script.language)
        )

    data = await _read(settings, period_text, work)
    if data is None:
        return 2
    output.write_bytes(data)
    print(f"wrote {output}")
    return 0


async def _rebuild_rollups(settings: Settings) -> int:
    from bot import db
    from funnel.reports import rollup

    engine = db.create_engine(settings.database_url)
    try:
        await db.migrate(engine)
        if not rollup.supported(engine.dialect.name):
            print(f"{engine.dialect.name}: no rollups here, every report reads the log")
            return 0
        async with engine.begin() as connection:
            await connection.run_sync(rollup.rebuild)
    finally:
        await engine.dispose()
    print("rollups rebuilt from the stage log")
    return 0


async def _demo(settings: Settings, prospects: int, seed: int) -> int:
    try:
        from devtools.demo import run_demo
    except ModuleNotFoundError as e:
        return _without_dev_tools("demo", e)
    return await run_demo(settings, prospects=prospects, seed=seed)


async def _chat(
    settings: Settings, script: Path | None = None, time_scale: float | None = None
) -> int:
    try:
        from devtools.chat import run_chat
    except ModuleNotFoundError as e:
        return _without_dev_tools("terminal chat", e)
    return await run_chat(settings, script, time_scale)


def _time_scale(text: str) -> float:
    from funnel.dialogue.test_run import parse_scale

    try:
        return parse_scale(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _without_dev_tools(tool: str, error: ModuleNotFoundError) -> int:
    """One line on what to install when the dev tools or the emulator are absent (a
    production install); any other missing module is a real error."""
    missing = (error.name or "").partition(".")[0]
    if missing == "telegram_emulator":
        needs = "the emulator: pip install ./emulator"
    elif missing == "devtools":
        needs = "the dev tools and the emulator: pip install ./devtools ./emulator"
    else:
        raise error
    print(f"the {tool} needs {needs} (in the repository)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
