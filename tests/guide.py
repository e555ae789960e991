"""docs/deploy.md's command blocks and the settings files it makes, read as the tests that
follow the guide need them."""

from __future__ import annotations

import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "deploy.md"


def guide_block(section: str) -> list[list[str]]:
    """The commands of a section's ```sh block: continuation lines joined, comments
    dropped, `a && b` as two commands, `sudo` dropped (the test stands in for root)."""
    text = GUIDE.read_text(encoding="utf-8")
    part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = part.split("```sh\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            first, _, words = _until(words, "&&")
            if first[:1] == ["sudo"]:
                first = first[1:]
            commands.append(first)
    return [c for c in commands if c]


def _until(words: list[str], separator: str) -> tuple[list[str], str, list[str]]:
    if separator in words:
        at = words.index(separator)
        return words[:at], separator, words[at + 1 :]
    return words, "", []


def parse_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them: comments and blank lines
    skipped, a value in matching quotes unquoted."""
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values
