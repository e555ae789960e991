"""The command line: `python -m bot run [--webhook] | migrate | demo | chat | check | stats |
ab | broadcast | export | rebuild-rollups`.

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
    from bot.scripts import ScriptHolder
    from funnel.script.schema import Script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the bot (long polling) with BOT_TOKEN")
    run.add_argument(
        "--webhook",
        action="store_true",
        help="take updates on WEBHOOK_LISTEN from Telegram posting to WEBHOOK_URL",
    )
    commands.add_parser(
        "migrate", help="bring the database schema up to date (once, before new instances start)"
    )
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
    ab = commands.add_parser("ab", help="print the A/B tests' report")
    ab.add_argument("experiment", nargs="?", default=None, help="one experiment's id")
    ab.add_argument("--json", action="store_true", help="machine-readable output")
    export = commands.add_parser(
        "export", help="write the leads and the report as .xlsx (or the leads as CSV)"
    )
    export.add_argument("--period", default="all")
    export.add_argument("--format", choices=["xlsx", "csv"], default=None,
                        help="xlsx (every part, a sheet each) or csv (the leads); "
                             "default: from --out's extension, else xlsx")  # fmt: skip
    export.add_argument("--out", "--output", dest="output", type=Path, default=None,
                        help="the file to write (default leads.xlsx or leads.csv)")  # fmt: skip
    commands.add_parser(
        "rebuild-rollups",
        help="recompute the report's rollups from the stage log (after writing leads by hand)",
    )
    broadcast = commands.add_parser(
        "broadcast", help="send a message to a segment of leads (the running bot delivers it)"
    )
    broadcast.add_argument("--segment", required=True, help='e.g. "stage=qualified silent>3d"')
    broadcast.add_argument("--text-file", type=Path, required=True, help="Telegram HTML, UTF-8")
    broadcast.add_argument("--at", default=None, help="YYYY-MM-DD HH:MM in TIMEZONE (default now)")
    broadcast.add_argument("--dry-run", action="store_true", help="count and sample, save nothing")
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
        "run": lambda: _run(settings, webhook=args.webhook),
        "migrate": lambda: _migrate(settings),
        "demo": lambda: _demo(settings, args.prospects, args.seed),
        "chat": lambda: _chat(settings, args.script, args.time_scale),
        "check": lambda: _check(settings, args.script),
        "stats": lambda: _stats(settings, args.period, args.source, args.json, args.from_log),
        "ab": lambda: _ab(settings, args.experiment, args.json),
        "export": lambda: _export(settings, args.period, args.output, args.format),
        "rebuild-rollups": lambda: _rebuild_rollups(settings),
        "broadcast": lambda: _broadcast(
            settings, args.segment, args.text_file, args.at, args.dry_run
        ),
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


# A setting or a script the bot cannot run with: starting again changes nothing, so the
# systemd unit does not restart on it (RestartPreventExitStatus=2) and says why once.
CONFIGURATION_EXIT = 2


def _unusable_script(problems: list[str]) -> int:
    for line in problems:
        print(line, file=sys.stderr)
    print(
        "settings: SCRIPT_PATH: the bot cannot start with this script; fix it (check it with "
        "`python -m bot check`), or leave SCRIPT_PATH empty for the shipped one",
        file=sys.stderr,
    )
    return CONFIGURATION_EXIT


def _warn_about_roles(settings: Settings) -> None:
    for line in settings.warnings():
        print(f"settings: WARNING {line}", file=sys.stderr)


async def _check(settings: Settings, script: Path | None) -> int:
    _warn_about_roles(settings)
    problems = _script_problems(script or settings.script_path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        from funnel.script.loading import load_script

        for line in offer_warnings(load_script(script or settings.script_path), settings):
            print(f"script: WARNING {line}", file=sys.stderr)
        print(f"ok: settings and {script or settings.script_path}")
    return 1 if problems else 0


def offer_warnings(script: Script, settings: Settings) -> list[str]:
    """Offers the bot cannot send as it is set up: said by `check` and at start-up."""
    from funnel.handoff.payments import unsendable_offers

    return [
        f"offer '{offer.id}' is priced in {offer.currency}, which needs "
        "PAYMENT_PROVIDER_TOKEN (from @BotFather, Payments); without it the bot sends the "
        "text but not this invoice (offers in XTR, Telegram Stars, need no token)"
        for offer in unsendable_offers(script, settings.provider_token is not None)
    ]


# Telegram unreachable at start-up: try again, less often the longer it lasts.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 60.0
PROBE_TIMEOUT_SECONDS = 10


async def _run(settings: Settings, *, webhook: bool = False) -> int:
    from bot import db

    if settings.bot_token is None:
        print("settings: BOT_TOKEN: required to run; get one from @BotFather", file=sys.stderr)
        return 2
    if webhook and settings.webhook_problems():
        for line in settings.webhook_problems():
            print(f"settings: {line}", file=sys.stderr)
        return 2
    from bot.scripts import ScriptHolder
    from funnel.script.loading import ScriptError

    try:
        scripts = ScriptHolder(settings.script_path)
    except ScriptError as e:
        return _unusable_script(e.problems)
    _warn_about_roles(settings)
    try:
        instance_lock = db.single_instance_lock(settings.database_url)
    except db.InstanceLocked as e:
        print(f"database: {e}", file=sys.stderr)
        return 1
    try:
        return await _run_alone(settings, scripts, webhook=webhook)
    finally:
        if instance_lock is not None:
            instance_lock.close()


async def _run_alone(settings: Settings, scripts: ScriptHolder, *, webhook: bool = False) -> int:
    from bot.app import App

    assert settings.bot_token is not None
    token = settings.bot_token.get_secret_value()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.redis_url is not None:
        refused = await _redis_refuses(settings)
        if refused:
            print(refused, file=sys.stderr)
            return 1
    app = await _start_when_reachable(
        lambda: App(settings, token=token, scripts=scripts), settings, stop, webhook=webhook
    )
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


async def _redis_refuses(settings: Settings) -> str | None:
    """Why the shared limits cannot start (Redis does not answer), or None."""
    from bot.shared_limits import SharedLimitsUnavailable, SharedRateLimiter

    assert settings.redis_url is not None
    probe = SharedRateLimiter.from_url(settings.redis_url.get_secret_value(), "probe:")
    try:
        await probe.connect()
    except SharedLimitsUnavailable as e:
        return f"redis: {e}"
    finally:
        await probe.close()
    return None


async def _start_when_reachable(
    make_app: Callable[[], App], settings: Settings, stop: asyncio.Event, *, webhook: bool = False
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

    from bot.webhook import ListenError
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
                await (app.start(webhook=True) if webhook else app.start())
                return app
            except telegram_away as e:
                error = e
            except ListenError as e:
                await app.stop()
                print(f"web: {e}", file=sys.stderr)
                return 2
            # Telegram went away during start(): undo what it got through, start afresh.
            await app.stop()
            try:
                app = make_app()
            except ScriptError as e:
                return _unusable_script(e.problems)
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
    from funnel.reports.managers import managers_report
    from handlers.views.managers_report import format_managers_text
    from handlers.views.report import format_report_text

    async def work(session: Any, script: Any, period: Any, now: Any) -> Any:
        report = await funnel_report(
            session, script, now=now, period=period, source=source, from_log=from_log
        )
        # The managers' section: the same table as /managers, for the same period.
        return report, await managers_report(session, script, period)

    read = await _read(settings, period_text, work)
    if read is None:
        return 2
    report, managers = read
    if as_json:
        data = report.to_json()
        data["managers"] = managers.to_json()
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        print(format_report_text(report))
        print()
        # In English, like the funnel report's terminal table above.
        print(format_managers_text(managers, lang="en"))
    return 0


async def _ab(settings: Settings, experiment: str | None, as_json: bool) -> int:
    from funnel.experiments.report import ab_report
    from handlers.views.experiments import format_ab_report_text

    async def work(session: Any, script: Any, period: Any, now: Any) -> Any:
        return script, await ab_report(session, script, now, experiment)

    found = await _read(settings, "all", work)
    if found is None:
        return 2
    script, report = found
    if experiment is not None and not report.experiments:
        known = ", ".join(e.id for e in script.experiments) or "none"
        print(f"no experiment '{experiment[:40]}' (known: {known})", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        print(format_ab_report_text(report, script, lang=script.language))
    return 0


async def _export(
    settings: Settings, period_text: str, output: Path | None, fmt: str | None
) -> int:
    from funnel.reports.export import export_file
    from handlers.views.export import export_labels

    if fmt is None:
        fmt = "csv" if output is not None and output.suffix.lower() == ".csv" else "xlsx"
    output = output or Path(f"leads.{fmt}")

    async def work(session: Any, script: Any, period: Any, now: Any) -> bytes:
        labels = export_labels(script.language, settings.zone.key)
        return await export_file(
            session, script, period, now, zone=settings.zone, labels=labels, fmt=fmt
        )

    data = await _read(settings, period_text, work)
    if data is None:
        return 2
    output.write_bytes(data)
    print(f"wrote {output}")
    return 0


async def _broadcast(
    settings: Settings, segment_text: str, text_file: Path, at: str | None, dry_run: bool
) -> int:
    """Schedules a broadcast as /broadcast does; the running bot's tick delivers it."""
    from bot import db
    from funnel.broadcasts import broadcasts
    from funnel.broadcasts.segments import count_segment, parse_segment, sample_segment
    from funnel.core.clock import SystemClock
    from funnel.core.telegram_text import visible_text
    from funnel.script.loading import ScriptError, load_script
    from handlers.views.broadcasts import explain

    now = SystemClock().now()
    try:
        script = load_script(settings.script_path)
    except ScriptError as e:
        print("\n".join(e.problems), file=sys.stderr)
        return 2
    try:
        text = text_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"--text-file: cannot read {text_file}: {type(e).__name__}", file=sys.stderr)
        return 2
    problems: list[str] = []
    for option, check in (
        ("--segment", lambda: parse_segment(segment_text, script)),
        ("--text-file", lambda: broadcasts.check_text(text)),
        ("--at", lambda: at and broadcasts.parse_send_at(at, now, settings.zone)),
    ):
        try:
            check()
        except ValueError as e:
            problems.append(f"{option}: {visible_text(explain(e, 'en'))}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    segment = parse_segment(segment_text, script)
    send_at = broadcasts.parse_send_at(at, now, settings.zone) if at else now
    engine = db.create_engine(settings.database_url)
    try:
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            count = await count_segment(session, segment, now)
            if dry_run or count == 0:
                sample = await sample_segment(session, segment, now, 10)
                print(f"segment {segment.text!r}: {count} leads would receive it")
                for lead in sample:
                    print(f"  lead #{lead.id}  {lead.stage}  {lead.source}")
                return 0 if dry_run else 1
            scheduled = await broadcasts.schedule(session, segment, text, send_at, now, count)
            await session.commit()
    finally:
        await engine.dispose()
    local = send_at.astimezone(settings.zone).strftime("%Y-%m-%d %H:%M")
    print(
        f"broadcast #{scheduled.id}: {count} leads, at {local} {settings.zone.key}; the running "
        f"bot delivers it (progress: /broadcast status {scheduled.id})"
    )
    return 0


async def _migrate(settings: Settings) -> int:
    """The schema to the latest revision; on PostgreSQL under an advisory lock, so instances
    starting together wait for one another instead of racing (bot/db.py). Refused, with
    nothing changed, when SCRIPT_PATH's script cannot be used."""
    from alembic.util import CommandError

    from bot import db

    # migrate is what runs before a start (the unit's ExecStartPre, a deploy job): a script
    # the bot cannot start with stops it here, before systemd ever starts the bot.
    problems = _script_problems(settings.script_path)
    if problems:
        return _unusable_script(problems)
    engine = db.create_engine(settings.database_url)
    try:
        before = await db.revision(engine)
        await db.migrate(engine)
        after = await db.revision(engine)
    except CommandError as e:
        print(f"migrate: {e}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    if before == after:
        print(f"schema up to date (revision {after})")
    else:
        print(f"schema migrated from {before or 'empty'} to {after}")
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
