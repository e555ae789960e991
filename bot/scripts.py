"""The script in force: loaded at start-up, reloaded on demand; a reload that fails keeps
the last good script running and reports what is wrong."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from funnel.script.loading import ScriptError, load_script
from funnel.script.schema import Script

log = logging.getLogger("leadbot.scripts")
# What of a refusal fits one Telegram message (4096 characters) with room for a heading.
REPLY_CHARS = 3500


class ScriptHolder:
    def __init__(self, path: Path) -> None:
        self.path = path
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
