"""The A/B report as data (`/ab`, `python -m bot ab`): per experiment and variant, the leads
exposed and how many of them reached the goal stage, booking and customer after their
exposure (the stage log), with intervals, the sequential verdict and the sample-ratio check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, case, exists, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from funnel.core.models import Exposure, Lead, StageEvent
from funnel.experiments import stats
from funnel.script.schema import Experiment, Script


@dataclass(frozen=True)
class Rate:
    conversions: int
    exposed: int

    @property
    def value(self) -> float | None:
        return self.conversions / self.exposed if self.exposed else None

    @property
    def interval(self) -> stats.Interval:
        return stats.wilson(self.conversions, self.exposed)


@dataclass
class VariantRow:
    id: str
    weight: float
    exposed: int = 0
    metric: Rate = Rate(0, 0)
    booked: Rate = Rate(0, 0)
    customer: Rate = Rate(0, 0)
    # Against the control (the first variant); None for the control itself.
    comparison: stats.Comparison | None = None
    in_script: bool = True


Status = Literal["stopped", "winner", "control_wins", "no_difference", "not_enough_data"]


@dataclass
class ExperimentReport:
    id: str
    title: str
    target: str
    metric: str | None  # the goal stage; None: the stage after the one at exposure
    min_effect: float
    variants: list[VariantRow]
    status: Status = "not_enough_data"
    leader: str | None = None  # the better variant (status winner/control_wins) or the winner
    leads_needed: int = 0  # per variant, in all (status not_enough_data)
    more_needed: int = 0  # per variant, still to come
    sample_ratio: stats.SampleRatio = field(default_factory=lambda: stats.SampleRatio(1.0, False))
    in_script: bool = True

    @property
    def exposed(self) -> int:
        return sum(v.exposed for v in self.variants)


@dataclass
class AbReport:
    now: datetime
    experiments: list[ExperimentReport] = field(default_factory=list)

    def find(self, experiment_id: str) -> ExperimentReport | None:
        return next((e for e in self.experiments if e.id == experiment_id), None)

    def to_json(self) -> dict[str, Any]:
        """Plain data for `python -m bot ab --json`: rates as fractions, intervals as pairs."""
        return {
            "as_of": self.now.isoformat(),
            "experiments": [_experiment_json(e) for e in self.experiments],
        }


def _rate_json(rate: Rate) -> dict[str, Any]:
    interval = rate.interval
    return {
        "conversions": rate.conversions,
        "rate": rate.value,
        "ci95": [interval.low, interval.high] if rate.exposed else None,
    }


def _experiment_json(e: ExperimentReport) -> dict[str, Any]:
    variants = []
    for row in e.variants:
        item: dict[str, Any] = {
            "id": row.id,
            "weight": row.weight,
            "in_script": row.in_script,
            "exposed": row.exposed,
            "metric": _rate_json(row.metric),
            "booked": _rate_json(row.booked),
            "customer": _rate_json(row.customer),
        }
        if row.comparison is not None:
            c = row.comparison
            item["vs_control"] = {
                "difference": c.diff,
                "always_valid_ci95": [c.interval.low, c.interval.high],
                "always_valid_p": c.p_value,
                "verdict": c.verdict,
            }
        variants.append(item)
    return {
        "id": e.id,
        "title": e.title,
        "target": e.target,
        "metric": e.metric,
        "min_effect": e.min_effect,
        "in_script": e.in_script,
        "status": e.status,
        "leader": e.leader,
        "leads_needed_per_variant": e.leads_needed,
        "more_needed_per_variant": e.more_needed,
        "sample_ratio_p": e.sample_ratio.p_value,
        "sample_ratio_mismatch": e.sample_ratio.mismatch,
        "variants": variants,
    }


async def ab_report(
    session: AsyncSession, script: Script, now: datetime, only: str | None = None
) -> AbReport:
    """Every experiment of the script, and those removed from it that still have exposures
    (history stays); `only` narrows to one id."""
    report = AbReport(now)
    recorded = [
        row[0] for row in (await session.execute(select(Exposure.experiment).distinct())).all()
    ]
    wanted = [e.id for e in script.experiments] + sorted(
        set(recorded) - {e.id for e in script.experiments}
    )
    for experiment_id in wanted:
        if only is not None and experiment_id != only:
            continue
        experiment = script.experiment(experiment_id)
        report.experiments.append(await _one(session, script, experiment_id, experiment))
    return report


async def _one(
    session: AsyncSession, script: Script, experiment_id: str, experiment: Experiment | None
) -> ExperimentReport:
    order = script.funnel_order
    index = case(
        *((StageEvent.to_stage == stage, literal(n)) for n, stage in enumerate(order)),
        else_=literal(-1),
    )
    exposure_index = case(
        *((Exposure.stage == stage, literal(n)) for n, stage in enumerate(order)),
        else_=literal(-1),
    )
    # Per exposed lead: the furthest funnel stage its log shows entered since the exposure.
    furthest = (
        select(
            Exposure.variant.label("variant"),
            exposure_index.label("from_index"),
            func.coalesce(func.max(index), -1).label("reached"),
        )
        .select_from(Exposure)
        .join(
            StageEvent,
            and_(StageEvent.lead_id == Exposure.lead_id, StageEvent.at >= Exposure.at),
            isouter=True,
        )
        .where(
            Exposure.experiment == experiment_id,
            # Test runs (/test_funnel) are in no report.
            ~exists().where(Lead.id == Exposure.lead_id, Lead.is_test.is_(True)),
        )
        .group_by(Exposure.id, Exposure.variant, Exposure.stage)
        .subquery()
    )
    grouped = select(
        furthest.c.variant, furthest.c.from_index, furthest.c.reached, func.count()
    ).group_by(furthest.c.variant, furthest.c.from_index, furthest.c.reached)
    metric_index = order.index(experiment.metric) if experiment and experiment.metric else None
    booked_index = order.index(script.roles.booked) if script.roles.booked in order else None
    customer_index = order.index(script.roles.customer) if script.roles.customer in order else None

    counts: dict[str, list[int]] = {}  # variant → [exposed, metric, booked, customer]
    for variant, from_index, reached, n in (await session.execute(grouped)).all():
        row = counts.setdefault(variant, [0, 0, 0, 0])
        row[0] += n
        goal = metric_index if metric_index is not None else from_index + 1
        if reached >= goal and reached > -1:
            row[1] += n
        if booked_index is not None and reached >= booked_index:
            row[2] += n
        if customer_index is not None and reached >= customer_index:
            row[3] += n

    def row_of(variant_id: str, weight: float, in_script: bool) -> VariantRow:
        exposed, metric, booked, customer = counts.get(variant_id, [0, 0, 0, 0])
        return VariantRow(
            variant_id, weight, exposed, Rate(metric, exposed), Rate(booked, exposed),
            Rate(customer, exposed), in_script=in_script,
        )  # fmt: skip

    if experiment is None:
        rows = [row_of(v, 0.0, False) for v in sorted(counts)]
        return ExperimentReport(
            experiment_id, experiment_id, "", None, 0.05, rows, status="stopped",
            in_script=False,
        )  # fmt: skip
    rows = [row_of(v.id, v.weight, True) for v in experiment.variants]
    rows += [row_of(v, 0.0, False) for v in sorted(set(counts) - {v.id for v in rows})]
    result = ExperimentReport(
        experiment.id, experiment.title, experiment.target, experiment.metric,
        experiment.min_effect, rows,
    )  # fmt: skip
    _judge(result, experiment)
    return result


def _judge(result: ExperimentReport, experiment: Experiment) -> None:
    """The verdict: each variant against the control with the always-valid test (α split
    between the comparisons), the sample-ratio check, and how many leads are still needed."""
    live = [r for r in result.variants if r.in_script]
    result.sample_ratio = stats.sample_ratio([r.exposed for r in live], [r.weight for r in live])
    if experiment.winner is not None:
        result.status = "stopped"
        result.leader = experiment.winner
    control, others = live[0], live[1:]
    alpha = stats.ALPHA / max(1, len(others))
    for row in others:
        row.comparison = stats.compare(
            (control.metric.conversions, control.exposed),
            (row.metric.conversions, row.exposed),
            min_effect=experiment.min_effect,
            alpha=alpha,
        )
    if experiment.winner is not None:
        return
    verdicts = [row.comparison for row in others if row.comparison is not None]
    better = [r for r in others if r.comparison and r.comparison.verdict == "better"]
    if better:
        best = max(better, key=lambda r: r.metric.value or 0.0)
        result.status, result.leader = "winner", best.id
        return
    if verdicts and all(c.verdict == "worse" for c in verdicts):
        result.status, result.leader = "control_wins", control.id
        return
    if verdicts and all(c.verdict in ("same", "worse") for c in verdicts):
        result.status = "no_difference"
        return
    result.status = "not_enough_data"
    result.leads_needed = stats.leads_needed(
        _base_rate(live), experiment.min_effect, variants=len(live)
    )
    result.more_needed = max(0, result.leads_needed - min(r.exposed for r in live))


def _base_rate(rows: Sequence[VariantRow]) -> float:
    """The control's rate so far (Laplace-smoothed); a coin's before any lead is in."""
    control = rows[0]
    if control.exposed == 0:
        return 0.5
    return (control.metric.conversions + 1) / (control.exposed + 2)
