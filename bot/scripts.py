"""The script in force: loaded at start-up, reloaded on demand (/reload), on SIGHUP and when
the file changes on disk; a reload that fails keeps the last good script running and reports
what is wrong. Leads keep the version they started with (leads.script_version)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

from funnel.script.loading import MAX_SCRIPT_BYTES, ScriptError, load_script
from funnel.script.schema import Script
from handlers.i18n import t
from handlers.views.script_diff import format_refusal_html, format_reload_html

log = logging.getLogger("leadbot.scripts")
# What of a refusal fits one Telegram message (4096 characters) with room for a heading.
REPLY_CHARS = 3500
# How often the file on disk is looked at (a stat; the content is hashed only when the
# modification time or size moved).
WATCH_SECONDS = 5.0


@dataclass(frozen=True)
class Reloaded:
    old: Script
    new: Script


@dataclass(frozen=True)
class Refused:
    problems: list[str]


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


def _digest(path: Path) -> str | None:
    """The content's hash, read within the loader's size bound."""
    try:
        with path.open("rb") as file:
            return hashlib.sha256(file.read(MAX_SCRIPT_BYTES + 1)).hexdigest()
    except OSError:
        return None


class ScriptHolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = (_signature(path), _digest(path))
        self._current = load_script(path)
        # Two admins reloading at once parse one after the other, not both at once.
        self._reloading = asyncio.Lock()

    @property
    def current(self) -> Script:
        return self._current

    def __call__(self) -> Script:
        return self._current

    async def reload(self) -> Script:
        """Loads the file again in a worker thread, so updates keep being served meanwhile;
        raises ScriptError (and keeps the old script) if the file is not a good script."""
        async with self._reloading:
            self._seen = await asyncio.to_thread(
                lambda: (_signature(self.path), _digest(self.path))
            )
            try:
                script = await asyncio.to_thread(load_script, self.path)
            except ScriptError as e:
                log.warning(
                    "script.reload_refused: the script in force stays; fix the file and "
                    "/reload again",
                    extra={"event": "script.reload_refused", "problems": len(e.problems)},
                )
                raise
            self._current = script
        log.info("script.reloaded", extra={"event": "script.reloaded", "script": script.label})
        return script

    async def reload_if_changed(self, *, force: bool = False) -> Reloaded | Refused | None:
        """Reloads when the file's content changed since it was last read (or when `force`,
        e.g. on SIGHUP); None when there was nothing to do. A file that was only touched, or
        a refused file seen before, is not reloaded or reported again."""
        if not force:
            signature = await asyncio.to_thread(_signature, self.path)
            if signature == self._seen[0]:
                return None
            digest = await asyncio.to_thread(_digest, self.path)
            if digest == self._seen[1]:
                self._seen = (signature, digest)
                return None
        old = self._current
        try:
            new = await self.reload()
        except ScriptError as e:
            return Refused(e.problems)
        return Reloaded(old, new)

    @staticmethod
    def problems_that_fit(problems: Sequence[str], limit: int = REPLY_CHARS) -> list[str]:
        """The first problems, as many as fit in `limit` characters, and how many are left."""
        shown: list[str] = []
        used = 0
        for problem in problems:
            if used + len(problem) + 1 > limit - 40:  # room for the "...more" line
                break
            shown.append(problem)
            used += len(problem) + 1
        if len(shown) < len(problems):
            shown.append(f"...and {len(problems) - len(shown)} more")
        return shown


def reload_reply_html(outcome: Reloaded | Refused, lang: str, holder: ScriptHolder) -> str:
    """What admins are told about a reload: the version loaded and what changed, or the
    problems with their lines and that the last good script stays."""
    if isinstance(outcome, Refused):
        return format_refusal_html(holder.problems_that_fit(outcome.problems), lang)
    return format_reload_html(outcome.old, outcome.new)


async def announce_reload(
    bot: Bot,
    admin_ids: Iterable[int],
    holder: ScriptHolder,
    outcome: Reloaded | Refused,
    why: str,
) -> None:
    """Tells every admin about a reload nobody asked for in the chat (`why`: a catalog key:
    the file changed, or SIGHUP)."""
    lang = holder.current.language
    text = f"{t(why, lang=lang)}\n{reload_reply_html(outcome, lang, holder)}"
    for admin in sorted(admin_ids):
        try:
            await bot.send_message(admin, text)
        except TelegramAPIError as e:
            log.warning(
                "script.reload_not_announced: the admin must /start the bot once",
                extra={"event": "script.reload_not_announced", "admin_id": admin,
                       "error": type(e).__name__},
            )  # fmt: skip
