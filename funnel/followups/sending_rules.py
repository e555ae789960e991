"""When an unsolicited message may go out: the send window in the school's time zone and the
per-lead frequency cap. Pure arithmetic on aware datetimes, DST-safe through zoneinfo."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from funnel.core.clock import as_utc
from funnel.script.schema import FrequencyCap, SendWindow

__all__ = ["cap_release", "in_window", "next_opening", "send_allowed_at"]


def _local_time(moment: datetime, zone: ZoneInfo) -> time:
    return as_utc(moment).astimezone(zone).time().replace(tzinfo=None)


def in_window(moment: datetime, window: SendWindow, zone: ZoneInfo) -> bool:
    """Whether local wall time at `moment` is inside [start, end).

    start == end means always open; start > end is a window across midnight (22:00–06:00).
    """
    start, end = window.start, window.end
    if start == end:
        return True
    local = _local_time(moment, zone)
    if start < end:
        return start <= local < end
    return local >= start or local < end


def next_opening(moment: datetime, window: SendWindow, zone: ZoneInfo) -> datetime:
    """`moment` itself when the window is open, else the next time it opens (UTC).

    A start time that does not exist locally (the spring-forward gap) opens at the first
    real instant after it; one that exists twice (autumn) opens at the first occurrence.
    """
    moment = as_utc(moment)
    if in_window(moment, window, zone):
        return moment
    local_day = moment.astimezone(zone).date()
    for days in range(3):
        day = local_day + timedelta(days=days)
        opening = datetime.combine(day, window.start, tzinfo=zone).astimezone(UTC)
        # In the gap, fold=0 maps the missing wall time to an instant just after the gap,
        # which is inside the window; the check guards against any other zone oddity.
        if opening > moment and in_window(opening, window, zone):
            return opening
    # Unreachable for real zones (a window opens every day); fail loudly rather than spin.
    raise ValueError(f"send window {window.start}–{window.end} never opens in {zone.key}")


def cap_release(sent: Iterable[datetime], now: datetime, cap: FrequencyCap) -> datetime | None:
    """None when one more message fits the cap at `now`; otherwise the first moment it fits
    (when enough of the counted sends have left the cap period)."""
    now = as_utc(now)
    counted = sorted(s for s in (as_utc(x) for x in sent) if s > now - cap.per)
    if len(counted) < cap.messages:
        return None
    # At time t a send s counts while t < s + per; one slot frees when all but
    # (messages - 1) of them have left.
    return counted[len(counted) - cap.messages] + cap.per


def send_allowed_at(
    now: datetime,
    sent: Iterable[datetime],
    window: SendWindow,
    cap: FrequencyCap,
    zone: ZoneInfo,
) -> datetime:
    """The first moment at or after `now` that is inside the window and under the cap."""
    history = list(sent)
    moment = as_utc(now)
    # Two rounds settle it: the cap only frees up later, the window opens daily.
    for _ in range(4):
        release = cap_release(history, moment, cap)
        if release is not None and release > moment:
            moment = release
        opened = next_opening(moment, window, zone)
        if opened == moment and cap_release(history, moment, cap) is None:
            return moment
        moment = opened
    return moment
