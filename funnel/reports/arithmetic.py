"""The report's arithmetic: percentages, ratios, medians from histograms, and how many leads
reached a stage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from funnel.reports.figures import StageRow


def percent(part: float, whole: float) -> float | None:
    """part of whole in percent (0–100, two decimals); None when whole is zero."""
    if not whole:
        return None
    return round(100.0 * part / whole, 2)


def ratio(part: float, whole: float) -> float | None:
    return round(part / whole, 2) if whole else None


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
