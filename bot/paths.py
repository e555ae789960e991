"""Where the folders the bot reads at run time are: the migrations and the shipped scripts
sit inside the installed package (the wheel carries them as bot/shipped/, see setup.py),
or at the top of a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def shipped(folder: str) -> Path:
    """`migrations` or `scripts`: the installed package's copy, else the checkout's folder
    (a checkout, or an editable install, has no copy)."""
    installed = PACKAGE / "shipped" / folder
    return installed if installed.is_dir() else PACKAGE.parent / folder
