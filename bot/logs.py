"""Structured logs: one event name and key=value fields per line. Handlers put ids and
counts in `extra`, never message texts or phone numbers."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class FieldsFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")
        }
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiogram logs every handled update at INFO; that is noise for an operator.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)
    # Migrations and job bookkeeping say the same at every start; only problems matter.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # A tick still running when the next is due is skipped by design (one at a time) and
    # APScheduler would warn each time; the jobs log their own failures (bot/scheduler.py).
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    # At DEBUG these would print every SQL statement with its parameters: answers, names.
    for private in ("aiosqlite", "sqlalchemy.engine", "asyncpg"):
        logging.getLogger(private).setLevel(logging.WARNING)


def origin(error: BaseException) -> str:
    """Where an exception was raised, as `file.py:line in function`: enough to find the bug,
    without the exception's text (which may quote a user's message)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
