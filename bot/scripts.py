"""The script in force: loaded at start-up, reloaded on demand; a reload that fails keeps
the last good script running and reports what is wrong."""

from __future__ import annotations

from pathlib import Path

from funnel.script import Script, load_script


class ScriptHolder:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._current = load_script(path)

    @property
    def current(self) -> Script:
        return self._current

    def __call__(self) -> Script:
        return self._current

    def reload(self) -> Script:
        """Loads the file again; raises ScriptError (and keeps the old script) if invalid."""
        self._current = load_script(self.path)
        return self._current
