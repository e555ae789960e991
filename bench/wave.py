"""The delivery benchmarks' wave and its figure, shared by one instance (bench_delivery) and
two (bench_delivery_shared): one lead per emulator user, each owed the first follow-up of the
dialogue it left, and the pace the sends reached at the emulator."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from telegram_emulator import TelegramEmulator

from funnel.core import store
from funnel.script.schema import Script

# The target: at least 99% of the configured rate.
MIN_SHARE = 0.99
# The leads stopped answering this long ago: past the first follow-up of the shipped script
# (1 h), short of the second (a day), so each is owed exactly one touch.
SILENT_FOR = timedelta(hours=2)


def add_wave(
    session: AsyncSession, emu: TelegramEmulator, touches: int, script: Script, now: datetime
) -> None:
    """`touches` leads (the caller commits), each a user of the emulator of its own, so no
    chat's own limit ever paces the wave: only the bot's overall one."""
    for i in range(touches):
        user = emu.add_user(f"Lead{i}")
        profile = store.Profile(user_id=user.id, chat_id=user.chat_id, first_name="Ann")
        session.add(
            store.new_lead(
                profile,
                source="bench",
                stage="engaged",
                position="timing",
                version=script.label,
                at=now - SILENT_FOR,
            )
        )


def pacing(times: Sequence[float]) -> float:
    """Sends a second between the first request and the last (N - 1 intervals): what the
    pacing achieved, start-up and planning left out."""
    ordered = sorted(times)
    span = ordered[-1] - ordered[0] if len(ordered) > 1 else 0.0
    return (len(ordered) - 1) / span if span > 0 else 0.0


def busiest_second(times: Sequence[float]) -> int:
    """The most requests in any one-second window: a burst the average hides."""
    ordered = sorted(times)
    busiest, start = 0, 0
    for end, moment in enumerate(ordered):
        while moment - ordered[start] >= 1.0:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest
