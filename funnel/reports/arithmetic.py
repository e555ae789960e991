"""The report's arithmetic: percentages, ratios, medians from histograms, and how many leads
reached a stage.

Shares and ratios are computed in Decimal and rounded half up (34.495 → 34.5, 0.125 →
0.13): binary floats and Python's round() (halves to even) would publish 0.12, and a view
rounding the published figure again would say 34% where the owner's calculator says 35%."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal

from funnel.reports.figures import StageRow

Number = Decimal | float | int
CENT = Decimal("0.01")


def exact(value: Number) -> Decimal:
    """A figure as the decimal it is written as (a float through its shortest repr)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def percent(part: Number, whole: Number) -> float | None:
    """part of whole in percent (two decimals, halves up); None when whole is zero."""
    if not whole:
        return None
    share = exact(part) * 100 / exact(whole)
    return float(share.quantize(CENT, rounding=ROUND_HALF_UP))


def ratio(part: Number, whole: Number) -> float | None:
    """part / whole to two decimals, halves up; None when whole is zero."""
    if not whole:
        return None
    return float((exact(part) / exact(whole)).quantize(CENT, rounding=ROUND_HALF_UP))


def median_from_histogram(
    buckets: Iterable[tuple[float, int, float]],
) -> tuple[float | None, float | None, int]:
    """(median, mean, count) of values given as (bucket, count, sum of values) rows.

    A bucket stands for the mean of its values, so a bucket of equal values is exact.
    """
    ordered = sorted((b for b in buckets if b[1] > 0), key=lambda b: b[0])
    total = sum(count for _, count, _ in ordered)
    if not total:
        return None, None, 0
    mean = round(sum(s for _, _, s in ordered) / total, 1)

    def value_at(index: int) -> float:
        seen = 0
        for _, count, values in ordered:
            seen += count
            if index < seen:
                return values / count
        raise AssertionError("index beyond the histogram")  # pragma: no cover

    middle = total // 2
    median = value_at(middle) if total % 2 else (value_at(middle - 1) + value_at(middle)) / 2
    return round(median, 1), mean, total


def leads_reached(stages: Sequence[StageRow], stage_id: str) -> int:
    """Leads that reached `stage_id`; the last stage's when the funnel has no such stage."""
    row = next((s for s in stages if s.id == stage_id), None)
    if row is None:  # a script without that role in the funnel: the last stage buys
        row = stages[-1] if stages else None
    return row.reached if row else 0
