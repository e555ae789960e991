"""Who gets which variant: a hash of the experiment and the lead, never random(), so a lead
sees the same variant on every message, after a restart and on every instance; and who is in
a campaign's holdout, by the same kind of hash."""

from __future__ import annotations

import hashlib
from datetime import datetime

from funnel.core.models import Lead
from funnel.experiments import exposure
from funnel.script.schema import Campaign, Experiment, Script, Variant

# 2**64 buckets: far finer than any weight a marketer writes.
_SCALE = float(2**64)


def unit(*parts: str | int) -> float:
    """A number in [0, 1) fixed by `parts` (sha256), evenly spread over many leads."""
    key = ":".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / _SCALE


def assign(experiment: Experiment, lead_id: int) -> Variant:
    """The lead's variant: its hash falls into one variant's share of the total weight.

    The winner, once set, is everyone's variant. Changing the weights of a running test
    moves some leads to another variant; the report counts each lead in the variant it saw
    first (its exposure)."""
    if experiment.winner is not None:
        winner = experiment.variant(experiment.winner)
        if winner is not None:
            return winner
    point = unit("ab", experiment.id, lead_id) * sum(v.weight for v in experiment.variants)
    reached = 0.0
    for variant in experiment.variants:
        reached += variant.weight
        if point < reached:
            return variant
    return experiment.variants[-1]


def in_holdout(campaign: Campaign, lead_id: int) -> bool:
    """Whether the lead is in the campaign's holdout: planned, never sent (sticky per lead)."""
    return campaign.holdout > 0 and unit("holdout", campaign.id, lead_id) < campaign.holdout


def shown(
    script: Script, target: str, default: str, lead: Lead | None, now: datetime | None
) -> str:
    """The text `lead` sees for `target`: its variant's text (the script's own for a variant
    without one). The exposure is noted for the transaction that sends the message; without a
    lead or a time (nothing to record it with) the script's own text is shown, except that a
    winner is everyone's once set."""
    experiment = script.experiments_by_target.get(target)
    if experiment is None:
        return default
    if experiment.winner is not None:
        return assign(experiment, 0).text or default
    if lead is None or lead.id is None or now is None:
        return default
    variant = assign(experiment, lead.id)
    exposure.note(lead, experiment.id, variant.id, now)
    return variant.text or default


def shown_system_text(
    script: Script, template: str, lead: Lead | None, now: datetime | None
) -> str:
    """A system text (texts.<key>) by its template: the renderer gets the text, not the key."""
    experiment = script.experiments_by_system_text.get(template)
    if experiment is None:
        return template
    return shown(script, experiment.target, template, lead, now)
